"""Evaluation: N samples per problem per benchmark, scored by the task's verifier.

Writes one jsonl row per (benchmark, problem, sample) and a metrics file with Avg@N,
Pass@k and Maj@N per benchmark (k in {1, N}: Pass@1 equals Avg@N in expectation), and
each benchmark's test-time scaling curve (REOPOLD Figures 6b and 7): Pass@K and Maj@K for
K = 1, 2, 4, ... N against the latency of K parallel samples, estimated as the expected
longest of K responses (in decoding steps) times the seconds per step measured for models
of its size (figures.read_scaling).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import time

import torch
from tqdm import tqdm

from opdbench.metrics import expected_max_at_k, problem_metrics, scaling_ks
from opdbench.models import load_model, load_tokenizer
from opdbench.rollout import encode_prompts, sample


def generate_and_score(model_ref: str | Path, task, problems: list[dict[str, Any]], cfg: dict[str, Any],
                       device: str = "cpu", desc: str = "eval") -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The scored samples, and the generation's wall seconds and decoding steps (each
    generate call decodes until its longest response ends)."""
    tokenizer = load_tokenizer(model_ref)
    model = load_model(model_ref, device=device)
    torch.manual_seed(cfg["seed"])
    n = cfg["n_samples"]
    prompts = encode_prompts(tokenizer, task, problems)
    # Whole prompts per generate call, so every sample of a problem shares its batch.
    per_call = max(1, cfg["batch_size"] // n)
    rows: list[dict[str, Any]] = []
    generation = {"seconds": 0.0, "decode_steps": 0, "parameters": sum(p.numel() for p in model.parameters())}
    for start in tqdm(range(0, len(problems), per_call), desc=desc, mininterval=5):
        chunk = problems[start:start + per_call]
        t0 = time.perf_counter()
        responses = sample(model, tokenizer, prompts[start:start + per_call], n, cfg["temperature"],
                           cfg["top_p"], cfg["max_new_tokens"], batch_size=len(chunk) * n)
        generation["seconds"] += time.perf_counter() - t0
        generation["decode_steps"] += max(map(len, responses), default=0)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        expanded = [p for p in chunk for _ in range(n)]
        for i, (problem, text, ids, score) in enumerate(zip(expanded, texts, responses,
                                                            task.score_many(texts, expanded))):
            rows.append({"benchmark": problem["benchmark"], "id": problem["id"], "sample": i % n,
                         "response": text, "answer": score.answer, "gold": problem.get("answer"),
                         "correct": score.correct, "tokens": len(ids),
                         "truncated": bool(ids) and ids[-1] != tokenizer.eos_token_id})
    generation["seconds_per_decode_step"] = generation["seconds"] / max(1, generation["decode_steps"])
    return rows, generation


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
        values = problem_metrics([r["correct"] for r in samples], [r["answer"] for r in samples], ks, task.same_answer)
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
