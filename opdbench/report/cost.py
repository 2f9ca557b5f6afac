"""What an experiment cost: ``tables/cost.csv`` has one row per heavy job (each base model's
build, each training run, each evaluation) with its device-hours, wall time, peak memory,
generated tokens and sequences, then one total row per rule and one for the experiment.

Runs and evaluations record their cost themselves (``opdbench.compute.job_cost``: GPU-hours on
GPUs, core-hours on a CPU); a model build's or a quality gate's comes from Snakemake's benchmark
file of the job (its wall time, times its GPUs or threads; what a quality gate generates is not
counted). Peak memory (max RSS) is read from every job's benchmark
file where there is one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from opdbench.atomic import atomic_path
from opdbench.compute import job_cost

COLUMNS = ["rule", "task", "model", "seed", "device", "devices", "seconds", "device_hours", "max_rss_mb",
           "generated_tokens", "generated_sequences"]


def read_benchmark(path: str | Path) -> dict[str, float]:
    """Snakemake's benchmark file of one job: its wall seconds and peak RSS in MB."""
    table = pd.read_csv(path, sep="\t")
    return {"seconds": float(table["s"].iloc[0]), "max_rss_mb": float(pd.to_numeric(table["max_rss"]).iloc[0])}


def _benchmark_of(benchmarks: dict[str, dict[str, float]], rule: str, tag: str) -> dict[str, float]:
    return benchmarks.get(f"{rule}/{tag}", {})


def cost_rows(runs: Iterable[str | Path], evaluations: Iterable[str | Path], measured: Iterable[dict[str, Any]],
              benchmarks: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per job. ``measured``: the jobs that record no cost themselves (model builds,
    quality gates) as {rule, task, model, tag, gpus, threads}; ``benchmarks``: every job's
    benchmark file, keyed '<rule>/<tag>' as the rules name them."""
    rows = []
    for path in runs:
        record = json.loads(Path(path).read_text())
        run = record["run"]
        tag = f"{run['task']}_{run['run_name']}_seed{run['seed']}"
        rows.append({"rule": "train", "task": run["task"], "model": run["run_name"], "seed": run["seed"],
                     **record.get("cost", {}), "max_rss_mb": _benchmark_of(benchmarks, "train", tag).get("max_rss_mb")})
    for path in evaluations:
        record = json.loads(Path(path).read_text())
        model = f"base/{record['model']}" if record.get("kind") == "reference" else record["model"]
        tag = f"{record['task']}/{model}/seed{record['seed']}"
        rows.append({"rule": "evaluate", "task": record["task"], "model": model, "seed": record["seed"],
                     **record.get("cost", {}), "max_rss_mb": _benchmark_of(benchmarks, "evaluate", tag).get("max_rss_mb")})
    for job in measured:  # a job without a benchmark file (made before they existed) has no row
        seconds = benchmarks.get(f"{job['rule']}/{job['tag']}")
        if seconds is not None:
            rows.append({"rule": job["rule"], "task": job["task"], "model": job["model"], "seed": None,
                         **job_cost(seconds["seconds"], job["gpus"], job["threads"], 0, 0),
                         "max_rss_mb": seconds["max_rss_mb"], "generated_tokens": None, "generated_sequences": None})
    return pd.DataFrame(rows, columns=COLUMNS)


def with_totals(jobs: pd.DataFrame) -> pd.DataFrame:
    """The jobs, then a total row per (rule, device) and one per device for the experiment
    (GPU-hours and core-hours are not added together)."""
    sums = ["seconds", "device_hours", "generated_tokens", "generated_sequences"]
    per_rule = jobs.groupby(["rule", "device"], as_index=False)[sums].sum(min_count=1).assign(model="total")
    overall = jobs.groupby("device", as_index=False)[sums].sum(min_count=1).assign(rule="all", model="total")
    return pd.concat([jobs, per_rule, overall], ignore_index=True)[COLUMNS]


def write_cost_table(path: str | Path, jobs: pd.DataFrame) -> pd.DataFrame:
    table = with_totals(jobs)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def train_cost_by_model(runs: Iterable[str | Path]) -> pd.DataFrame:
    """Per (task, model): the mean device-hours and generated tokens of a training run (over seeds)
    and the device they were counted on; what the leaderboard's cost column shows."""
    rows = []
    for path in runs:
        record = json.loads(Path(path).read_text())
        cost = record.get("cost")  # absent in a run recorded before costs were
        if cost:
            rows.append({"task": record["run"]["task"], "model": record["run"]["run_name"],
                         "train_device": cost["device"], "train_device_hours": cost["device_hours"],
                         "train_generated_tokens": cost["generated_tokens"]})
    columns = ["task", "model", "train_device", "train_device_hours", "train_generated_tokens"]
    if not rows:
        return pd.DataFrame(columns=columns)
    g = pd.DataFrame(rows).groupby(["task", "model"])
    # one row per model: seeds trained on different devices are "mixed" (hours not comparable)
    device = g["train_device"].agg(lambda d: d.iloc[0] if d.nunique() == 1 else "mixed")
    means = g[["train_device_hours", "train_generated_tokens"]].mean()
    return means.join(device).reset_index()[columns]
