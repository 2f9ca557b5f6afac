"""The leaderboard: per task, rows = base student, teacher, each method (or variant);
columns = each benchmark's Avg@N and Pass@N as mean +- std over seeds, and each row's
change in Avg@N against the base student. Methods are ranked by their mean Avg@N over
the task's benchmarks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from opdbench.atomic import atomic_path, atomic_write_text
from opdbench.provenance import stamp, write_json
from opdbench.report.cost import train_cost_by_model

REFERENCE_LABELS = {"student": "base student", "teacher": "teacher"}


def collect(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (task, model, seed, benchmark) with every metric as a column."""
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text())
        for bench, values in m["benchmarks"].items():
            rows.append({"task": m["task"], "model": m["model"], "kind": m["kind"], "seed": m["seed"],
                         "benchmark": bench, "config_hash": m.get("model_config_hash"),
                         "code_version": m["code_version"], "dataset_hash": m["dataset_hash"], **values})
    return pd.DataFrame(rows)


def paired_delta(df: pd.DataFrame, n: int) -> pd.Series:
    """Each row's Avg@n minus the base student's on the same task, benchmark and seed (the
    two share the evaluation's sampling seed, so the pairing removes shared noise)."""
    avg = f"avg@{n}"
    base = df[df.model == "student"].set_index(["task", "benchmark", "seed"])[avg]
    keys = pd.MultiIndex.from_frame(df[["task", "benchmark", "seed"]])
    return df[avg] - base.reindex(keys).to_numpy()


def summarize(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for one seed) and seed count per (task, model, benchmark)."""
    df = df.assign(delta_avg=paired_delta(df, n))
    metrics = [f"avg@{n}", "pass@1", f"pass@{n}", f"maj@{n}", "mean_tokens", "delta_avg"]
    g = df.groupby(["task", "model", "kind", "benchmark"])[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("seeds"))
    return out.reset_index()


def _fmt(mean: float, std: float, scale: float = 100.0, signed: bool = False) -> str:
    value = f"{mean * scale:+.1f}" if signed else f"{mean * scale:.1f}"
    return value if pd.isna(std) else f"{value} ± {std * scale:.1f}"


DEVICE_HOURS = {"gpu": "GPU-h", "cpu": "core-h", "mixed": "device-h (seeds on GPUs and CPUs)"}


def _cost(hours: float, device: str) -> str:
    return "" if pd.isna(hours) else f"{hours:.3g} {DEVICE_HOURS[device]}"


def render_task(summary: pd.DataFrame, task: str, n: int) -> str:
    s = summary[summary.task == task]
    benches = list(dict.fromkeys(s.benchmark))
    avg = f"avg@{n}"
    wide = s.pivot(index="model", columns="benchmark")
    base = "student" in wide.index
    methods = [m for m in wide.index if m not in REFERENCE_LABELS]
    score = {m: sum(wide.loc[m, (f"{avg}_mean", b)] for b in benches) / len(benches) for m in methods}
    ranked = sorted(methods, key=lambda m: -score[m])
    order = [m for m in REFERENCE_LABELS if m in wide.index] + ranked
    header = ["rank", "model", "seeds", "train cost"]
    for b in benches:
        header += [f"{b} Avg@{n}", f"{b} Pass@{n}", f"{b} Δ Avg@{n}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in order:
        row = wide.loc[model]
        rank = str(ranked.index(model) + 1) if model in ranked else ""
        cells = [rank, REFERENCE_LABELS.get(model, model), str(int(row[("seeds", benches[0])])),
                 _cost(row[("train_device_hours", benches[0])], row[("train_device", benches[0])])]
        for b in benches:
            cells.append(_fmt(row[(f"{avg}_mean", b)], row[(f"{avg}_std", b)]))
            cells.append(_fmt(row[(f"pass@{n}_mean", b)], row[(f"pass@{n}_std", b)]))
            if not base or model == "student" or pd.isna(row[("delta_avg_mean", b)]):
                cells.append("")
            else:
                cells.append(_fmt(row[("delta_avg_mean", b)], row[("delta_avg_std", b)], signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        n = ev["n_samples"]
        summary = summarize(df[df.task == task], n).merge(costs, on=["task", "model"], how="left")
        summaries.append(summary)
        parts += [f"## {task}", "",
                  f"N = {n} samples per problem; temperature {ev['temperature']}, top-p {ev['top_p']}, "
                  f"max {ev['max_new_tokens']} new tokens.", "", render_task(summary, task, n), ""]
    with atomic_path(csv_path) as tmp:
        pd.concat(summaries, ignore_index=True).to_csv(tmp, index=False, float_format="%.6f")
    versions = sorted(set(df.code_version))
    parts += [f"Code version(s): {', '.join(versions)}. Dataset hash(es): {', '.join(sorted(set(df.dataset_hash)))}.",
              "Per-run provenance (resolved config, its hash and diff from the base settings): "
              "`train/<task>/<method>/seed<k>/run.json`.", ""]
    atomic_write_text(md_path, "\n".join(parts))
    write_json(Path(md_path).with_suffix(".provenance.json"),
               stamp(inputs=sorted(map(str, metrics_files)), evaluation=decoding, base=config["base"]))
