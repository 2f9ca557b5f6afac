"""Which base model carries a difference between two leaderboards? Distils one method from
a mixed base pair (the student of one results directory, the teacher of another) with the
workflow's own resolved run, and prints Avg@N per benchmark and seed.

    # the student of run B with the teacher of run A, and the reverse:
    python benchmarks/mixed_base_pairs.py --student-from /tmp/b/results/tiny --teacher-from /tmp/a/results/tiny --out /tmp/mix/bS_aT
    python benchmarks/mixed_base_pairs.py --student-from /tmp/a/results/tiny --teacher-from /tmp/b/results/tiny --out /tmp/mix/aS_bT

The data come from --teacher-from (both runs must have the same data hash).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdbench import pipeline  # noqa: E402
from opdbench.evaluate.metrics import evaluated_samples  # noqa: E402
from opdbench.config import deep_update, load_yaml  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student-from", type=Path, required=True, help="results/<experiment>/ holding the student")
    p.add_argument("--teacher-from", type=Path, required=True, help="results/<experiment>/ holding the teacher and data")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--task", default="math")
    p.add_argument("--method", default="opd")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--configfile", action="append", default=[], help="overlays on config/config.yaml")
    args = p.parse_args()

    config = load_yaml(REPO / "config" / "config.yaml")
    for extra in args.configfile:
        config = deep_update(config, load_yaml(extra))
    data = args.teacher_from / "data" / args.task
    if pipeline.dataset_hash(data) != pipeline.dataset_hash(args.student_from / "data" / args.task):
        sys.exit("the two results directories were built from different data")
    student, teacher = args.student_from / "models" / args.task / "student", args.teacher_from / "models" / args.task / "teacher"
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        t0 = time.time()
        pipeline.train(config, args.task, args.method, seed, data, student, teacher, out, REPO / "methods")
        pipeline.evaluate(config, args.task, out / "model", data, out / "samples.jsonl", out / "metrics.json",
                          {"model": f"{args.method}_mixed", "seed": seed})
        metrics = json.loads((out / "metrics.json").read_text())
        scores = ", ".join(f"{b} Avg@{evaluated_samples(metrics, b)} {100 * v[f'avg@{evaluated_samples(metrics, b)}']:.1f}"
                           for b, v in metrics["benchmarks"].items())
        print(f"seed {seed}: {scores} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
