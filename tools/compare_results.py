"""Two tiny leaderboards disagree: where do they part? Compares two results directories
(results/<experiment>/ of two runs, e.g. two machines) stage by stage, as the DAG runs:

  data        sha256 of each task's train and eval files
  tokenizer   sha256 of tokenizer.json
  models      weights sha256 of the base teacher and student, and the machine that trained
              them (CPU, torch's kernel level, BLAS/oneDNN)
  base evals  Avg@N per benchmark and seed, the mean over seeds with the sampling noise of
              the difference (opdbench.models.robustness.sampling_se); per sample, the share of
              verdicts that agree; how the answers were checked (code: runner path, endings)
  leaderboard every Avg@N and delta cell side by side, the largest differences first; then the
              two checks of docs/reproducibility.md: every base-model cell (teacher, base student)
              within TOLERANCE_POINTS, every method's delta within its seed std (the larger of the
              two runs' std over seeds)

    python tools/compare_results.py /tmp/a/results/tiny /tmp/b/results/tiny
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opdbench.data.resources import sha256_of  # noqa: E402
from opdbench.evaluate.metrics import evaluated_samples  # noqa: E402
from opdbench.models.robustness import TOLERANCE_POINTS, sampling_se  # noqa: E402


def sha(path: Path) -> str:
    return sha256_of(path)[:12] if path.exists() else "(missing)"


def row(label: str, a, b=None) -> str:
    """One line: the label, A's value, B's (none for a comparison of the two), a mark where they differ."""
    mark = "" if b is None or a == b else "   <-- differs"
    return f"  {label:<34} {str(a):<26} {'' if b is None else str(b):<26}{mark}"


def samples(path: Path) -> dict[tuple, bool]:
    if not path.exists():
        return {}
    return {(r["benchmark"], r["id"], r["sample"]): r["correct"] for r in map(json.loads, path.open())}


def leaderboard(path: Path, std: bool = False) -> dict[tuple, float]:
    """(task, model, benchmark, Avg@N | delta) -> the mean over seeds in points (``std``: the std)."""
    cells = {}
    stat = "std" if std else "mean"
    for r in csv.DictReader(path.open()):
        n = next(k.split("@")[1].split("_")[0] for k in r if k.startswith("avg@") and r[k])
        cells[(r["task"], r["model"], r["benchmark"], f"Avg@{n}")] = 100 * float(r[f"avg@{n}_{stat}"] or 0)
        if r.get("delta_avg_mean"):
            cells[(r["task"], r["model"], r["benchmark"], "delta")] = 100 * float(r[f"delta_avg_{stat}"] or 0)
    return cells


def reproducibility_checks(a: Path, b: Path) -> None:
    """Base-model cells within the tolerance; each method's delta within its seed std."""
    la, lb = leaderboard(a / "leaderboard.csv"), leaderboard(b / "leaderboard.csv")
    sa, sb = leaderboard(a / "leaderboard.csv", std=True), leaderboard(b / "leaderboard.csv", std=True)
    kinds = {(r["task"], r["model"]): r["kind"] for r in csv.DictReader((a / "leaderboard.csv").open())}
    base = [(abs(la[k] - lb[k]), k) for k in la.keys() & lb.keys()
            if kinds.get(k[:2]) != "method" and k[3] != "delta"]
    worst = max(base)
    print(f"\n[checks] base-model cells: largest difference {worst[0]:.1f} points ({' '.join(worst[1])}); "
          f"{sum(d <= TOLERANCE_POINTS for d, _ in base)} of {len(base)} within {TOLERANCE_POINTS:g}")
    deltas = [k for k in la.keys() & lb.keys() if k[3] == "delta" and kinds.get(k[:2]) == "method"]
    outside = sorted((abs(la[k] - lb[k]) / max(sa[k], sb[k], 1e-9), k) for k in deltas
                     if abs(la[k] - lb[k]) > max(sa[k], sb[k]))
    print(f"[checks] method deltas: {len(deltas) - len(outside)} of {len(deltas)} within their seed std")
    for ratio, k in outside[::-1]:
        print(row(" ".join(k), f"{la[k]:+.1f} ± {sa[k]:.1f}", f"{lb[k]:+.1f} ± {sb[k]:.1f}")
              + f"  (difference {abs(la[k] - lb[k]):.1f} = {ratio:.1f} std)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--top", type=int, default=12, help="leaderboard cells shown (largest differences)")
    args = p.parse_args()
    a, b = args.a, args.b
    tasks = sorted(d.name for d in (a / "data").iterdir() if d.is_dir())
    print(f"A = {a}\nB = {b}\n{'':<36} {'A':<26} {'B':<26}")
    for task in tasks:
        print(f"\n[{task}]")
        for f in ("train.jsonl", "eval.jsonl"):
            print(row(f"data {f}", sha(a / "data" / task / f), sha(b / "data" / task / f)))
        tok = Path("models") / task / "tokenizer" / "tokenizer.json"
        print(row("tokenizer", sha(a / tok), sha(b / tok)))
        for role in ("teacher", "student"):
            model = Path("models") / task / role
            print(row(f"{role} weights", sha(a / model / "model.safetensors"), sha(b / model / "model.safetensors")))
            machines = []
            for root in (a, b):
                info = json.loads((root / model / "model.json").read_text())
                # a shipped model (assets/tiny_models/) was trained where it was shipped from
                installed = "from" in info.get("shipped", {})
                m = info["shipped"]["trained"]["machine"] if installed else info.get("machine", {})
                shipped = " (shipped)" if installed else ""
                machines.append(f"{m.get('cpu', '?')} {m.get('torch_cpu_capability', '?')}{shipped}")
            print(row(f"{role} trained on", *machines))
            seed_dirs = sorted((a / "eval" / task / "base" / role).glob("seed*"))
            means = []
            for seed_dir in seed_dirs:
                rel = seed_dir.relative_to(a)
                ma, mb = (json.loads((root / rel / "metrics.json").read_text()) for root in (a, b))
                for bench in sorted(ma["benchmarks"]):
                    n = evaluated_samples(ma, bench)
                    print(row(f"{role} {seed_dir.name} {bench} Avg@{n}", f"{100 * ma['benchmarks'][bench][f'avg@{n}']:.1f}",
                              f"{100 * mb['benchmarks'][bench][f'avg@{n}']:.1f}"))
                sa, sb = samples(a / rel / "samples.jsonl"), samples(b / rel / "samples.jsonl")
                common = sa.keys() & sb.keys()
                if common:
                    agree = sum(sa[k] == sb[k] for k in common) / len(common)
                    print(row(f"{role} {seed_dir.name} verdicts agreeing", f"{100 * agree:.1f} % of {len(common)} samples"))
                checks = [(m.get("scoring") or {}).get("checks") for m in (ma, mb)]
                if any(checks):
                    print(row(f"{role} {seed_dir.name} checks", *checks))
                means.append({bench: [100 * m["benchmarks"][bench][f"avg@{evaluated_samples(m, bench)}"] for m in (ma, mb)]
                              for bench in ma["benchmarks"]})
            if means:
                rels = [d.relative_to(a) / "samples.jsonl" for d in seed_dirs]
                se = [sampling_se([root / r for r in rels]) for root in (a, b)]
                for bench in sorted(means[0]):
                    ma_, mb_ = (sum(m[bench][i] for m in means) / len(means) for i in (0, 1))
                    noise = (se[0][bench] ** 2 + se[1][bench] ** 2) ** 0.5
                    print(row(f"{role} {bench} mean of {len(means)} seeds", f"{ma_:.1f}", f"{mb_:.1f}")
                          + f"  (difference {abs(ma_ - mb_):.1f}; sampling noise of it {noise:.1f})")
    la, lb = leaderboard(a / "leaderboard.csv"), leaderboard(b / "leaderboard.csv")
    diffs = sorted(((abs(la[k] - lb[k]), k) for k in la.keys() & lb.keys()), reverse=True)
    print(f"\n[leaderboard] {len(diffs)} cells in both; largest differences (points):")
    for d, k in diffs[:args.top]:
        print(row(" ".join(k), f"{la[k]:.1f}", f"{lb[k]:.1f}") + f"  ({d:.1f})")
    reproducibility_checks(a, b)


if __name__ == "__main__":
    main()
