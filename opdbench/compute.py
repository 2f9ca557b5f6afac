"""What each job asks of the machine, which GPUs it takes, and what it cost.

- ``job_resources``: a heavy rule's Snakemake resources. ``gpu`` follows from the settings that
  decide where the job runs (``base.device``, the run's engine: verl's ``base.verl`` GPUs over its
  nodes); ``mem_mb`` and ``runtime`` (minutes) come from the config's ``compute`` block. Snakemake
  limits concurrent jobs by them (``--resources gpu=8``); ``profiles/slurm`` submits them (the SLURM
  plugin turns ``gpu`` into ``--gpus``, ``nodes`` into ``--nodes``, ``runtime`` into ``-t``). A job
  over several nodes (a verl run with ``base.verl.nnodes > 1``) also gets ``multi_node_resources``.
- ``gpu_slots``: Snakemake counts GPUs but does not say which a job gets. A job that runs on the
  node of the workflow takes ``n`` of the node's GPUs under file locks (one per GPU, released when
  the process ends, killed or not) and sees only those (``CUDA_VISIBLE_DEVICES``), so concurrent
  jobs never share a GPU. A SLURM job of exactly its own GPUs takes them as they are.
- ``job_cost``: device-hours (GPU-hours, or CPU core-hours on a CPU), generated tokens and
  sequences, recorded by every run and evaluation and summed in ``tables/cost.csv``.

Nothing here imports torch: Snakemake reads the resources while it builds the DAG.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from opdbench.config import role_models
from opdbench.errors import ConfigError

HEAVY_RULES = ("model", "quality_gate", "train", "evaluate")
# Where concurrent jobs of one workflow on one node take their GPUs (relative to the working
# directory, beside Snakemake's own state; one directory per node when it is shared storage).
SLOTS_DIR = Path(".snakemake") / "opdbench_gpu_slots"
NODE_GPUS_ENV = "OPDBENCH_NODE_GPUS"  # the node's GPU ids, when not all of nvidia-smi's are the workflow's


def train_gpus(train: dict[str, Any]) -> tuple[int, int]:
    """(GPUs, nodes) of a run's training settings (a resolved run's ``train`` block)."""
    if train.get("device", "cpu") == "cpu":
        return 0, 1
    if train.get("engine") == "verl":
        from opdbench.train.engines.verl.overrides import VerlResources  # no verl import: the run's settings

        verl = VerlResources.from_settings(train.get("verl"))
        return verl.nnodes * verl.gpus_per_node, verl.nnodes
    return 1, 1  # the local engine: student and teacher on one device


def rule_gpus(config: dict[str, Any], rule: str, task: str, train: dict[str, Any] | None = None) -> tuple[int, int]:
    """(GPUs, nodes) of one job of ``rule``; ``train``: the run's resolved training settings."""
    on_gpu = config["base"].get("device", "cpu") != "cpu"
    if rule == "train":
        return train_gpus(train if train is not None else config["base"])
    if rule == "model":  # tiny scale: SFT on base.device; paper scale: a pointer to the hub model
        settings = config["task_settings"][task]
        tiny = any(spec["source"] == "tiny" for role in ("teacher", "student") for spec in role_models(settings, role).values())
        return (1 if on_gpu and tiny else 0), 1
    if rule in ("evaluate", "quality_gate"):
        return (1 if on_gpu else 0), 1
    raise ConfigError(f"no resources for rule '{rule}'. Valid: {', '.join(HEAVY_RULES)}")


# The resources a multi-node job adds (multi_node_resources); a one-node job has none of them.
MULTI_NODE_KEYS = ("mpi", "tasks", "tasks_per_gpu", "gres")
RESOURCE_KEYS = ("gpu", "nodes", "mem_mb", "runtime", *MULTI_NODE_KEYS)


def multi_node_resources(gpus: int, nodes: int) -> dict[str, Any]:
    """What a job over ``nodes`` > 1 nodes adds to its resources, so that snakemake-executor-plugin-slurm
    (2.8.0) submits one task per node with the GPUs per node, and its job step runs the job in the
    batch allocation (on the first node) instead of inside ``srun -n1``: the job (verl's launch
    script) starts its own steps on every node with ``srun --overlap``.

    - ``mpi``: the jobstep plugin runs a job whose resources name ``mpi`` as it is, without srun; the
      submitting plugin then asks ``tasks`` (> 1) for it: ``--ntasks=<nodes>`` with ``--nodes``.
    - ``tasks_per_gpu: 0``: else the plugin turns ``tasks`` of a GPU job into ``--ntasks-per-gpu``.
    - ``gres: gpu:<per node>``: ``--gres`` is per node; ``gpu`` (the total, which Snakemake's
      ``--resources gpu=`` counts) stays ``--gpus=<total>``, and SLURM checks the two agree.
    A one-node job gets nothing here: it is submitted exactly as before."""
    if nodes <= 1:
        return {}
    if gpus % nodes:
        raise ConfigError(f"{gpus} GPUs do not spread evenly over {nodes} nodes")
    extra: dict[str, Any] = {"mpi": "srun", "tasks": nodes, "tasks_per_gpu": 0}
    if gpus:
        extra["gres"] = f"gpu:{gpus // nodes}"
    return extra


def job_resources(config: dict[str, Any], rule: str, task: str, train: dict[str, Any] | None = None) -> dict[str, Any]:
    """Snakemake resources of one job of a heavy rule: gpu (all its nodes' together), nodes, mem_mb
    (per node), runtime, and for a job over several nodes ``multi_node_resources``."""
    gpus, nodes = rule_gpus(config, rule, task, train)
    stated = (config.get("compute") or {}).get(rule) or {}
    return {"gpu": gpus, "nodes": nodes, "mem_mb": int(stated.get("mem_mb", 4000)),
            "runtime": int(stated.get("runtime", 60)), **multi_node_resources(gpus, nodes)}


# -- GPU slots on one node -----------------------------------------------------------------
def node_gpus() -> list[str]:
    """The GPU ids jobs of this workflow may take on this node: ``OPDBENCH_NODE_GPUS``, else the
    node's ``CUDA_VISIBLE_DEVICES`` (as Snakemake was started), else every GPU nvidia-smi lists."""
    for variable in (NODE_GPUS_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(variable)
        if value is not None:
            return [g for g in re.split(r"[,\s]+", value) if g]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, check=False).stdout
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


def _try_lock(path: Path):
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except BaseException:
        f.close()
        raise
    return f


def _lock_name(gpu: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", gpu) + ".lock"  # MIG ids hold '/'


@contextlib.contextmanager
def gpu_slots(n: int, slots_dir: str | Path | None = None, wait_s: float = 3600.0,
              poll_s: float = 1.0, nodes: int = 1) -> Iterator[list[str]]:
    """Take ``n`` GPUs of this node for the body and show only those to it (and to its child
    processes: verl's Ray, vLLM) through ``CUDA_VISIBLE_DEVICES``; yields their ids. No-op for
    n = 0, and inside a SLURM allocation of exactly this job's GPUs (the plugin submits each job
    alone); a larger allocation (Snakemake itself run inside one) is shared out under locks.
    No-op too for a job over ``nodes`` > 1 (``n``: all its nodes' GPUs): it runs only in its own
    SLURM allocation (verl's launch script stops outside one), where each node has its share
    (``--gres=gpu:<per node>``) and the script starts one Ray node per node with it."""
    if n <= 0 or nodes > 1:
        yield [] if n <= 0 else node_gpus()
        return
    job = os.environ.get("SLURM_JOB_ID")
    gpus = node_gpus()
    if job and len(gpus) <= n:
        yield gpus
        return
    if len(gpus) < n:
        raise RuntimeError(f"this job asks for {n} GPUs; this node has {len(gpus)} ({', '.join(gpus) or 'none'}). "
                           f"Set {NODE_GPUS_ENV} or CUDA_VISIBLE_DEVICES to the node's GPU ids, or lower the "
                           "experiment's GPU settings (base.verl)")
    # per node, and per allocation where GPU ids are the allocation's own
    directory = Path(slots_dir or SLOTS_DIR) / (socket.gethostname() + (f"-slurm{job}" if job else ""))
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        held = {}
        try:
            for gpu in gpus:
                lock = _try_lock(directory / _lock_name(gpu))
                if lock is not None:
                    held[gpu] = lock
                    if len(held) == n:
                        break
        except BaseException:
            for lock in held.values():
                lock.close()
            raise
        if len(held) == n:
            break
        for lock in held.values():  # all or none: two jobs never hold part of what each needs
            lock.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {n} free GPUs of {', '.join(gpus)} after {wait_s:.0f} s (locks in {directory}): "
                               "limit concurrent GPU jobs with snakemake --resources gpu=<the node's GPUs>")
        time.sleep(poll_s)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(held)
    try:
        yield list(held)
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
        for lock in held.values():
            lock.close()


# -- cost ------------------------------------------------------------------------------------
def job_cost(seconds: float, gpus: int, threads: int, generated_tokens: int, generated_sequences: int) -> dict[str, Any]:
    """What a job cost: on GPUs, GPU-hours; on a CPU, core-hours (its torch threads)."""
    device, devices = ("gpu", gpus) if gpus > 0 else ("cpu", max(1, threads))
    return {"device": device, "devices": devices, "seconds": round(seconds, 3),
            "device_hours": round(seconds * devices / 3600.0, 6),
            "generated_tokens": int(generated_tokens), "generated_sequences": int(generated_sequences)}
