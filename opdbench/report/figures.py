"""Figures drawn from the runs: training curves per task (the quantities the papers plot:
the student's entropy, its reverse KL to the teacher, the credit's negative tail and the
update energy it carries) and each method's change against the base student."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from opdbench.atomic import atomic_path  # noqa: E402
from opdbench.train import metrics_schema  # noqa: E402

# (metric key in metrics.jsonl, panel title from its declaration): REOPOLD's Figures 2-4 and
# TrOPD's Figure 1 plot these against the training step.
CURVES = [(key, metrics_schema.title(key)) for key in
          ("entropy", "reverse_kl", "credit_p05", "energy_share_bottom5", "response_length", "grad_norm")]


def read_curves(metrics_files: Iterable[str | Path], keys: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (task, run, seed, step) from the runs' metrics.jsonl, with the metrics
    ``keys`` (default: the CURVES'; a key a step did not log is NaN); task, run and seed
    are read from the path train/<task>/<run>/seed<k>/metrics.jsonl."""
    keys = ["step", *(keys if keys is not None else (k for k, _ in CURVES))]
    frames = []
    for path in map(Path, metrics_files):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        frame = pd.DataFrame([{k: r.get(k) for k in keys} for r in rows], columns=keys)
        frames.append(frame.assign(task=path.parent.parent.parent.name, run=path.parent.parent.name,
                                   seed=int(path.parent.name.removeprefix("seed"))))
    return pd.concat(frames, ignore_index=True)


def plot_training_curves(metrics_files: Iterable[str | Path], out: str | Path, title: str) -> None:
    """A panel per quantity; a line per run (mean over seeds) with a band of +-1 std."""
    curves = read_curves(metrics_files)
    runs = sorted(curves.run.unique())
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, CURVES):
        for i, run in enumerate(runs):
            per_step = curves[curves.run == run].groupby("step")[key].agg(["mean", "std"]).fillna(0.0)
            color = f"C{i % 10}"
            ax.plot(per_step.index, per_step["mean"], color=color, label=run, linewidth=1.2)
            ax.fill_between(per_step.index, per_step["mean"] - per_step["std"], per_step["mean"] + per_step["std"],
                            color=color, alpha=0.15, linewidth=0)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_leaderboard_deltas(leaderboard_csv: str | Path, out: str | Path, title: str) -> None:
    """Per task, each method's change in Avg@N against the base student (paired by seed)
    on every benchmark, with +-1 std over seeds."""
    summary = pd.read_csv(leaderboard_csv)
    runs = summary[summary.kind == "method"]
    tasks = sorted(summary.task.unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 0.5 * runs.model.nunique() + 2.5),
                             constrained_layout=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        s = runs[runs.task == task]
        benches = list(dict.fromkeys(s.benchmark))
        models = sorted(s.model.unique(), key=lambda m: -s[s.model == m].delta_avg_mean.mean())
        height = 0.8 / len(benches)
        for j, bench in enumerate(benches):
            b = s[s.benchmark == bench].set_index("model").reindex(models)
            ys = [i + j * height for i in range(len(models))]
            ax.barh(ys, 100 * b.delta_avg_mean, height=height, xerr=100 * b.delta_avg_std.fillna(0.0),
                    color=f"C{j}", label=bench, capsize=2)
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(models))], models)
        ax.invert_yaxis()
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("Δ Avg@N against the base student (points)")
        ax.set_title(task)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def read_scaling(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (model, seed, benchmark, K) from the evaluations' metrics.json: Pass@K
    and Maj@K in %, and the latency of K parallel samples in seconds: the expected longest
    of K responses in decoding steps, times the seconds per step of a model of its size.
    That is the median over every evaluation of a model with as many parameters (the base
    student and each distilled student share one), so the latencies of same-size models
    differ by their responses' lengths, not by what else the machine ran at the time."""
    evals = [json.loads(Path(path).read_text()) for path in metrics_files]
    per_size = pd.DataFrame([m["generation"] for m in evals]).groupby("parameters").seconds_per_decode_step.median()
    rows = []
    for m in evals:
        per_step = per_size[m["generation"]["parameters"]]
        for bench, curve in m["test_time_scaling"].items():
            for k, p, maj, steps in zip(curve["k"], curve["pass"], curve["maj"], curve["decode_steps"]):
                rows.append({"task": m["task"], "model": m["model"], "kind": m["kind"], "seed": m["seed"],
                             "benchmark": bench, "k": k, "pass": 100 * p, "maj": 100 * maj,
                             "decode_steps": steps, "latency_s": steps * per_step})
    return pd.DataFrame(rows)


def summarize_scaling(scaling: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (model, benchmark, K)."""
    keys = ["task", "model", "kind", "benchmark", "k"]
    out = scaling.groupby(keys)[["pass", "maj", "decode_steps", "latency_s"]].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    return out.reset_index().assign(seeds=scaling.groupby(keys).seed.nunique().to_numpy())


def plot_test_time_scaling(summary: pd.DataFrame, out: str | Path, title: str) -> None:
    """Per benchmark, Pass@K and Maj@K against the latency of K parallel samples (REOPOLD
    Figures 6b and 7); a line per model through K = 1, 2, 4, ... N, mean over seeds."""
    benches = list(dict.fromkeys(summary.benchmark))
    models = sorted(summary.model.unique(), key=lambda m: (m != "teacher", m != "student", m))
    methods = [m for m in models if m not in ("teacher", "student")]
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    styles = {"teacher": dict(color="black", linestyle="--"), "student": dict(color="gray", linestyle=":"),
              **{m: dict(color=palette(i % palette.N)) for i, m in enumerate(methods)}}
    # Log latency where it spans a wide range (paper scale: long responses, K up to 64).
    wide = summary.latency_s_mean.max() > 4 * summary.latency_s_mean.min()
    fig, axes = plt.subplots(len(benches), 2, figsize=(11, 3.6 * len(benches)), constrained_layout=True,
                             squeeze=False)
    for row, bench in zip(axes, benches):
        for ax, (metric, name) in zip(row, (("pass", "Pass@K"), ("maj", "Maj@K"))):
            for model in models:
                s = summary[(summary.benchmark == bench) & (summary.model == model)].sort_values("k")
                ax.plot(s.latency_s_mean, s[f"{metric}_mean"], marker="o", markersize=3, linewidth=1.2,
                        label={"student": "base student"}.get(model, model), **styles[model])
            if wide:
                ax.set_xscale("log", base=2)
            ax.set_title(f"{bench}: {name}", fontsize=10)
            ax.set_xlabel("latency of K parallel samples (s)")
            ax.set_ylabel(f"{name} (%)")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(title)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
