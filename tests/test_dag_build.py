"""Planning an experiment needs no training stack: `snakemake -n` on the tiny default and on every
paper-scale experiment file lists its jobs with the GPUs each asks for, while neither torch nor
transformers (nor verl, Ray, vLLM) is executed in Snakemake's process. A login node or a CI runner can
plan a paper-scale experiment and submit it (profiles/slurm); only the jobs import the stack.

The expected GPUs are read from each file here, independently of opdbench.compute: a train job on
verl takes nnodes x (student + teacher GPUs per node), on the local engine with a GPU one, on a CPU
none; every evaluation on a GPU node takes one."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from opdbench.config import compose_config, load_yaml, role_models
from opdbench.data.catalog import data_sources
from opdbench.data.hub import hub_datasets, hub_models
from opdbench.data.resources import resources_of

EXPERIMENTS = sorted(p.name for p in (REPO / "config" / "experiments").glob("*.yaml"))
HEAVY = ("torch", "transformers", "verl", "ray", "vllm")
# Runs `snakemake` in this process, then reports which heavy libraries were executed (a lazily
# imported module not yet used is not: opdbench.lazy).
PROBE = f"""
import json, sys
from snakemake.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
from opdbench.lazy import loaded
print("LOADED=" + json.dumps([m for m in {HEAVY!r} if loaded(m)]))
sys.exit(code)
"""


def plan(workdir: Path, *configfiles: Path) -> str:
    cmd = [sys.executable, "-c", PROBE, "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--configfile", *map(str, configfiles)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = json.loads(re.search(r"^LOADED=(.*)$", proc.stdout, re.M).group(1))
    assert loaded == [], f"building the DAG executed {loaded}"
    return proc.stdout


def jobs_by_rule(stdout: str) -> dict[str, list[dict[str, str]]]:
    """Each planned job's wildcards and resources, per rule, from the dry run's job listing."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=rule \w+:)", stdout):
        head = re.match(r"rule (\w+):", block)
        if not head:
            continue
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        fields = dict(kv.split("=", 1) for kv in (resources.group(1).split(", ") if resources else []))
        fields.update(kv.split("=", 1) for kv in (wildcards.group(1).split(", ") if wildcards else []))
        jobs.setdefault(head.group(1), []).append(fields)
    return jobs


def stand_in_data(workdir: Path, config: dict) -> None:
    """One-problem files where an experiment reads its data from a file of its own (not one the
    workflow fetches), and directories for its local models (as a user places them)."""
    for task in config["tasks"]:
        data = config["task_settings"][task]["data"]
        for _, spec in data_sources(data):
            if "path" in spec and not spec["path"].startswith("resources/"):
                path = workdir / spec["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text('{"problem": "1 + 1 = ?", "answer": "2"}\n')
        for role in ("teacher", "student"):  # a model the user trained and placed (e.g. ExOPD's RL teachers)
            for spec in role_models(config["task_settings"][task], role).values():
                if spec["source"].startswith("resources/"):
                    (workdir / spec["source"]).mkdir(parents=True, exist_ok=True)


def expected_train_gpus(base: dict) -> int:
    if base["device"] == "cpu":
        return 0
    if base["engine"] == "verl":
        v = base["verl"]
        return v.get("nnodes", 1) * (v["student_gpus_per_node"] + v["teacher_gpus_per_node"])
    return 1


def test_the_tiny_dag_plans_without_the_training_stack_and_asks_for_no_gpu(tmp_path):
    jobs = jobs_by_rule(plan(tmp_path, REPO / "config" / "config.yaml"))
    config = load_yaml(REPO / "config" / "config.yaml")
    runs = len(config["tasks"]) * len(config["methods"]) * len(config["seeds"])
    assert len(jobs["train"]) == runs and len(jobs["evaluate"]) == runs + 2 * len(config["tasks"]) * len(config["seeds"])
    for rule in ("model", "quality_gate", "train", "evaluate"):
        assert {job["gpu"] for job in jobs[rule]} == {"0"}, rule
        assert {job["runtime"] for job in jobs[rule]} == {str(config["compute"][rule]["runtime"])}, rule
    # Light rules run where Snakemake runs (no resources of their own beyond the default tmpdir)
    assert all("gpu" not in job for rule in ("make_data", "tokenizer", "leaderboard", "cost") for job in jobs[rule])


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n != "ablations.yaml"])
def test_each_experiment_file_plans_its_jobs_with_their_gpus_without_the_training_stack(tmp_path, name):
    experiment = REPO / "config" / "experiments" / name
    # vLLM is not installed here, and the start-up check would stop a dry run whose jobs run in
    # this Python; the plan and its resources are the same with either backend.
    overlay = tmp_path / "hf.yaml"
    overlay.write_text("evaluation: {backend: hf}\n")
    tiny = load_yaml(REPO / "config" / "config.yaml")
    config = compose_config(tiny, [load_yaml(experiment), load_yaml(overlay)], {})
    workdir = tmp_path / "work"
    stand_in_data(workdir, config)
    jobs = jobs_by_rule(plan(workdir, experiment, overlay))

    runs = {(job["task"], job["run"], job["seed"]) for job in jobs["train"]}
    assert runs == {(t, m, str(s)) for t in config["tasks"] for m in config["methods"] for s in config["seeds"]}
    gpus = expected_train_gpus(config["base"])
    assert gpus >= 1 and {job["gpu"] for job in jobs["train"]} == {str(gpus)}, name
    assert {job["runtime"] for job in jobs["train"]} == {str(config["compute"]["train"]["runtime"])}
    assert {job["mem_mb"] for job in jobs["train"]} == {str(config["compute"]["train"]["mem_mb"])}
    assert {job["gpu"] for job in jobs["evaluate"] + jobs["quality_gate"]} == {"1"}, name
    # every model of the experiment is evaluated: base student, teacher and each run, per seed
    assert len(jobs["evaluate"]) == len(runs) + 2 * len(config["tasks"]) * len(config["seeds"])
    # the hub models are pointers, built where Snakemake runs: no GPU; each hub repository is
    # fetched first, where Snakemake runs (a local job: no resources)
    assert {job["gpu"] for job in jobs["model"]} == {"0"}
    hub = {**hub_models(config), **hub_datasets(config)}
    assert len(jobs.get("fetch_hub", [])) == len(hub) and all("gpu" not in job for job in jobs.get("fetch_hub", []))
    # and each benchmark file of a paper's GitHub repository (opdbench/data/catalog.py), once
    github = {f for t in config["tasks"] for f in resources_of(config["task_settings"][t]["data"])
              if not f.startswith("resources/hub/")}
    assert {f"resources/{job['resource']}" for job in jobs.get("fetch_resource", [])} == github, name
    assert len(jobs.get("fetch_resource", [])) == len(github)


NOT_INSTALLED = ("torch", "verl", "ray", "vllm")
BLOCKED = f"""
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):  # a login node without the training stack
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_INSTALLED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, NotInstalled())
from snakemake.cli import main
main(sys.argv[1:])
"""


def test_the_dag_plans_where_the_training_stack_is_not_installed(tmp_path):
    """Not only unexecuted: absent. With torch, verl, Ray and vLLM unimportable, `snakemake -n`
    still plans the tiny DAG and a verl experiment. (transformers stays findable: without --sdm the
    jobs run in this Python, so the start-up check looks the generation backend's library up,
    without importing it.)"""
    overlay = tmp_path / "hf.yaml"
    overlay.write_text("evaluation: {backend: hf}\n")
    experiment = REPO / "config" / "experiments" / "reopold_math.yaml"
    config = compose_config(load_yaml(REPO / "config" / "config.yaml"), [load_yaml(experiment), load_yaml(overlay)], {})
    stand_in_data(tmp_path / "paper", config)
    for workdir, files in ((tmp_path / "tiny", [REPO / "config" / "config.yaml"]), (tmp_path / "paper", [experiment, overlay])):
        cmd = [sys.executable, "-c", BLOCKED, "-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", "--configfile", *map(str, files)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert re.search(r"^train\s+\d+$", proc.stdout, re.M), proc.stdout[-2000:]
