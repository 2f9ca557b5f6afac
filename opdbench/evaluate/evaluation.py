"""Evaluation: N samples per problem per benchmark, scored by the task's verifier. N is the
task's ``evaluation.n_samples`` or a benchmark's own (``data.benchmarks.<name>.n_samples``,
e.g. Avg@32 on AIME beside Pass@1 on MATH-500): one generate call per distinct N.

Writes one jsonl row per (benchmark, problem, sample) and a metrics file with Avg@N,
Pass@k and Maj@N per benchmark (k in {1, N}: Pass@1 equals Avg@N in expectation), and
each benchmark's test-time scaling curve (REOPOLD Figures 6b and 7): Pass@K and Maj@K for
K = 1, 2, 4, ... N against the latency of K parallel samples, estimated as the expected
longest of K responses (in decoding steps) times the seconds per step measured for models
of its size (figures.read_scaling). The samples are drawn by the configured generation
backend (``evaluation.backend``: hf or vllm, opdbench/evaluate/generation.py).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opdbench.evaluate.generation import DEFAULT_BACKEND, SamplingSpec, generate
from opdbench.evaluate.metrics import expected_max_at_k, problem_metrics, samples_of, scaling_ks
from opdbench.models import load_tokenizer, teacher_refs
from opdbench.train.rollout import encode_prompts


def sampling_spec(cfg: dict[str, Any], tokenizer) -> SamplingSpec:
    """The evaluation's decoding settings, passed to either backend unchanged."""
    return SamplingSpec(n=cfg["n_samples"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                        max_tokens=cfg["max_new_tokens"], seed=cfg["seed"], stop_token_ids=(tokenizer.eos_token_id,),
                        dtype=cfg.get("dtype", SamplingSpec.dtype))


def generate_and_score(model_ref: str | Path, task, problems: list[dict[str, Any]], cfg: dict[str, Any],
                       device: str = "cpu", desc: str = "eval") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scored samples, and the generation's wall seconds, decoding steps (each
    generate call decodes until its longest response ends) and backend. The benchmarks
    that share one N (``samples_of``) are drawn by one generate call with that N (same
    seed and other settings); the rows keep the problems' order. A mixed task's teacher per
    domain (``models.teacher_refs``) answers its own domain's problems."""
    teachers = teacher_refs(model_ref)
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        model = teachers[p["domain"]] if teachers else str(model_ref)
        groups[(model, samples_of(cfg, p["benchmark"]))].append(i)
    tokenizers = {model: load_tokenizer(model) for model, _ in groups}
    drawn: list[list] = [[] for _ in problems]
    stats: dict[str, Any] = {}
    for (model, n), indices in groups.items():
        chosen, tokenizer = [problems[i] for i in indices], tokenizers[model]
        spec = sampling_spec(dict(cfg, n_samples=n), tokenizer)
        result = generate(model, encode_prompts(tokenizer, task, chosen), spec,
                          backend=cfg.get("backend", DEFAULT_BACKEND), batch_size=cfg["batch_size"], device=device,
                          keys=[f"{p['benchmark']}/{p['id']}" for p in chosen], tokenizer=tokenizer,
                          desc=desc if len(groups) == 1 else f"{desc} N={n}")
        for i, completions in zip(indices, result.completions):
            drawn[i] = completions
        stats = _add_stats(stats, result.stats)
    samples = [(problem, j, c) for problem, completions in zip(problems, drawn) for j, c in enumerate(completions)]
    scores = task.score_many([c.text for _, _, c in samples], [problem for problem, _, _ in samples])
    rows: list[dict[str, Any]] = []
    for (problem, j, c), score in zip(samples, scores):
        rows.append({"benchmark": problem["benchmark"], "id": problem["id"], "sample": j,
                     "response": c.text, "answer": score.answer, "gold": problem.get("answer"),
                     "correct": score.correct, "tokens": len(c.token_ids),
                     "truncated": c.finish_reason == "length",
                     **({"domain": problem["domain"]} if "domain" in problem else {})})  # a mixed task's
    return rows, stats


def _add_stats(total: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """The stats of two generate calls as one: seconds and decoding steps add up."""
    if not total:
        return stats
    seconds, steps = total["seconds"] + stats["seconds"], total["decode_steps"] + stats["decode_steps"]
    return {**total, "seconds": seconds, "decode_steps": steps, "seconds_per_decode_step": seconds / max(1, steps)}


def summarize(rows: list[dict[str, Any]], task, n: int | Callable[[str], int]
              ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list]]]:
    """Per benchmark, with its N (``n``: one for all, or a benchmark's N), means over problems:
    Avg@N, Pass@1, Pass@N, Maj@N and lengths; and the test-time scaling curve: Pass@K, Maj@K
    and the expected decoding steps of K parallel samples (the longest of K responses) for K
    in ``scaling_ks(N)``."""
    n_of = n if callable(n) else (lambda _: n)
    by_problem: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[(r["benchmark"], r["id"])].append(r)
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for (bench, _), samples in by_problem.items():
        ks = scaling_ks(n_of(bench))
        samples.sort(key=lambda r: r["sample"])
        values = problem_metrics([r["correct"] for r in samples], [r["answer"] for r in samples], ks,
                                 task.for_problem(samples[0]).same_answer)
        tokens = [r["tokens"] for r in samples]
        values |= {f"decode_steps@{k}": expected_max_at_k(tokens, k) for k in ks}
        values |= {"mean_tokens": sum(tokens) / len(samples),
                   "truncated": sum(r["truncated"] for r in samples) / len(samples)}
        for key, value in values.items():
            sums[bench][key] += value
        counts[bench] += 1
    means = {b: {key: v / counts[b] for key, v in s.items()} for b, s in sums.items()}
    benchmarks, curves = {}, {}
    for b, m in means.items():
        nb, ks = n_of(b), scaling_ks(n_of(b))
        kept = (f"avg@{nb}", "pass@1", f"pass@{nb}", f"maj@{nb}", "mean_tokens", "truncated")
        benchmarks[b] = {key: m[key] for key in kept} | {"problems": counts[b], "samples_per_problem": nb}
        curves[b] = {"k": ks, **{name: [m[f"{name}@{k}"] for k in ks] for name in ("pass", "maj", "decode_steps")}}
    return benchmarks, curves
