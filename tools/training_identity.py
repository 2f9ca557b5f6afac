"""Did a refactor of the training code change what training computes? Trains a set of short
runs through ``opdbench.pipeline.train`` and records each run's metrics rows and weights'
sha256; a second invocation after the change compares the two records.

    python tools/training_identity.py record /tmp/before --models results/tiny/models/math \
        --data results/tiny/data/math
    (change the code)
    python tools/training_identity.py record /tmp/after --models ... --data ...
    python tools/training_identity.py compare /tmp/before /tmp/after

Every metrics value must be identical except the wall-clock timings (``seconds_*``); the
saved weights must hash the same. The runs cover every method of ``methods/``, variants
that take the other loss paths (TrOPD's clip/jsd/mask outliers, REOPOLD without the
schedule), two optimizer steps per rollout batch (mini-batches) over two PPO epochs, and
every ``loss_agg_mode``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opdbench.config import deep_update, load_yaml  # noqa: E402
from opdbench.data.resources import sha256_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Short runs: 4 steps, 8 prompts x 4 rollouts, 2 mini-batches per epoch, a checkpoint and
# retention every 2 steps, Uni-OPD profiling 32 prompts.
SMALL = {"base": {"steps": 4, "prompts_per_step": 8, "rollouts_per_prompt": 4, "mini_batch_size": 16,
                  "max_new_tokens": 48, "checkpoint_every": 2, "retention_samples": 8, "retention_every": 2},
         "method_settings": {"uniopd": {"difficulty_prompts": 32}}}
# (run name, base overrides): the methods, loss-path variants, and the other aggregations.
RUNS = [("opd", {}), ("eopd", {}), ("reopold", {}), ("exopd", {}), ("uniopd", {}), ("tropd", {}),
        ("jsd_05", {}), ("clip_outlier", {}), ("tropd_mask", {}), ("entropy_opd_20", {}),
        ("opd", {"ppo_epochs": 2, "loss_agg_mode": "seq-mean-token-mean"}),
        ("eopd", {"loss_agg_mode": "seq-mean-token-sum"}),
        ("tropd", {"loss_agg_mode": "token-sum"}),
        ("uniopd", {"loss_agg_mode": "seq-mean-token-mean"})]
TIMINGS = "seconds_"


def record(out: Path, models: Path, data: Path, only: list[str] | None) -> None:
    from opdbench.pipeline import train

    config = deep_update(load_yaml(ROOT / "config" / "config.yaml"), SMALL)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, base in RUNS:
        label = name + "".join(f"+{k}={v}" for k, v in base.items())
        if only and label not in only:
            continue
        run_dir = out / "runs" / label
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = deep_update(config, {"base": base})
        train(cfg, "math", name, 0, data, models / "student", models / "teacher", run_dir, ROOT / "methods")
        weights = sorted((run_dir / "model").glob("*.safetensors"))
        summary[label] = {"metrics": [json.loads(line) for line in (run_dir / "metrics.jsonl").open()],
                          "weights": {p.name: sha256_of(p) for p in weights}}
        print(f"[identity] {label}: {len(summary[label]['metrics'])} steps, "
              f"{next(iter(summary[label]['weights'].values()))[:16]}")
    (out / "identity.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> int:
    ra, rb = (json.loads((p / "identity.json").read_text()) for p in (a, b))
    bad = 0
    for label in sorted(set(ra) | set(rb)):
        if label not in ra or label not in rb:
            print(f"{label}: only in {'A' if label in ra else 'B'}")
            bad += 1
            continue
        x, y = ra[label], rb[label]
        diffs = []
        if x["weights"] != y["weights"]:
            diffs.append("weights differ")
        if len(x["metrics"]) != len(y["metrics"]):
            diffs.append(f"{len(x['metrics'])} vs {len(y['metrics'])} rows")
        for rx, ry in zip(x["metrics"], y["metrics"]):
            kx = {k for k in rx if not k.startswith(TIMINGS)}
            ky = {k for k in ry if not k.startswith(TIMINGS)}
            if kx != ky:
                diffs.append(f"step {rx['step']}: keys {sorted(kx ^ ky)}")
            diffs += [f"step {rx['step']}: {k} {rx[k]!r} vs {ry[k]!r}" for k in sorted(kx & ky) if rx[k] != ry[k]]
        values = sum(len(r) for r in x["metrics"])
        print(f"{label}: {'identical' if not diffs else 'DIFFERS'} ({len(x['metrics'])} rows, {values} values, "
              f"weights {next(iter(x['weights'].values()))[:16]})")
        for d in diffs[:20]:
            print(f"    {d}")
        bad += bool(diffs)
    print(f"{len(set(ra) | set(rb)) - bad} of {len(set(ra) | set(rb))} runs identical "
          f"(timings '{TIMINGS}*' excluded)")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--models", type=Path, required=True, help="a task's models dir (student/, teacher/)")
    rec.add_argument("--data", type=Path, required=True, help="the task's data dir (train.jsonl, manifest.json)")
    rec.add_argument("--only", nargs="*", help="run labels to record (default: all)")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        record(args.out, args.models, args.data, args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
