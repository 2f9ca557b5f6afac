"""How far does a tiny base model's held-out score move when its training is perturbed the
way another machine perturbs it? Trains the task's teacher or student once per perturbation
(``opdbench.models.robustness``: none, avx2, init_noise, sft_seed), each in a fresh interpreter,
evaluates it with the workflow's evaluation seeds, and prints one row per perturbation: the
weights' sha256 and Avg@N per benchmark (mean over evaluation seeds), then the spread.

It needs the task's data and tokenizer, built by the workflow, e.g.
`snakemake --cores all results/tiny/models/code/tokenizer results/tiny/data/code/manifest.json`.

    python benchmarks/base_model_robustness.py --task code --role teacher
    python benchmarks/base_model_robustness.py --task math --role student --perturbations none avx2 --eval-seeds 0 1 2
    python benchmarks/base_model_robustness.py --task code --role student --experiment r1 --configfile overlay.yaml
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdbench.config import deep_update, load_yaml  # noqa: E402
from opdbench.models.robustness import PERTURBATIONS, probe, spread  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--role", required=True, choices=["teacher", "student"])
    p.add_argument("--perturbations", nargs="+", default=list(PERTURBATIONS), choices=list(PERTURBATIONS))
    p.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--configfile", action="append", default=[], help="overlays on config/config.yaml")
    p.add_argument("--experiment", default=None, help="results/<experiment>/ holds the data and tokenizer "
                   "(default: the config's experiment)")
    p.add_argument("--label", default="", help="suffix of the output folders (e.g. a recipe name)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    config = load_yaml(REPO / "config" / "config.yaml")
    for extra in args.configfile:
        config = deep_update(config, load_yaml(extra))
    results = REPO / "results" / (args.experiment or config["experiment"])
    data, tokenizer = results / "data" / args.task, results / "models" / args.task / "tokenizer"
    if not (data / "manifest.json").exists() or not tokenizer.is_dir():
        sys.exit(f"build the data and tokenizer first: snakemake --cores all {data / 'manifest.json'} {tokenizer}")
    rows = []
    for name in args.perturbations:
        out = results / "probes" / "robustness" / f"{args.task}_{args.role}_{name}{args.label}"
        rows.append(probe(config, args.task, args.role, name, data, tokenizer, out, args.eval_seeds,
                          threads=args.threads))
    benches = list(rows[0]["scores"])
    print(f"{args.task} {args.role}: Avg@N, mean over evaluation seeds {args.eval_seeds}")
    print(f"{'perturbation':<12} {'weights':<12} " + " ".join(f"{b:>10}" for b in benches))
    for row in rows:
        print(f"{row['perturbation']:<12} {row['weights'][:12]:<12} "
              + " ".join(f"{row['scores'][b]:>10.1f}" for b in benches)
              + "   sampling SE: " + ", ".join(f"{row['se'][b]:.1f}" for b in benches))
    if len(rows) > 1:
        print("spread (max - min): " + ", ".join(f"{b} {v:.1f}" for b, v in spread(rows).items()))
    # Two equally good models differ by about sqrt(2) SE from the evaluation's sampling alone.
    print("sampling noise of a difference (sqrt(2) x mean SE): " + ", ".join(
        f"{b} {2 ** 0.5 * sum(r['se'][b] for r in rows) / len(rows):.1f}" for b in benches))


if __name__ == "__main__":
    main()
