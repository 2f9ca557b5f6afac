"""How often does each model answer before it has finished the work? For the tiny math
task: the share of a benchmark's samples whose response has fewer lines of work
(``a op b = c.``) than the gold solution, and the accuracy of the rest. The tiny student
learns from an under-thinking writer (``task_settings.math.student.sft.writer``); this
shows whether distillation removed that habit, and what the completed answers are worth.

    python benchmarks/stopped_early.py                 # results/tiny, benchmark math_id
    python benchmarks/stopped_early.py --experiment probe_d20 --benchmark math_long
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdbench.tasks.base import read_jsonl  # noqa: E402
from opdbench.tasks.math import WORK_LINE  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="tiny")
    p.add_argument("--benchmark", default="math_id")
    p.add_argument("--results", type=Path, default=REPO / "results")
    args = p.parse_args()
    root = args.results / args.experiment
    gold = {r["id"]: len(WORK_LINE.findall(r["solution"]))
            for r in read_jsonl(root / "data" / "math" / "eval.jsonl") if r["benchmark"] == args.benchmark}
    files = sorted((root / "eval" / "math").glob("**/samples.jsonl"))
    if not files:
        sys.exit(f"no samples under {root / 'eval' / 'math'}: run the workflow first")
    rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # model -> per seed
    for f in files:
        samples = [s for s in read_jsonl(f) if s["benchmark"] == args.benchmark]
        early = [len(WORK_LINE.findall(s["response"])) < gold[s["id"]] for s in samples]
        done = [s["correct"] for s, e in zip(samples, early) if not e]
        model = str(f.parent.parent.relative_to(root / "eval" / "math"))
        rows[model].append((100 * sum(early) / len(samples), 100 * sum(done) / max(len(done), 1),
                            100 * sum(s["correct"] for s in samples) / len(samples)))
    print(f"{args.experiment} / {args.benchmark}: % of samples that stop before the gold solution's last line "
          "of work; accuracy of the samples that do not, and of all (mean over seeds)")
    print(f"{'model':<24} {'seeds':>5} {'stopped early':>14} {'acc. finished':>14} {'acc. all':>9}")
    for model, per_seed in sorted(rows.items()):
        means = [sum(v[i] for v in per_seed) / len(per_seed) for i in range(3)]
        print(f"{model:<24} {len(per_seed):>5} {means[0]:>14.1f} {means[1]:>14.1f} {means[2]:>9.1f}")


if __name__ == "__main__":
    main()
