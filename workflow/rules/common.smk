# Shared by every rule: config validation at start-up, result paths, the run list.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from opdbench.code_hash import EVALUATION_CODE, file_hash, package_code_hash
from opdbench.compute import RESOURCE_KEYS, job_resources
from opdbench.config import (compose_config, data_settings as task_data_settings, evaluation_settings, load_yaml,
                             resolve_run, role_models, validate_config)
from opdbench.errors import ConfigError
from opdbench.models.shipped import SHIPPED_DIR
from opdbench.data.hub import hub_datasets, hub_models, is_hub_id, record_of
from opdbench.data.resources import resource_pattern, resources_of

# Snakemake merges each --configfile over config/config.yaml; an experiment file's `replace`
# paths (its task data, models, evaluation) are instead taken as the file writes them.
_OVERLAYS = [load_yaml(path) for path in workflow.config_settings.configfiles]
if any("replace" in overlay for overlay in _OVERLAYS):
    try:
        _composed = compose_config(load_yaml(Path(workflow.basedir) / "config" / "config.yaml"), _OVERLAYS,
                                   dict(workflow.config_settings.config or {}))
    except ConfigError as e:
        raise WorkflowError(f"Invalid configuration: {e}")
    config.clear()
    config.update(_composed)

METHODS_DIR = Path(workflow.basedir) / config["methods_dir"]

# Without --sdm (conda, apptainer, env modules) the jobs run in this Python, so the
# generation backend they need is checked here; otherwise the job checks it in its env.
_JOBS_RUN_HERE = not workflow.deployment_settings.deployment_method
try:
    validate_config(config, METHODS_DIR, command_line=tuple(workflow.config_settings.overwrite_config or ()),
                    jobs_run_here=_JOBS_RUN_HERE)
except ConfigError as e:
    raise WorkflowError(f"Invalid configuration: {e}")

RESULTS = f"results/{config['experiment']}"
# The rules' conda env (--sdm conda): torch's CPU build, or OPDBENCH_TORCH=<build> (e.g. cu130) on a GPU node.
_TORCH = os.environ.get("OPDBENCH_TORCH", "cpu")
ENV = "../../envs/opdbench.yaml" if _TORCH == "cpu" else f"../../envs/opdbench-{_TORCH}.yaml"
# Training on verl needs the lock's [verl] section (envs/verl*.yaml, docs/verl.md).
TRAIN_ENV = ENV if config["base"]["engine"] != "verl" else (
    "../../envs/verl.yaml" if _TORCH == "cpu" else f"../../envs/verl-{_TORCH}.yaml")
RUNS = list(config["methods"])  # method names and variant names
SEEDS = [int(s) for s in config["seeds"]]


wildcard_constraints:
    task=r"[A-Za-z0-9_-]+",
    run=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    role="teacher|student",


def eval_tags(task):
    """Every model evaluated for a task, as <task>/<model>/seed<k>: the base student, the teacher
    and each run, per seed. Seed k's evaluation samples with seed evaluation.seed + k for every
    model, so the base rows carry the same sampling noise as the runs they are compared with."""
    models = ["base/student", "base/teacher"] + RUNS
    return [f"{task}/{model}/seed{seed}" for model in models for seed in SEEDS]


def eval_targets(task):
    return [f"{RESULTS}/eval/{tag}/metrics.json" for tag in eval_tags(task)]


def run_records(tasks):
    """Every training run's run.json for the tasks (its metrics.jsonl lies beside it)."""
    return [f"{RESULTS}/train/{task}/{run}/seed{seed}/run.json" for task in tasks for run in RUNS for seed in SEEDS]


def leaderboard_outputs():
    return [f"{RESULTS}/leaderboard.md", f"{RESULTS}/leaderboard.csv", f"{RESULTS}/tables/cost.csv"]


# The published tables rendered next to the runs (none when paper_tables/ is empty); paths
# relative to the working directory, so that a moved checkout plans nothing new.
PAPER_TABLES = sorted(os.path.relpath(p) for p in (Path(workflow.basedir) / "paper_tables").glob("*.yaml"))


def figure_outputs():
    tables = [f"{RESULTS}/tables/paper_tables.md", f"{RESULTS}/tables/order_agreement.csv"] if PAPER_TABLES else []
    return [f"{RESULTS}/figures/{task}_{name}" for task in config["tasks"]
            for name in ("training_curves.png", "test_time_scaling.png")] + [
        f"{RESULTS}/tables/{task}_test_time_scaling.csv" for task in config["tasks"]] + [
        f"{RESULTS}/figures/leaderboard_deltas.png"] + tables


# Each rule's `params.settings` is the part of the config its output depends on, so that
# Snakemake's params rerun trigger rebuilds exactly what a config edit changes.
def data_settings(wildcards):
    return task_data_settings(config, wildcards.task)  # a benchmark's N is the evaluation's, not the data's


def data_resources(wildcards):
    """The resources/ files (paper-scale benchmarks) the task's data settings read."""
    return resources_of(data_settings(wildcards))


def tokenizer_settings(wildcards):
    settings = config["task_settings"][wildcards.task]
    return {"tokenizer": settings.get("tokenizer", {}), "student_source": settings["student"]["source"]}


def model_settings(wildcards):
    """What a base model depends on besides its inputs (a change reruns the rule): its spec and,
    for a tiny one, whether it is taken from the shipped models (and which) or trained here."""
    spec = config["task_settings"][wildcards.task][wildcards.role]
    mode = config.get("tiny_models", "shipped")
    shipped = sorted(SHIPPED_DIR.glob(f"{wildcards.task}/{wildcards.role}/**/model.json")) if mode == "shipped" else []
    return {"spec": spec, "tiny_models": mode, "shipped": [file_hash(f) for f in shipped]}


def hub_model_record(wildcards, role=None):
    """A hub model's fetch record (the model and tokenizer rules read the fetched files), else nothing."""
    specs = role_models(config["task_settings"][wildcards.task], role or wildcards.role).values()
    return [record_of(spec["source"]) for spec in specs if is_hub_id(spec["source"])]


def student_hub_record(wildcards):
    return hub_model_record(wildcards, role="student")


def hub_revision(wildcards):
    """The revision the config asks of a hub repository (None: its main branch)."""
    repo = f"{wildcards.org}/{wildcards.name}"
    return (hub_models(config) if wildcards.kind == "models" else hub_datasets(config)).get(repo)


def run_settings(wildcards):
    return resolve_run(config, wildcards.task, wildcards.run, int(wildcards.seed), METHODS_DIR)


def eval_settings(wildcards):
    return {"evaluation": evaluation_settings(config, wildcards.task), "device": config["base"]["device"],
            "sandbox": config["task_settings"][wildcards.task].get("sandbox", {}),
            "code": package_code_hash(EVALUATION_CODE)}


def model_to_evaluate(wildcards):
    """base/<role>/seed<k> is a model built for the task; <run>/seed<k> a trained student."""
    if wildcards.model.startswith("base/"):
        role = wildcards.model.split("/")[1]
        return f"{RESULTS}/models/{wildcards.task}/{role}/model.json"
    return f"{RESULTS}/train/{wildcards.task}/{wildcards.model}/model/model.json"


# -- what each heavy job asks of the machine (opdbench/compute.py) ----------------------------
def heavy_job(rule_name):
    """The resources of a heavy rule's jobs (gpu, nodes, mem_mb, runtime), per job: a train job's
    GPUs follow from its run's resolved engine and device (resolved once per job, not per key).
    A job over several nodes also has the SLURM plugin's mpi, tasks, tasks_per_gpu and gres
    (opdbench.compute.multi_node_resources); for any other job they are None, which Snakemake
    drops: it has no such resource, and is submitted as before."""
    per_job = {}

    def of(wildcards):
        key = tuple(wildcards.items())
        if key not in per_job:
            train = run_settings(wildcards)["train"] if rule_name == "train" else None
            per_job[key] = job_resources(config, rule_name, wildcards.task, train)
        return per_job[key]

    return {key: (lambda wildcards, key=key: of(wildcards).get(key)) for key in RESOURCE_KEYS}


def benchmark_file(rule_name, tag):
    """Snakemake's wall time and peak memory of a heavy job (tables/cost.csv reads them)."""
    return f"{RESULTS}/benchmarks/{rule_name}/{tag}.tsv"


def heavy_job_tags():
    """(rule, tag) of every heavy job of the experiment, as their benchmark files name them."""
    tags = [(job["rule"], job["tag"]) for job in jobs_without_records()]
    for task in config["tasks"]:
        tags += [("train", f"{task}_{run}_seed{seed}") for run in RUNS for seed in SEEDS]
        tags += [("evaluate", tag) for tag in eval_tags(task)]
    return tags


def jobs_without_records():
    """The heavy jobs that record no cost of their own (base model builds, quality gates) with the
    devices they ran on: tables/cost.csv counts their hours from their benchmark files."""
    jobs = []
    for task in config["tasks"]:
        for rule_name, model, tag in [("model", f"base/{role}", f"{task}_{role}") for role in ("teacher", "student")] + [
                ("quality_gate", "base models", task)]:
            jobs.append({"rule": rule_name, "task": task, "model": model, "tag": tag,
                         "gpus": job_resources(config, rule_name, task)["gpu"], "threads": config["threads"]})
    return jobs


# Paper scale builds no model: the model rule only records the hub id or path (a local job).
TINY_MODELS = any(spec["source"] == "tiny" for task in config["tasks"] for role in ("teacher", "student")
                  for spec in role_models(config["task_settings"][task], role).values())
