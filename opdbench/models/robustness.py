"""How far does a tiny base model's held-out score move when its training is perturbed the
way another machine perturbs it? (docs/reproducibility.md)

On one machine and one lock the tiny DAG is bit for bit deterministic; another machine of
the same kind differs from it in the last bits of some kernels, and SFT amplifies such
differences until the weights have nothing in common. A recipe is reproducible across
machines when its held-out score does not care: this module retrains a base model (the
workflow's own ``build_model``) under each perturbation, each in a fresh interpreter so
that kernel variables apply from torch's import on, and evaluates it as the leaderboard
does (the task's evaluation settings, seed k sampled with ``evaluation.seed + k``).

Perturbations:
  none        the reference: this machine's kernels (the workflow's weights, bit for bit)
  avx2        the kernels of a machine without AVX-512 (ATEN_CPU_CAPABILITY=avx2 for torch,
              MKL_ENABLE_INSTRUCTIONS=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2 for MKL and oneDNN)
  init_noise  a relative noise of 1e-6 on the initial weights (seeded)
  sft_seed    the SFT seed + 1 (initial weights, batch order and writer: a coarse upper bound)
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError

PERTURBATIONS: dict[str, dict[str, str]] = {
    "none": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "init_noise": {},
    "sft_seed": {},
}
INIT_NOISE = 1e-6
# The stated tolerance: a base model's held-out Avg@N (mean over the evaluation seeds) on
# another machine of the same kind and lock, in points (README, docs/reproducibility.md).
TOLERANCE_POINTS = 2.0


def perturbed_config(config: dict[str, Any], task: str, role: str, perturbation: str) -> dict[str, Any]:
    """The config a perturbation trains with (only sft_seed changes it)."""
    config = copy.deepcopy(config)
    config["tiny_models"] = "train"  # the probe is of training, never of the shipped weights
    if "by_domain" in config["task_settings"][task][role]:
        raise ConfigError(f"the robustness probe retrains one tiny model; task_settings.{task}.{role} has one per "
                          f"domain (by_domain)")
    if perturbation == "sft_seed":
        sft = config["task_settings"][task][role]["sft"]
        sft["seed"] = sft.get("seed", 0) + 1
    return config


def _train_and_evaluate(job: dict[str, Any]) -> None:
    """In the fresh interpreter: train the perturbed model, evaluate it once per seed as the
    workflow's evaluate rule does (samples and metrics per seed)."""
    import torch

    from opdbench import pipeline

    task, role, out = job["task"], job["role"], Path(job["out"])
    config = perturbed_config(job["config"], task, role, job["perturbation"])
    if job["perturbation"] == "init_noise":
        build = pipeline.build_tiny_model

        def noisy(arch, tokenizer, seed):
            model = build(arch, tokenizer, seed)
            gen = torch.Generator().manual_seed(12345)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + INIT_NOISE * torch.randn(p.shape, generator=gen))
            return model

        pipeline.build_tiny_model = noisy
    pipeline.build_model(config, task, role, job["data"], job["tokenizer"], out / "model", threads=job["threads"])
    for seed in job["eval_seeds"]:
        pipeline.evaluate(config, task, out / "model", job["data"], out / f"samples_seed{seed}.jsonl",
                          out / f"eval_seed{seed}.json", {"model": role, "seed": seed, "kind": "probe"},
                          threads=job["threads"], benchmarks=job["benchmarks"])


def probe(config: dict[str, Any], task: str, role: str, perturbation: str, data: str | Path,
          tokenizer: str | Path, out: str | Path, eval_seeds: list[int], benchmarks: list[str] | None = None,
          threads: int = 1) -> dict[str, Any]:
    """Train and evaluate one perturbation (reused when ``out`` has its last evaluation);
    returns {"perturbation", "weights" (sha256), "scores": {benchmark: mean Avg@N in %}}."""
    from opdbench.provenance import write_json
    from opdbench.data.resources import sha256_of
    from opdbench.evaluate.metrics import evaluated_samples

    out = Path(out)
    if not (out / f"eval_seed{eval_seeds[-1]}.json").exists():
        job = {"config": config, "task": task, "role": role, "perturbation": perturbation, "out": str(out),
               "data": str(data), "tokenizer": str(tokenizer), "eval_seeds": eval_seeds,
               "benchmarks": benchmarks, "threads": threads}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "job.json", job)
        repo = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **PERTURBATIONS[perturbation],
               "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "opdbench.models.robustness", str(out / "job.json")], env=env, check=True)
    scores: dict[str, list[float]] = {}
    for seed in eval_seeds:
        metrics = json.loads((out / f"eval_seed{seed}.json").read_text())
        for bench, values in metrics["benchmarks"].items():
            scores.setdefault(bench, []).append(100 * values[f"avg@{evaluated_samples(metrics, bench)}"])
    return {"perturbation": perturbation, "weights": sha256_of(out / "model" / "model.safetensors"),
            "scores": {b: sum(v) / len(v) for b, v in sorted(scores.items())},
            "se": sampling_se([out / f"samples_seed{seed}.jsonl" for seed in eval_seeds])}


def sampling_se(sample_files: list[str | Path]) -> dict[str, float]:
    """The evaluation's own noise: per benchmark, the standard error (points) of a model's
    Avg@N, mean over the given evaluations, that comes from sampling its answers. Per
    problem, p = its correct share over all m samples of all the files; the mean over m
    has variance p (1 - p) / (m - 1) (unbiased), and Avg@N averages P problems. Two models
    of equal skill differ by sqrt(se_a^2 + se_b^2) on average, whatever their weights."""
    counts: dict[str, dict[str, list[int]]] = {}
    for path in sample_files:
        for row in map(json.loads, Path(path).open()):
            c = counts.setdefault(row["benchmark"], {}).setdefault(str(row["id"]), [0, 0])
            c[0] += bool(row["correct"])
            c[1] += 1
    se = {}
    for bench, problems in sorted(counts.items()):
        var = sum((k / m) * (1 - k / m) / (m - 1) for k, m in problems.values() if m > 1)
        se[bench] = 100 * var ** 0.5 / len(problems)
    return se


def spread(rows: list[dict[str, Any]]) -> dict[str, float]:
    """max - min of each benchmark's score over the perturbations."""
    return {b: max(r["scores"][b] for r in rows) - min(r["scores"][b] for r in rows) for b in rows[0]["scores"]}


if __name__ == "__main__":
    _train_and_evaluate(json.loads(Path(sys.argv[1]).read_text()))
