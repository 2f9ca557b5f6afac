"""Launching verl's trainer for a run, and reading back what it leaves: its per-step metrics in
the suite's keys, its last checkpoint converted to HF format for evaluation.

The run directory of a verl run holds
    verl_run.json          the resolved run (the plugin's Method, in every Ray worker)
    launch.sh              the command and its environment, for inspection and for a rerun by hand
    verl_metrics/<k>.jsonl verl's file logger, one file per attempt k (verl truncates its file on start)
    verl_checkpoints/      verl's checkpoints: global_step_<N>/actor, latest_checkpointed_iteration.txt
"""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from opdbench.atomic import atomic_write_text
from opdbench.train.engines.verl.overrides import TRAINER_MODULE

# How a run reaches verl's processes (the plugin reads both in every Ray worker; the launch script
# exports them): this module stays free of verl and torch, so that building the DAG imports neither.
RUN_ENV = "OPDBENCH_VERL_RUN"  # the run file (write_run_file) of the run being trained
METHODS_ENV = "OPDBENCH_METHODS_DIR"  # where the method files are (default: the checkout's methods/)
DEFAULT_METHODS_DIR = Path(__file__).resolve().parents[4] / "methods"

METRICS_DIR = "verl_metrics"
CHECKPOINT_DIR = "verl_checkpoints"
# verl's per-step metric -> the suite's key (opdbench/train/engines/local.py), first key present wins.
# verl scores the teacher inside generation (its teacher loop), so seconds_teacher has no source.
METRICS = {
    "loss": ("actor/distillation/loss", "distillation/loss"),
    "grad_norm": ("actor/grad_norm",),
    "lr": ("actor/lr",),
    "entropy": ("actor/entropy",),
    "response_length": ("response_length/mean",),
    "train_accuracy": ("critic/score/mean",),  # the task's verifier (reward.py)
    "seconds_generation": ("timing_s/gen",),  # rollout and teacher log-probs together
    "seconds_student_scoring": ("timing_s/old_log_prob",),
    "seconds_update": ("timing_s/update_actor",),
}
DIAGNOSTIC_PREFIXES = ("actor/opdbench/", "opdbench/")  # the method's per-token diagnostics (plugin)


def methods_dir() -> Path:
    return Path(os.environ.get(METHODS_ENV) or DEFAULT_METHODS_DIR)


def write_run_file(run: dict[str, Any], run_dir: Path) -> Path:
    path = Path(run_dir) / "verl_run.json"
    atomic_write_text(path, json.dumps({"run": run}, indent=1, sort_keys=True))
    return path


def launch_env(run_dir: Path, attempt: int) -> dict[str, str]:
    """What the trainer's process needs: the run file and the methods (read by the plugin in every
    Ray worker; ``launch_command`` forwards them to Ray's runtime env) and the metrics file."""
    run_dir = Path(run_dir)
    return {RUN_ENV: str(run_dir / "verl_run.json"), METHODS_ENV: str(methods_dir()),
            "VERL_FILE_LOGGER_PATH": str(run_dir / METRICS_DIR / f"{attempt}.jsonl"),
            "TOKENIZERS_PARALLELISM": "false"}


def launch_command(python: str, overrides: list[str], env: dict[str, str]) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with the overrides and the plugin's variables added to
    Ray's runtime env (verl merges ``ray_kwargs.ray_init.runtime_env`` into its own)."""
    forwarded = [f"+ray_kwargs.ray_init.runtime_env.env_vars.{key}={env[key]}" for key in (RUN_ENV, METHODS_ENV)]
    return [python, "-m", TRAINER_MODULE, *overrides, *forwarded]


def next_attempt(run_dir: Path) -> int:
    return len(list((Path(run_dir) / METRICS_DIR).glob("*.jsonl")))


RAY_PORT = 6379


def ray_on_slurm(nnodes: int, gpus_per_node: int, python: str, ray: str | None = None,
                 port: int = RAY_PORT) -> list[str]:
    """Shell lines that make one Ray cluster of a SLURM allocation's ``nnodes`` nodes before verl
    starts (verl's trainer then joins it through RAY_ADDRESS instead of starting a local Ray):
    the head on the first node, a worker on every other once the head listens, each with the
    node's GPUs, then a wait until all have joined. The sbatch job is the one Snakemake submits for
    the run (--nodes, one task and --gres=gpu:<per node> per node; opdbench.compute.multi_node_resources).
    Its job step (snakemake-executor-plugin-slurm-jobstep) runs the job in the batch allocation with
    only SLURM_JOB_ID of the allocation's variables: the node list is then asked of squeue."""
    ray = shlex.quote(ray or str(Path(python).with_name("ray")))  # Ray's CLI beside the trainer's Python
    return [
        f"# Ray across the allocation's {nnodes} nodes (base.verl.nnodes): head on the first, a worker on each other.",
        'if [ -z "${SLURM_JOB_NODELIST:-}" ] && [ -n "${SLURM_JOB_ID:-}" ]; then',
        '  SLURM_JOB_NODELIST=$(squeue -h -j "$SLURM_JOB_ID" -o %N)',
        "fi",
        'if [ -z "${SLURM_JOB_NODELIST:-}" ]; then',
        f'  echo "this run spans {nnodes} nodes: submit it through SLURM (profiles/slurm), which allocates them" >&2',
        "  exit 2",
        "fi",
        'mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        f'if [ "${{#nodes[@]}}" -ne {nnodes} ]; then echo "the allocation has ${{#nodes[@]}} nodes, the run needs {nnodes}" >&2; exit 2; fi',
        # the head's first address (hostname --ip-address can answer 127.0.1.1 on Debian and Ubuntu)
        'head_ip=$(srun --nodes=1 --ntasks=1 --overlap -w "${nodes[0]}" hostname -I | awk \'{print $1}\')',
        f'srun --nodes=1 --ntasks=1 --overlap -w "${{nodes[0]}}" {ray} start --head --node-ip-address="$head_ip" '
        f'--port={port} --num-gpus={gpus_per_node} --block &',
        f'for _ in $(seq 1 120); do timeout 2 bash -c "echo > /dev/tcp/$head_ip/{port}" 2>/dev/null && break; sleep 1; done',
        'for node in "${nodes[@]:1}"; do',
        f'  srun --nodes=1 --ntasks=1 --overlap -w "$node" {ray} start --address="$head_ip:{port}" '
        f'--num-gpus={gpus_per_node} --block &',
        "done",
        f'export RAY_ADDRESS="$head_ip:{port}"',
        f"{shlex.quote(python)} -m opdbench.train.engines.verl.launch wait-for-ray-nodes {nnodes}",
    ]


def write_launch_script(path: Path, command: list[str], env: dict[str, str], prologue: list[str] = ()) -> Path:
    """The run's launch script: its variables, the ``prologue`` (Ray on SLURM for a multi-node run),
    then verl's trainer (``exec`` on one node; a child of the script when the prologue started Ray
    steps, which end with the allocation)."""
    start = "exec " if not prologue else ""
    lines = ["#!/usr/bin/env bash", "# Written by opdbench.train.engines.verl (docs/verl.md): verl's trainer for this run.",
             "set -euo pipefail", *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
             "mkdir -p \"$(dirname \"$VERL_FILE_LOGGER_PATH\")\"", *prologue,
             start + " \\\n    ".join(shlex.quote(arg) for arg in command), ""]
    atomic_write_text(path, "\n".join(lines))
    Path(path).chmod(0o755)
    return Path(path)


def read_metrics(run_dir: Path, steps: int) -> list[dict[str, Any]]:
    """The suite's per-step rows (step 0..steps-1) from verl's metric files: attempts in order, a
    later attempt's row for a step replacing an earlier one (a resumed run retraces from its
    checkpoint). A step without a row is an error naming the files."""
    files = sorted((Path(run_dir) / METRICS_DIR).glob("*.jsonl"), key=lambda p: int(p.stem))
    by_step: dict[int, dict[str, Any]] = {}
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                by_step[int(record["step"]) - 1] = record["data"]  # verl counts steps from 1
    missing = [s for s in range(steps) if s not in by_step]
    if missing:
        raise RuntimeError(f"verl logged no metrics for steps {missing[:5]}{'...' if len(missing) > 5 else ''} "
                           f"of {steps} in {', '.join(map(str, files)) or Path(run_dir) / METRICS_DIR}")
    return [suite_row(step, by_step[step]) for step in range(steps)]


def suite_row(step: int, verl: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step}
    for key, sources in METRICS.items():
        for source in sources:
            value = verl.get(source)
            if isinstance(value, (int, float)) and math.isfinite(value):
                row[key] = float(value)
                break
    for key, value in verl.items():
        for prefix in DIAGNOSTIC_PREFIXES:
            if key.startswith(prefix) and isinstance(value, (int, float)):
                row[f"{key[len(prefix):]}_mean"] = float(value)
    return row


def latest_checkpoint(run_dir: Path) -> Path:
    """verl's last saved actor checkpoint (the step in latest_checkpointed_iteration.txt)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    marker = root / "latest_checkpointed_iteration.txt"
    if not marker.exists():
        raise FileNotFoundError(f"verl saved no checkpoint: {marker} is missing")
    actor = root / f"global_step_{int(marker.read_text().strip())}" / "actor"
    if not actor.is_dir():
        raise FileNotFoundError(f"{marker} names {actor}, which is not a directory")
    return actor


def merge_command(python: str, actor_dir: Path, target_dir: Path) -> list[str]:
    """verl's model merger: an FSDP actor checkpoint to HF safetensors (the suite evaluates that)."""
    return [python, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(actor_dir),
            "--target_dir", str(target_dir)]


def wait_for_ray_nodes(n: int, timeout_s: float = 600.0, poll_s: float = 2.0) -> None:
    """Block until the Ray cluster at RAY_ADDRESS has ``n`` nodes (the launch script's prologue)."""
    import time

    import ray

    ray.init()
    try:
        deadline = time.monotonic() + timeout_s
        while len([node for node in ray.nodes() if node.get("Alive")]) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"Ray: fewer than {n} nodes joined in {timeout_s:.0f} s")
            time.sleep(poll_s)
    finally:
        ray.shutdown()


if __name__ == "__main__":  # python -m opdbench.train.engines.verl.launch wait-for-ray-nodes N
    if len(sys.argv) != 3 or sys.argv[1] != "wait-for-ray-nodes":
        raise SystemExit("usage: python -m opdbench.train.engines.verl.launch wait-for-ray-nodes N")
    wait_for_ray_nodes(int(sys.argv[2]))
