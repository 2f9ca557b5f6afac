"""The workflow through SLURM with profiles/slurm: its heavy jobs become sbatch jobs with the
resources the workflow computes, its light rules run where Snakemake runs.

The profile's parse and the sbatch lines need no cluster; the run needs a real one, which CI starts
on its own machine (.ci/run: tools/slurm_one_node.sh, one node with fake GPUs); without one the
run is skipped."""
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import MICRO_CONFIG, REPO, SNAKEMAKE

PROFILE = REPO / "profiles" / "slurm"
# The micro DAG for the math task and OPD, one seed: every rule of the workflow, 16 jobs.
ONE_RUN = ["--config", "tasks=[math]", "methods=[opd]", "seeds=[0]"]
# A cluster without slurmdbd has no default account to look up; squeue answers status queries
# there (sacct needs accounting); status checks every 2 s instead of after 40 s.
CI_FLAGS = ["--slurm-no-account", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks",
            "2", "--seconds-between-status-checks", "2"]


def slurm_is_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return proc.returncode == 0 and bool(re.search(r"idle|mixed|allocated", proc.stdout))


def snakemake(workdir, *args, timeout=1200):
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(PROFILE), "--configfile", str(MICRO_CONFIG), *ONE_RUN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_the_slurm_profile_plans_each_heavy_job_with_its_partition_and_resources(tmp_path):
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    heavy = re.findall(r"rule (model|quality_gate|train|evaluate):.*?resources: ([^\n]*)", proc.stdout, re.S)
    assert len(heavy) == 2 + 1 + 1 + 3
    for rule, resources in heavy:
        assert "slurm_partition=main" in resources and "gpu=0" in resources and "runtime=" in resources, rule


@pytest.mark.slow
@pytest.mark.skipif(not slurm_is_up(), reason="no SLURM cluster here (CI starts one: tools/slurm_one_node.sh)")
def test_the_micro_dag_runs_through_a_real_slurm_cluster(tmp_path):
    start = time.time()
    proc = snakemake(tmp_path, *CI_FLAGS)
    wall = time.time() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    results = tmp_path / "results" / "micro"
    assert (results / "leaderboard.md").exists() and (results / "tables" / "cost.csv").exists()
    submitted = dict(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S+/rule_(\w+?)/", proc.stderr + proc.stdout))
    # every heavy job, and only those, went through sbatch
    assert sorted(submitted.values()) == sorted(["model", "model", "quality_gate", "train", "evaluate", "evaluate",
                                                 "evaluate"]), submitted
    records = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "JobID,JobName,State,Elapsed"], capture_output=True,
                             text=True).stdout
    ours = [line for line in records.splitlines() if line.split("|")[0] in submitted]
    assert len(ours) == len(submitted) and all(line.split("|")[2] == "COMPLETED" for line in ours), records
    print(f"micro DAG (math, OPD, seed 0) through SLURM: {wall:.0f} s; sacct -c:")
    print("\n".join(f"{line} {submitted[line.split('|')[0]]}" for line in ours))


# -- multi-node jobs: what snakemake-executor-plugin-slurm (2.8.0) and its job step do with them --------
def plan_reopold_math(workdir, nnodes: int) -> str:
    """`snakemake -n` through profiles/slurm of config/experiments/reopold_math.yaml with
    base.verl.nnodes set (a copy of the file), as tests/test_dag_build.py plans it (no GPU, no model)."""
    from test_dag_build import stand_in_data

    from opdbench.config import compose_config, load_yaml

    text = (REPO / "config" / "experiments" / "reopold_math.yaml").read_text()
    assert "verl: {nnodes: 1," in text
    workdir.mkdir(parents=True, exist_ok=True)
    experiment = workdir / "reopold_math.yaml"
    experiment.write_text(text.replace("verl: {nnodes: 1,", f"verl: {{nnodes: {nnodes},"))
    overlay = workdir / "hf.yaml"  # vLLM is not installed here (the plan is the same)
    overlay.write_text("evaluation: {backend: hf}\n")
    config = compose_config(load_yaml(REPO / "config" / "config.yaml"), [load_yaml(experiment), load_yaml(overlay)], {})
    stand_in_data(workdir / "work", config)
    cmd = [SNAKEMAKE, "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir / "work"),
           "--workflow-profile", str(PROFILE), "--configfile", str(experiment), str(overlay)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


class PlannedJob:
    """What the plugins read of a job: its rule's name, threads and resources."""

    def __init__(self, name: str, threads: int, resources: dict):
        from snakemake.iocontainers import ResourceList

        self.name, self.threads, self.resources = name, threads, ResourceList(fromdict=resources)

    def is_group(self) -> bool:
        return False


def planned_jobs(stdout: str) -> list[PlannedJob]:
    """Each heavy job of a dry run as the plugins see a job: its rule, threads and resources (the
    types Snakemake gives them: integers, else strings)."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", stdout):
        head = re.match(r"rule (model|quality_gate|train|evaluate):", block)
        if not head:
            continue
        fields = dict(kv.split("=", 1) for kv in re.search(r"^\s+resources: (.*)$", block, re.M).group(1).split(", "))
        resources = {k: int(v) if v.isdigit() else v for k, v in fields.items() if v != "<TBD>"}
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        jobs.append(PlannedJob(head.group(1), int(threads.group(1)) if threads else 1, resources))
    return jobs


def sbatch_args(job) -> list[str]:
    """The sbatch arguments the plugin builds for the job (its run_job: the submit command, then the
    GPUs), as profiles/slurm sets it (slurm-requeue) on a cluster without accounts."""
    import shlex

    from snakemake_executor_plugin_slurm import ExecutorSettings
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    validate_slurm_extra(job)
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": f"rule_{job.name}", "account": "",
              "partition": f"-p {job.resources.slurm_partition}", "workdir": "WORKDIR"}
    call = get_submit_command(job, params, settings=ExecutorSettings(requeue=True)) + set_gres_string(job)
    return shlex.split(call)


def test_a_multi_node_verl_run_is_submitted_with_one_task_and_its_gpus_per_node(tmp_path):
    """base.verl.nnodes 2 (4 student + 4 teacher GPUs per node): the train job's sbatch asks for 2
    nodes, 2 tasks (one per node), 8 GPUs per node (--gres, per node) and 16 in all (--gpus; SLURM
    checks that they agree). Every other job, and every job of the one-node file, is submitted as
    before: one node, its GPUs as --gpus, no task geometry."""
    two = planned_jobs(plan_reopold_math(tmp_path / "two", nnodes=2))
    train = [job for job in two if job.name == "train"]
    assert len(train) == 3  # opd, reopold, exopd
    for job in train:
        assert (job.resources.gpu, job.resources.nodes, job.resources.mpi) == (16, 2, "srun")
        args = sbatch_args(job)
        assert {"--nodes=2", "--ntasks=2", "--gres=gpu:8", "--gpus=16", "--requeue"} <= set(args), args
        assert not any(a.startswith(("--ntasks-per-gpu", "--ntasks-per-node")) for a in args), args
    one_node_args = [
        "sbatch", "--parsable", "--job-name", "RUN", "--output", "LOG", "--export=ALL", "--comment", "rule_train",
        "-p", "main", "-t", "3000", "--mem", "512000", "--nodes=1", "--requeue", "--cpus-per-task=1", "-D",
        "WORKDIR", "--gpus=8"]
    one = planned_jobs(plan_reopold_math(tmp_path / "one", nnodes=1))
    assert [sbatch_args(job) for job in one if job.name == "train"] == [one_node_args] * 3
    for job in one + [job for job in two if job.name != "train"]:
        assert not {"mpi", "tasks", "tasks_per_gpu", "gres"} & set(job.resources.keys()), job.name
        args = sbatch_args(job)
        assert "--nodes=1" in args and not any(a.startswith("--gres") for a in args), args
        assert [a for a in args if a.startswith("--ntasks")] in ([], ["--ntasks=1"]), args  # 1: a job without GPUs


def jobstep_call(job, monkeypatch) -> tuple[str, dict]:
    """The command and environment snakemake-executor-plugin-slurm-jobstep (inside the sbatch job)
    starts the job with, its subprocess faked."""
    from types import SimpleNamespace

    import snakemake_executor_plugin_slurm_jobstep as jobstep

    started = []

    class Step:
        def __init__(self, call, env, **kwargs):
            started.append((call, env))

        def wait(self):
            return 0

    monkeypatch.setattr(jobstep.subprocess, "Popen", Step)
    executor = object.__new__(jobstep.Executor)  # the plugin's executor, without a workflow to set it up
    executor.logger = SimpleNamespace(debug=lambda *a, **k: None, error=lambda *a, **k: None)
    executor.workflow = SimpleNamespace(executor_settings=jobstep.ExecutorSettings())
    executor.jobid, executor.gpu_job, executor.job_array_task = "4711", "16", False
    executor.format_job_exec = lambda job: "python -m snakemake --target-jobs THE_JOB"
    executor.report_job_submission = executor.report_job_success = lambda info: None
    executor.report_job_error = lambda info: pytest.fail("the job step failed")
    executor.run_job(job)
    assert len(started) == 1
    return started[0]


def test_the_job_step_runs_a_multi_node_job_in_the_batch_allocation_without_srun(tmp_path, monkeypatch):
    """In the sbatch job of a multi-node run the job step runs the job as it is (its launch script
    starts its own srun steps on every node), not under `srun -n1`, which would hold it to one task
    on one node; a one-node job still runs under `srun -n1`. Either way the job sees SLURM_JOB_ID but
    not SLURM_JOB_NODELIST (the plugin drops the allocation's other variables): the launch script
    asks squeue for the node list (tests/test_verl_engine.py)."""
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    jobs = planned_jobs(plan_reopold_math(tmp_path, nnodes=2))
    train = next(job for job in jobs if job.name == "train")
    call, env = jobstep_call(train, monkeypatch)
    assert call == "python -m snakemake --target-jobs THE_JOB"
    assert env["SLURM_JOB_ID"] == "4711" and "SLURM_JOB_NODELIST" not in env
    evaluate = next(job for job in jobs if job.name == "evaluate")
    call, _ = jobstep_call(evaluate, monkeypatch)
    assert call.startswith("srun -n1 ") and "--gpus=1" in call and "--nodes=1" in call
    assert call.endswith("python -m snakemake --target-jobs THE_JOB")


STEP_SNAKEFILE = """
from opdbench.compute import multi_node_resources

# {resources} as a multi-node train job has them (here on one node: 2 tasks, 2 fake GPUs)
rule in_allocation:
    output: "in_allocation.txt"
    resources: gpu=2, nodes=1, mem_mb=500, runtime=5, **multi_node_resources(4, 2)
    shell: 'echo "step=${{SLURM_STEP_ID:-none}} nodes=$(squeue -h -j $SLURM_JOB_ID -o %N)" > {output}; '
           'srun --nodes=1 --ntasks=1 --overlap -w $(squeue -h -j $SLURM_JOB_ID -o %N) echo started-a-step >> {output}'

rule one_node:
    output: "one_node.txt"
    resources: gpu=1, nodes=1, mem_mb=500, runtime=5
    shell: 'echo "step=${{SLURM_STEP_ID:-none}}" > {output}'
"""


@pytest.mark.slow
@pytest.mark.skipif(not slurm_is_up(), reason="no SLURM cluster here (CI starts one: tools/slurm_one_node.sh)")
def test_a_job_with_the_multi_node_resources_runs_in_its_batch_allocation_on_a_real_slurm(tmp_path):
    """On the one-node SLURM: a job with multi_node_resources is accepted by sbatch (--ntasks,
    --gres=gpu:<per node> with --gpus), runs outside any job step (a one-node job runs in srun's
    step 0), finds its allocation's nodes through squeue and starts a step of its own with srun, as
    verl's launch script does. Spanning two nodes needs a real multi-node cluster."""
    (tmp_path / "Snakefile").write_text(STEP_SNAKEFILE)
    cmd = [SNAKEMAKE, "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", str(PROFILE), *CI_FLAGS, "in_allocation.txt", "one_node.txt"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's opdbench (the Snakefile is not beside it)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    in_allocation = (tmp_path / "in_allocation.txt").read_text().split("\n")
    assert in_allocation[:2] == ["step=none nodes=" + node, "started-a-step"], in_allocation
    assert (tmp_path / "one_node.txt").read_text().strip() == "step=0"
