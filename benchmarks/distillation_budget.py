"""How much can distillation move the student with a given budget? A probe of the tiny
setting: the same number of training sequences spent on (a) continued SFT on the gold
worked solutions (the ideal supervised signal) and (b) one or more methods, each then
evaluated on the task's benchmarks with the same evaluation seeds as the base student.

It needs the task's data and models, built by the workflow (`make tiny`, or
`snakemake --cores all results/tiny/models/math/student/model.json ...`).

    python benchmarks/distillation_budget.py --steps 40 --lr 1e-4 --methods opd
    python benchmarks/distillation_budget.py --steps 200 --lr 3e-4 --methods opd eopd --sft-lr 3e-4

Results go to results/<experiment>/probes/; each line printed is one arm: Avg@N per
benchmark for each evaluation seed, and their mean.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdbench import pipeline  # noqa: E402
from opdbench.config import deep_update, evaluation_settings, load_yaml, validate_config  # noqa: E402
from opdbench.models import load_model, load_tokenizer, write_manifest  # noqa: E402
from opdbench.models.sft import train_sft  # noqa: E402
from opdbench.evaluate.metrics import evaluated_samples  # noqa: E402
from opdbench.tasks.base import read_jsonl  # noqa: E402


def evaluate(config, task, model_dir: Path, data_dir: Path, out: Path, seeds, threads) -> dict[str, list[float]]:
    scores: dict[str, list[float]] = {}
    for seed in seeds:
        metrics = out / f"eval_seed{seed}.json"
        if not metrics.exists():
            pipeline.evaluate(config, task, model_dir, data_dir, out / f"samples_seed{seed}.jsonl", metrics,
                              {"model": out.name, "seed": seed, "kind": "probe"}, threads=threads)
        written = json.loads(metrics.read_text())
        for bench, values in written["benchmarks"].items():
            scores.setdefault(bench, []).append(100 * values[f"avg@{evaluated_samples(written, bench)}"])
    return scores


def gold_sft(config, task_name, student: Path, data_dir: Path, out: Path, steps: int, batch: int, lr: float) -> Path:
    model_dir = out / "model"
    if (model_dir / "model.json").exists():
        return model_dir
    task = pipeline.load_task(config, task_name)
    model = load_model(student, trainable=True)
    tokenizer = load_tokenizer(student)
    train_sft(model, tokenizer, task, read_jsonl(data_dir / "train.jsonl"),
              {"steps": steps, "batch_size": batch, "lr": lr, "warmup_steps": 0}, seed=1, desc="gold sft")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_manifest(model_dir, ".", probe="gold_sft", steps=steps, batch_size=batch, lr=lr)
    return model_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", nargs="*", default=[], help="overlays on config/config.yaml")
    p.add_argument("--task", default="math")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=None, help="method lr (default: the base config's)")
    p.add_argument("--methods", nargs="*", default=["opd"])
    p.add_argument("--sft-lr", type=float, default=None, help="gold SFT lr (default: the method lr); 0 skips it")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    config = load_yaml(REPO / "config" / "config.yaml")
    for extra in args.configfile:
        config = deep_update(config, load_yaml(extra))
    config["base"]["steps"] = args.steps
    if args.lr is not None:
        config["base"]["lr"] = args.lr
    methods_dir = REPO / config["methods_dir"]
    validate_config(config, methods_dir)
    results = Path("results") / config["experiment"]
    data_dir = results / "data" / args.task
    student = results / "models" / args.task / "student"
    teacher = results / "models" / args.task / "teacher"
    if not (student / "model.json").exists():
        raise SystemExit(f"{student} is missing: build the task's models with the workflow first")
    base = config["base"]
    batch = base["prompts_per_step"] * base["rollouts_per_prompt"]
    tag = (f"steps{args.steps}_x{batch}_mb{base['mini_batch_size']}_ep{base['ppo_epochs']}"
           f"_lr{base['lr']:g}_seed{args.seed}")
    probes = results / "probes" / args.task

    arms: list[tuple[str, Path]] = [("base student", student), ("teacher", teacher)]
    sft_lr = base["lr"] if args.sft_lr is None else args.sft_lr
    if sft_lr:
        out = probes / f"gold_sft_steps{args.steps}_x{batch}_lr{sft_lr:g}"
        arms.append((f"gold SFT ({args.steps} x {batch}, lr {sft_lr:g})",
                     gold_sft(config, args.task, student, data_dir, out, args.steps, batch, sft_lr)))
    for name in args.methods:
        out = probes / f"{name}_{tag}"
        if not (out / "model" / "model.json").exists():
            pipeline.train(config, args.task, name, args.seed, data_dir, student, teacher, out, methods_dir,
                           threads=args.threads)
        arms.append((f"{name} ({args.steps} steps x {batch}, lr {base['lr']:g})", out / "model"))

    ev = evaluation_settings(config, args.task)
    print(f"\n{args.task}: Avg@{ev['n_samples']} per benchmark, evaluation seeds "
          f"{args.eval_seeds} (offset from evaluation.seed {ev['seed']})")
    for label, model_dir in arms:
        out = probes / {"base student": "base", "teacher": "teacher"}.get(label, model_dir.parent.name)
        scores = evaluate(config, args.task, model_dir, data_dir, out, args.eval_seeds, args.threads)
        cells = [f"{b} {' '.join(f'{v:.1f}' for v in vals)} (mean {sum(vals) / len(vals):.2f})"
                 for b, vals in scores.items()]
        print(f"  {label:45s} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
