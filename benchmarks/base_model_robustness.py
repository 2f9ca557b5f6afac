"""How far does a tiny base model's held-out score move when its training is perturbed the
way another machine perturbs it? Trains the task's teacher or student (the workflow's own
``build_model``) once per perturbation, each in a fresh interpreter, evaluates it with the
workflow's evaluation seeds, and prints one row per perturbation: the weights' sha256 and
Avg@N per benchmark (mean over evaluation seeds).

Perturbations (a machine of the same kind and lock differs from this one in the last bits):
  none        the reference: this machine's kernels
  avx2        the kernels of a machine without AVX-512 (ATEN_CPU_CAPABILITY=avx2 for torch,
              MKL_ENABLE_INSTRUCTIONS=AVX2 and ONEDNN_MAX_CPU_ISA=AVX2 for MKL and oneDNN)
  init_noise  a relative noise of 1e-6 on the initial weights (seeded)
  sft_seed    the SFT seed + 1 (initial weights and batch order: a coarse upper bound)

It needs the task's data and tokenizer, built by the workflow, e.g.
`snakemake --cores all results/tiny/models/code/tokenizer results/tiny/data/code/manifest.json`.

    python benchmarks/base_model_robustness.py --task code --role teacher
    python benchmarks/base_model_robustness.py --task math --role student --perturbations none avx2 --eval-seeds 0 1 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PERTURBATIONS = {
    "none": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "init_noise": {},
    "sft_seed": {},
}

# Runs in a fresh interpreter, so that the kernel variables apply from torch's import on.
CHILD = r"""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[1])
from opdbench import pipeline
from opdbench.config import deep_update, load_yaml

args = json.loads(sys.argv[2])
config = load_yaml(Path(sys.argv[1]) / "config" / "config.yaml")
for extra in args["configfiles"]:
    config = deep_update(config, load_yaml(extra))
spec = config["task_settings"][args["task"]][args["role"]]
if args["perturbation"] == "sft_seed":
    spec["sft"]["seed"] = spec["sft"].get("seed", 0) + 1
if args["perturbation"] == "init_noise":
    build = pipeline.build_tiny_model
    def noisy(arch, tokenizer, seed):
        model = build(arch, tokenizer, seed)
        gen = torch.Generator().manual_seed(12345)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-6 * torch.randn(p.shape, generator=gen))
        return model
    pipeline.build_tiny_model = noisy
torch.set_num_threads(args["threads"])
out = Path(args["out"])
pipeline.build_model(config, args["task"], args["role"], args["data"], args["tokenizer"], out / "model",
                     threads=args["threads"])
for seed in args["eval_seeds"]:
    pipeline.evaluate(config, args["task"], out / "model", args["data"], out / f"samples_seed{seed}.jsonl",
                      out / f"eval_seed{seed}.json", {"model": args["role"], "seed": seed, "kind": "probe"},
                      threads=args["threads"])
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--role", required=True, choices=["teacher", "student"])
    p.add_argument("--perturbations", nargs="+", default=list(PERTURBATIONS), choices=list(PERTURBATIONS))
    p.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--configfile", action="append", default=[], help="overlays on config/config.yaml")
    p.add_argument("--experiment", default="tiny", help="results/<experiment>/ holds the data and tokenizer")
    p.add_argument("--label", default="", help="suffix of the output folders (e.g. a recipe name)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    results = REPO / "results" / args.experiment
    data, tokenizer = results / "data" / args.task, results / "models" / args.task / "tokenizer"
    if not (data / "manifest.json").exists() or not tokenizer.is_dir():
        sys.exit(f"build the data and tokenizer first: snakemake --cores all {data / 'manifest.json'} {tokenizer}")
    rows = []
    for name in args.perturbations:
        out = results / "probes" / "robustness" / f"{args.task}_{args.role}_{name}{args.label}"
        if not (out / f"eval_seed{args.eval_seeds[-1]}.json").exists():
            payload = {"task": args.task, "role": args.role, "perturbation": name, "out": str(out),
                       "data": str(data), "tokenizer": str(tokenizer), "eval_seeds": args.eval_seeds,
                       "threads": args.threads, "configfiles": args.configfile}
            env = {**os.environ, **PERTURBATIONS[name]}
            subprocess.run([sys.executable, "-c", CHILD, str(REPO), json.dumps(payload)], env=env, check=True)
        weights = hashlib.sha256((out / "model" / "model.safetensors").read_bytes()).hexdigest()[:12]
        scores: dict[str, list[float]] = {}
        for seed in args.eval_seeds:
            metrics = json.loads((out / f"eval_seed{seed}.json").read_text())
            n = metrics["decoding"]["n_samples"]
            for bench, values in metrics["benchmarks"].items():
                scores.setdefault(bench, []).append(100 * values[f"avg@{n}"])
        rows.append((name, weights, {b: sum(v) / len(v) for b, v in scores.items()}))
    benches = sorted(rows[0][2])
    print(f"{args.task} {args.role}: Avg@N, mean over evaluation seeds {args.eval_seeds}")
    print(f"{'perturbation':<12} {'weights':<12} " + " ".join(f"{b:>10}" for b in benches))
    for name, weights, score in rows:
        print(f"{name:<12} {weights:<12} " + " ".join(f"{score[b]:>10.1f}" for b in benches))
    ref = dict((name, score) for name, _, score in rows)
    if "none" in ref and len(rows) > 1:
        spread = {b: max(s[b] for _, _, s in rows) - min(s[b] for _, _, s in rows) for b in benches}
        print("spread (max - min): " + ", ".join(f"{b} {v:.1f}" for b, v in spread.items()))


if __name__ == "__main__":
    main()
