"""Evaluation: N samples per problem per benchmark, scored by the task's verifier.

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
from pathlib import Path
from typing import Any

from opdbench.evaluate.generation import DEFAULT_BACKEND, SamplingSpec, generate
from opdbench.evaluate.metrics import expected_max_at_k, problem_metrics, scaling_ks
from opdbench.models import load_tokenizer
from opdbench.train.rollout import encode_prompts


def sampling_spec(cfg: dict[str, Any], tokenizer) -> SamplingSpec:
    """The evaluation's decoding settings, passed to either backend unchanged."""
    return SamplingSpec(n=cfg["n_samples"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                        max_tokens=cfg["max_new_tokens"], seed=cfg["seed"], stop_token_ids=(tokenizer.eos_token_id,),
                        dtype=cfg.get("dtype", SamplingSpec.dtype))


def generate_and_score(model_ref: str | Path, task, problems: list[dict[str, Any]], cfg: dict[str, Any],
                       device: str = "cpu", desc: str = "eval") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scored samples, and the generation's wall seconds, decoding steps (each
    generate call decodes until its longest response ends) and backend."""
    tokenizer = load_tokenizer(model_ref)
    n = cfg["n_samples"]
    result = generate(model_ref, encode_prompts(tokenizer, task, problems), sampling_spec(cfg, tokenizer),
                      backend=cfg.get("backend", DEFAULT_BACKEND), batch_size=cfg["batch_size"], device=device,
                      keys=[f"{p['benchmark']}/{p['id']}" for p in problems], tokenizer=tokenizer, desc=desc)
    expanded = [p for p in problems for _ in range(n)]
    flat = [c for completions in result.completions for c in completions]
    rows: list[dict[str, Any]] = []
    for i, (problem, c, score) in enumerate(zip(expanded, flat, task.score_many([c.text for c in flat], expanded))):
        rows.append({"benchmark": problem["benchmark"], "id": problem["id"], "sample": i % n,
                     "response": c.text, "answer": score.answer, "gold": problem.get("answer"),
                     "correct": score.correct, "tokens": len(c.token_ids),
                     "truncated": c.finish_reason == "length",
                     **({"domain": problem["domain"]} if "domain" in problem else {})})  # a mixed task's
    return rows, result.stats


def summarize(rows: list[dict[str, Any]], task, n: int) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list]]]:
    """Per benchmark, means over problems: Avg@n, Pass@1, Pass@n, Maj@n and lengths; and
    the test-time scaling curve: Pass@K, Maj@K and the expected decoding steps of K
    parallel samples (the longest of K responses) for K in ``scaling_ks(n)``."""
    by_problem: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[(r["benchmark"], r["id"])].append(r)
    ks = scaling_ks(n)
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for (bench, _), samples in by_problem.items():
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
    kept = (f"avg@{n}", "pass@1", f"pass@{n}", f"maj@{n}", "mean_tokens", "truncated")
    benchmarks = {b: {key: m[key] for key in kept} | {"problems": counts[b], "samples_per_problem": n}
                  for b, m in means.items()}
    curves = {b: {"k": ks, **{name: [m[f"{name}@{k}"] for k in ks] for name in ("pass", "maj", "decode_steps")}}
              for b, m in means.items()}
    return benchmarks, curves
