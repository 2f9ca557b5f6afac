"""Evaluation: N samples per problem per benchmark, scored by the task's verifier.

Writes one jsonl row per (benchmark, problem, sample) and a metrics file with Avg@N,
Pass@k and Maj@N per benchmark (k in {1, N}: Pass@1 equals Avg@N in expectation).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from opdbench.metrics import pass_at_k, problem_metrics
from opdbench.models import load_model, load_tokenizer
from opdbench.rollout import encode_prompts, sample


def generate_and_score(model_ref: str | Path, task, problems: list[dict[str, Any]], cfg: dict[str, Any],
                       device: str = "cpu", desc: str = "eval") -> list[dict[str, Any]]:
    tokenizer = load_tokenizer(model_ref)
    model = load_model(model_ref, device=device)
    torch.manual_seed(cfg["seed"])
    n = cfg["n_samples"]
    prompts = encode_prompts(tokenizer, task, problems)
    # Whole prompts per generate call, so every sample of a problem shares its batch.
    per_call = max(1, cfg["batch_size"] // n)
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(problems), per_call), desc=desc, mininterval=5):
        chunk = problems[start:start + per_call]
        responses = sample(model, tokenizer, prompts[start:start + per_call], n, cfg["temperature"],
                           cfg["top_p"], cfg["max_new_tokens"], batch_size=len(chunk) * n)
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        expanded = [p for p in chunk for _ in range(n)]
        for i, (problem, text, ids, score) in enumerate(zip(expanded, texts, responses,
                                                            task.score_many(texts, expanded))):
            rows.append({"benchmark": problem["benchmark"], "id": problem["id"], "sample": i % n,
                         "response": text, "answer": score.answer, "gold": problem.get("answer"),
                         "correct": score.correct, "tokens": len(ids),
                         "truncated": bool(ids) and ids[-1] != tokenizer.eos_token_id})
    return rows


def summarize(rows: list[dict[str, Any]], task, n: int) -> dict[str, dict[str, float]]:
    """Per benchmark: mean over problems of Avg@n, Pass@1, Pass@n, Maj@n, and lengths."""
    by_problem: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[(r["benchmark"], r["id"])].append(r)
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for (bench, _), samples in by_problem.items():
        samples.sort(key=lambda r: r["sample"])
        correct = [r["correct"] for r in samples]
        answers = [r["answer"] for r in samples]
        for key, value in problem_metrics(correct, answers, n, task.same_answer).items():
            sums[bench][key] += value
        sums[bench]["pass@1"] += pass_at_k(len(correct), sum(correct), 1)
        sums[bench]["mean_tokens"] += sum(r["tokens"] for r in samples) / len(samples)
        sums[bench]["truncated"] += sum(r["truncated"] for r in samples) / len(samples)
        counts[bench] += 1
    return {b: {k: v / counts[b] for k, v in s.items()} | {"problems": counts[b], "samples_per_problem": n}
            for b, s in sums.items()}
