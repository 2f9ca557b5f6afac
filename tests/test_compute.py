"""What a job asks of the machine and which GPUs it gets (opdbench/compute.py)."""
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from opdbench.compute import gpu_slots, job_cost, job_resources
from opdbench.config import load_yaml

TINY = load_yaml(REPO / "config" / "config.yaml")


def _with_base(**base):
    return {**TINY, "base": {**TINY["base"], **base}}


def test_gpus_follow_the_device_and_the_engine_and_the_rest_comes_from_the_compute_block():
    assert job_resources(TINY, "train", "math") == {"gpu": 0, "nodes": 1, **TINY["compute"]["train"]}
    verl = _with_base(device="cuda", engine="verl", verl={"nnodes": 2, "student_gpus_per_node": 6,
                                                          "teacher_gpus_per_node": 2})
    assert job_resources(verl, "train", "math")["gpu"] == 16 and job_resources(verl, "train", "math")["nodes"] == 2
    # over several nodes: one task and 8 GPUs per node, the job run in its allocation (tests/test_slurm.py)
    assert {k: job_resources(verl, "train", "math")[k] for k in ("mpi", "tasks", "tasks_per_gpu", "gres")} == {
        "mpi": "srun", "tasks": 2, "tasks_per_gpu": 0, "gres": "gpu:8"}
    local = _with_base(device="cuda", engine="local")
    assert job_resources(local, "train", "math")["gpu"] == 1
    assert job_resources(local, "evaluate", "math")["gpu"] == job_resources(local, "quality_gate", "code")["gpu"] == 1
    assert job_resources(local, "model", "math")["gpu"] == 1  # tiny models trained by SFT on the GPU
    hub = {**local, "task_settings": {**TINY["task_settings"], "math": {
        **TINY["task_settings"]["math"], "teacher": {"source": "org/teacher"}, "student": {"source": "org/student"}}}}
    assert job_resources(hub, "model", "math")["gpu"] == 0  # a pointer to the hub model
    # a run's own resolved settings decide (paper mode: each method on its own settings)
    assert job_resources(TINY, "train", "math", train={"device": "cuda", "engine": "local"})["gpu"] == 1


def test_a_job_over_several_nodes_takes_no_gpu_slots(tmp_path, monkeypatch):
    """Its n counts every node's GPUs; each node of its SLURM allocation has its share, left as it is."""
    monkeypatch.setenv("OPDBENCH_NODE_GPUS", "0,1,2,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    with gpu_slots(8, slots_dir=tmp_path / "slots", nodes=2) as gpus:
        assert gpus == ["0", "1", "2", "3"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert not (tmp_path / "slots").exists()


def test_cost_is_gpu_hours_on_gpus_and_core_hours_on_a_cpu():
    assert job_cost(1800, gpus=8, threads=4, generated_tokens=10, generated_sequences=2) == {
        "device": "gpu", "devices": 8, "seconds": 1800, "device_hours": 4.0, "generated_tokens": 10,
        "generated_sequences": 2}
    assert job_cost(360, gpus=0, threads=2, generated_tokens=0, generated_sequences=0)["device_hours"] == 0.2


def _hold(n, slots_dir, out, seconds):
    with gpu_slots(n, slots_dir=slots_dir, poll_s=0.05) as gpus:
        start = time.time()
        seen = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(seconds)
        Path(out).write_text(json.dumps({"gpus": gpus, "seen": seen, "start": start, "end": time.time()}))


def test_a_job_waits_for_free_gpus_and_never_shares_one(tmp_path, monkeypatch):
    """Three 2-GPU jobs at once on a 4-GPU node (nothing limits them): two run, on disjoint GPUs; the
    third waits for a pair to come free."""
    monkeypatch.setenv("OPDBENCH_NODE_GPUS", "0,1,2,3")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold, args=(2, tmp_path / "slots", tmp_path / f"{i}.json", 1.5)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    jobs = sorted((json.loads((tmp_path / f"{i}.json").read_text()) for i in range(3)), key=lambda j: j["start"])
    assert all(job["seen"] == ",".join(job["gpus"]) and len(job["gpus"]) == 2 for job in jobs)
    for a in jobs:
        for b in jobs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:  # ran at the same time
                assert not set(a["gpus"]) & set(b["gpus"]), (a, b)
    assert jobs[2]["start"] >= min(jobs[0]["end"], jobs[1]["end"]) - 0.05  # the third waited


def test_more_gpus_than_the_node_has_is_refused_with_what_to_set(monkeypatch):
    monkeypatch.setenv("OPDBENCH_NODE_GPUS", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(RuntimeError, match="asks for 4 GPUs; this node has 2 .* OPDBENCH_NODE_GPUS"):
        with gpu_slots(4):
            pass


def test_inside_a_slurm_allocation_the_jobs_own_gpus_stand(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with gpu_slots(2) as gpus:
        assert gpus == ["0", "1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


SNAKEFILE = """
rule all:
    input: expand("out/{i}.json", i=range(2))

rule job:
    output: "out/{i}.json"
    resources: gpu=2
    script: "job.py"
"""
JOB = """
import json, os, time
from opdbench.compute import gpu_slots

with gpu_slots(snakemake.resources.gpu, poll_s=0.05):  # as the workflow's train and evaluate scripts
    start = time.time()
    seen = os.environ["CUDA_VISIBLE_DEVICES"]
    time.sleep(2)
    end = time.time()
json.dump({"seen": seen, "start": start, "end": end}, open(snakemake.output[0], "w"))
"""


@pytest.mark.parametrize("inside", ["a node", "a SLURM allocation of 4 GPUs"])
def test_two_concurrent_two_gpu_jobs_of_snakemake_get_disjoint_gpus_on_a_four_gpu_node(tmp_path, inside):
    """A fake 4-GPU node (the node's CUDA_VISIBLE_DEVICES as Snakemake starts), two jobs of 2 GPUs each
    under --resources gpu=4: Snakemake runs them together; each sees its own two GPUs. The same when
    Snakemake itself runs inside one SLURM allocation of the 4 GPUs (salloc, sbatch)."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "job.py").write_text(JOB)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    env.pop("SLURM_JOB_ID", None)
    env.pop("OPDBENCH_NODE_GPUS", None)
    if "SLURM" in inside:
        env["SLURM_JOB_ID"] = "4242"
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run([snakemake, "--cores", "2", "--resources", "gpu=4", "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = (json.loads((tmp_path / f"out/{i}.json").read_text()) for i in range(2))
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two jobs did not run at the same time"
    seen = [set(job["seen"].split(",")) for job in (a, b)]
    assert all(len(gpus) == 2 for gpus in seen) and not seen[0] & seen[1] and seen[0] | seen[1] == {"0", "1", "2", "3"}
