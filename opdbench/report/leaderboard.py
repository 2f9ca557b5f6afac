"""The leaderboard: per task, rows = base student, teacher, each method (or variant);
columns = each benchmark's Avg@N and Pass@N as mean +- std over seeds, and each row's
change in Avg@N against the base student. N is each benchmark's own (samples_per_problem
of its metrics; one per task unless a benchmark sets its n_samples). Methods are ranked
by their mean Avg@N over the task's benchmarks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from opdbench.atomic import atomic_path, atomic_write_text
from opdbench.evaluate.metrics import evaluated_samples
from opdbench.provenance import stamp, write_json
from opdbench.report.cost import train_cost_by_model

REFERENCE_LABELS = {"student": "base student", "teacher": "teacher"}


def collect(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (task, model, seed, benchmark) with every metric as a column, and the
    benchmark's N (``samples_per_problem``, from an older file's decoding settings)."""
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text())
        for bench, values in m["benchmarks"].items():
            rows.append({"task": m["task"], "model": m["model"], "kind": m["kind"], "seed": m["seed"],
                         "benchmark": bench, "config_hash": m.get("model_config_hash"),
                         "code_version": m["code_version"], "dataset_hash": m["dataset_hash"], **values,
                         "samples_per_problem": evaluated_samples(m, bench)})
    return pd.DataFrame(rows)


def samples_by_benchmark(df: pd.DataFrame) -> dict[str, int]:
    """Each benchmark of one task's rows -> the N it was evaluated with (one per benchmark)."""
    per = df.groupby("benchmark", sort=False).samples_per_problem.unique()
    mixed = {b: sorted(map(int, ns)) for b, ns in per.items() if len(ns) > 1}
    if mixed:
        raise ValueError(f"evaluations of one benchmark with different samples per problem {mixed}: "
                         "rerun the stale evaluations (their metrics.json) with the current config")
    return {b: int(ns[0]) for b, ns in per.items()}


def per_row(df: pd.DataFrame, columns: pd.Series) -> pd.Series:
    """Each row's value of the column ``columns`` names for it (e.g. the avg@N of its benchmark's N)."""
    out = pd.Series(float("nan"), index=df.index)
    for column in columns.unique():
        rows = columns == column
        out[rows] = df.loc[rows, column]
    return out


def paired_delta(df: pd.DataFrame) -> pd.Series:
    """Each row's Avg@N minus the base student's on the same task, benchmark and seed (the
    two share the evaluation's sampling seed, so the pairing removes shared noise)."""
    avg = per_row(df, "avg@" + df.samples_per_problem.astype(str))  # each row's Avg@N, its benchmark's N
    student = df.model == "student"
    keys = pd.MultiIndex.from_frame(df[["task", "benchmark", "seed"]])
    base = pd.Series(avg[student].to_numpy(), index=keys[student.to_numpy()])
    return avg - base.reindex(keys).to_numpy()


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for one seed) and seed count per (task, model, benchmark): the
    metrics of each N the benchmarks were evaluated with (a benchmark's others are NaN)."""
    df = df.assign(delta_avg=paired_delta(df))
    ns = dict.fromkeys(df.samples_per_problem)
    metrics = [*dict.fromkeys(k for n in ns for k in (f"avg@{n}", "pass@1", f"pass@{n}", f"maj@{n}")),
               "mean_tokens", "delta_avg"]
    g = df.groupby(["task", "model", "kind", "benchmark"])[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("seeds"))
    return out.reset_index()


def _fmt(mean: float, std: float, scale: float = 100.0, signed: bool = False) -> str:
    value = f"{mean * scale:+.1f}" if signed else f"{mean * scale:.1f}"
    return value if pd.isna(std) else f"{value} ± {std * scale:.1f}"


DEVICE_HOURS = {"gpu": "GPU-h", "cpu": "core-h", "mixed": "device-h (seeds on GPUs and CPUs)"}


def _cost(hours: float, device: str) -> str:
    return "" if pd.isna(hours) else f"{hours:.3g} {DEVICE_HOURS[device]}"


def render_task(summary: pd.DataFrame, task: str, ns: dict[str, int]) -> str:
    """``ns``: each benchmark's N."""
    s = summary[summary.task == task]
    benches = list(dict.fromkeys(s.benchmark))
    avg = {b: f"avg@{ns[b]}" for b in benches}
    wide = s.pivot(index="model", columns="benchmark")
    base = "student" in wide.index
    methods = [m for m in wide.index if m not in REFERENCE_LABELS]
    score = {m: sum(wide.loc[m, (f"{avg[b]}_mean", b)] for b in benches) / len(benches) for m in methods}
    ranked = sorted(methods, key=lambda m: -score[m])
    order = [m for m in REFERENCE_LABELS if m in wide.index] + ranked
    header = ["rank", "model", "seeds", "train cost"]
    for b in benches:
        header += [f"{b} Avg@{ns[b]}", f"{b} Pass@{ns[b]}", f"{b} Δ Avg@{ns[b]}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in order:
        row = wide.loc[model]
        rank = str(ranked.index(model) + 1) if model in ranked else ""
        cells = [rank, REFERENCE_LABELS.get(model, model), str(int(row[("seeds", benches[0])])),
                 _cost(row[("train_device_hours", benches[0])], row[("train_device", benches[0])])]
        for b in benches:
            cells.append(_fmt(row[(f"{avg[b]}_mean", b)], row[(f"{avg[b]}_std", b)]))
            cells.append(_fmt(row[(f"pass@{ns[b]}_mean", b)], row[(f"pass@{ns[b]}_std", b)]))
            if not base or model == "student" or pd.isna(row[("delta_avg_mean", b)]):
                cells.append("")
            else:
                cells.append(_fmt(row[("delta_avg_mean", b)], row[("delta_avg_std", b)], signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _samples_text(ns: dict[str, int]) -> str:
    """One N ("8"), or where the benchmarks' N differ, each with its benchmarks ("32 (aime24, amc23), 1 (math500)")."""
    by_n: dict[int, list[str]] = {}
    for bench, n in ns.items():
        by_n.setdefault(n, []).append(bench)
    if len(by_n) == 1:
        return str(next(iter(by_n)))
    return ", ".join(f"{n} ({', '.join(benches)})" for n, benches in by_n.items())


def write_leaderboard(metrics_files: Iterable[str | Path], md_path: str | Path, csv_path: str | Path,
                      config: dict[str, Any], runs: Iterable[str | Path] = ()) -> None:
    """``runs``: the training runs' run.json files, whose recorded cost fills the cost column."""
    from opdbench.config import evaluation_settings

    df = collect(metrics_files)
    costs = train_cost_by_model(runs)
    parts = [f"# OPD-Bench leaderboard: {config['experiment']} ({config['mode']} settings)", "",
             "Avg@N = mean correctness of N samples per problem; Pass@N = unbiased estimator; "
             "values in %, mean ± std over seeds (ddof 1). Δ = change in Avg@N against the base student, "
             "paired by seed (seed k of every model is evaluated with the same sampling seed). "
             "Methods ranked by mean Avg@N over the task's benchmarks. Train cost: device-hours of one "
             "training run, mean over seeds (GPU-hours, or core-hours on a CPU; tables/cost.csv has every job).", ""]
    summaries, decoding = [], {}
    for task in dict.fromkeys(df.task):
        ev = decoding[task] = evaluation_settings(config, task)
        ns = samples_by_benchmark(df[df.task == task])
        summary = summarize(df[df.task == task]).merge(costs, on=["task", "model"], how="left")
        summaries.append(summary)
        parts += [f"## {task}", "",
                  f"N = {_samples_text(ns)} samples per problem; temperature {ev['temperature']}, top-p {ev['top_p']}, "
                  f"max {ev['max_new_tokens']} new tokens.", "", render_task(summary, task, ns), ""]
    with atomic_path(csv_path) as tmp:
        pd.concat(summaries, ignore_index=True).to_csv(tmp, index=False, float_format="%.6f")
    versions = sorted(set(df.code_version))
    parts += [f"Code version(s): {', '.join(versions)}. Dataset hash(es): {', '.join(sorted(set(df.dataset_hash)))}.",
              "Per-run provenance (resolved config, its hash and diff from the base settings): "
              "`train/<task>/<method>/seed<k>/run.json`.", ""]
    atomic_write_text(md_path, "\n".join(parts))
    write_json(Path(md_path).with_suffix(".provenance.json"),
               stamp(inputs=sorted(map(str, metrics_files)), evaluation=decoding, base=config["base"]))
