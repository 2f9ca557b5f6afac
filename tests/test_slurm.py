"""The workflow through SLURM with profiles/slurm: its heavy jobs become sbatch jobs with the
resources the workflow computes, its light rules run where Snakemake runs.

The profile's parse and the sbatch lines need no cluster; the run needs a real one, which CI starts
on its own machine (.ci/run: tools/slurm_one_node.sh, one node with fake GPUs); without one the
run is skipped."""
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
