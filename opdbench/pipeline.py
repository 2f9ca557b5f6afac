"""The workflow's steps as plain functions: each rule's script calls exactly one of them,
and tests call them directly. Every results file gets provenance."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from opdbench.lazy import torch

from opdbench.atomic import atomic_dir, atomic_open
from opdbench.compute import job_cost, rule_gpus, train_gpus
from opdbench.config import canonical_hash, data_settings, evaluation_settings, resolve_run, role_models, task_type
from opdbench.models import (build_tiny_model, check_shared_vocabulary, count_parameters, load_tokenizer,
                             resolve_weights, teacher_refs, train_tokenizer, write_manifest)
from opdbench.errors import ConfigError
from opdbench.provenance import stamp, write_json
from opdbench.data.hub import RECORD, fetched_copy
from opdbench.data.resources import sha256_of
from opdbench.tasks import get_task
from opdbench.tasks.base import read_jsonl


def load_task(config: dict[str, Any], task_name: str):
    """The task with its data settings and, where the task runs code, its sandbox limits."""
    settings = config["task_settings"][task_name]
    extra = {"sandbox": settings["sandbox"]} if "sandbox" in settings else {}
    return get_task(task_type(config, task_name), {**data_settings(config, task_name), **extra})


def dataset_hash(data_dir: str | Path) -> str:
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    return hashlib.sha256(json.dumps(manifest["sha256"], sort_keys=True).encode()).hexdigest()[:16]


# -- data ------------------------------------------------------------------------------
def make_data(config: dict[str, Any], task_name: str, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    settings = data_settings(config, task_name)
    manifest = load_task(config, task_name).write_data(out_dir, settings["seed"])
    write_json(out_dir / "manifest.json", stamp(**manifest, config_hash=canonical_hash(settings)))


# -- models ----------------------------------------------------------------------------
def build_tokenizer(config: dict[str, Any], task_name: str, data_dir: str | Path, out_dir: str | Path) -> None:
    """Tiny scale: BPE on the task's prompts and solutions. Paper scale: the student's."""
    settings = config["task_settings"][task_name]
    out_dir = Path(out_dir)
    if settings["student"]["source"] != "tiny":
        source = settings["student"]["source"]
        with atomic_dir(out_dir) as tmp:  # the directory is the rule's output: whole or absent
            load_tokenizer(fetched_copy(source) or source).save_pretrained(tmp)
        return
    task = load_task(config, task_name)
    rows = read_jsonl(Path(data_dir) / "train.jsonl")
    texts = [m["content"] for r in rows for m in task.messages(r)] + [r["solution"] for r in rows]
    texts += ["user", "assistant", "system"]  # role names of the chat template
    train_tokenizer(texts, settings.get("tokenizer", {}).get("vocab_size", 1024), out_dir)


def build_model(config: dict[str, Any], task_name: str, role: str, data_dir: str | Path,
                tokenizer_dir: str | Path, out_dir: str | Path, threads: int = 1) -> None:
    """Tiny scale: a Qwen2 LM trained by SFT on worked solutions. Otherwise: a pointer to
    the hub id or local path, loaded by the same ``load_model``. A mixed task's teacher per
    domain (``teacher.by_domain``): each domain's model in a directory of its own (a tiny one
    trained on its domain's rows only), listed in this model.json (``models.teacher_refs``)."""
    out_dir = Path(out_dir)
    specs = role_models(config["task_settings"][task_name], role)
    if None in specs:
        _build_one(config, task_name, role, specs[None], data_dir, tokenizer_dir, out_dir, threads,
                   shipped_name=f"{task_name}/{role}")
        return
    for domain, spec in specs.items():
        _build_one(config, task_name, f"{role} ({domain})", spec, data_dir, tokenizer_dir, out_dir / domain, threads,
                   domain=domain, shipped_name=f"{task_name}/{role}/{domain}")
    write_manifest(out_dir, None, **stamp(role=role, teachers={domain: domain for domain in specs},
                                         sources={domain: spec["source"] for domain, spec in specs.items()}))


def _build_one(config: dict[str, Any], task_name: str, role: str, spec: dict[str, Any], data_dir: str | Path,
               tokenizer_dir: str | Path, out_dir: Path, threads: int, domain: str | None = None,
               shipped_name: str = "") -> None:
    from opdbench.models import shipped
    from opdbench.models.sft import train_sft

    out_dir.mkdir(parents=True, exist_ok=True)
    if spec["source"] != "tiny":
        # a hub model: the files its fetch put under resources/hub/ (the rule's input), with their commit
        fetched = fetched_copy(spec["source"])
        if fetched is not None:
            commit = json.loads((fetched / RECORD).read_text())["commit"]
            # relative to the working directory, as every results path: a moved checkout still finds it
            write_manifest(out_dir, str(fetched),
                           **stamp(role=role, source=spec["source"], revision=spec.get("revision"), commit=commit))
        else:
            write_manifest(out_dir, spec["source"], **stamp(role=role, source=spec["source"]))
        return
    wanted = shipped.recipe(spec, dataset_hash(data_dir), tokenizer_dir)
    # what model.json says of a tiny model, shipped or trained here
    tiny = dict(role=role, source="tiny", arch=spec["arch"], sft=spec["sft"], dataset_hash=wanted["dataset_hash"])
    skipped = {}
    if config.get("tiny_models", "shipped") == "shipped":
        found, why = shipped.find(shipped_name, wanted)
        if found is not None:
            print(f"{role}: {why}, every file's sha256 checked; not trained here (tiny_models: train trains it)")
            info = shipped.install(found, out_dir)
            origin = str(found.relative_to(shipped.SHIPPED_DIR.parents[1]))
            write_manifest(out_dir, ".", **stamp(**tiny, parameters=info["trained"]["parameters"],
                                                 shipped={"from": origin, **info}))
            return
        print(f"{role}: {why}; training it here")
        skipped = {"shipped": {"skipped": why}}
    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_tiny_model(spec["arch"], tokenizer, seed=spec["sft"].get("seed", 0))
    task = load_task(config, task_name)
    rows = read_jsonl(Path(data_dir) / "train.jsonl")
    if domain is not None:  # a domain's teacher learns its own domain
        rows = [r for r in rows if r["domain"] == domain]
        if not rows:
            raise ConfigError(f"config key 'task_settings.{task_name}.teacher.by_domain.{domain}': a tiny teacher "
                              f"learns from its domain's training rows, and the train split has none of '{domain}'")
    rows = task.written_by(spec["sft"].get("writer", {}), rows, seed=spec["sft"].get("seed", 0))
    t0 = time.time()
    curve = train_sft(model, tokenizer, task, rows, spec["sft"],
                      seed=spec["sft"].get("seed", 0), desc=f"sft {task_name} {role}")
    # The weights first, model.json (the rule's output, atomic) last: a kill in between
    # leaves no model.json, so Snakemake never takes a half-written directory as done.
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_manifest(out_dir, ".", **stamp(**tiny, parameters=count_parameters(model), sft_seconds=time.time() - t0,
                                         sft_curve=curve, **skipped))


# -- training --------------------------------------------------------------------------
def train(config: dict[str, Any], task_name: str, run_name: str, seed: int, data_dir: str | Path,
          student: str | Path, teacher: str | Path, out_dir: str | Path, methods_dir: str | Path,
          threads: int = 1) -> None:
    from opdbench.train.engines import check_capabilities, get_engine
    from opdbench.registry import get_method_class

    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    run = resolve_run(config, task_name, run_name, seed, methods_dir)
    engine_cls = get_engine(run["train"]["engine"])
    method_cls = get_method_class(run["method"], methods_dir)
    check_capabilities([(run_name, method_cls, run["train"]["engine"], run["hparams"])])  # the workflow checked it at start-up
    check_shared_vocabulary(student, teacher)
    run = _bound_to_inputs(run, student, teacher, data_dir)
    model_dir = out_dir / "model"  # weights, then model.json and run.json (atomic): see build_model
    finished = _finished_before(out_dir, model_dir, run)
    if finished is not None:
        # Snakemake removed the outputs of a run that had finished (a Ctrl-C while it ended
        # marks the job incomplete): its weights and log are intact, so only the records are written.
        print(f"[train] this run finished before with the same config and code ({out_dir / FINISHED}); "
              "its weights are intact, writing its records without retraining")
        steps, train_seconds = finished["steps"], finished["train_seconds"]
    else:
        method = method_cls(run["hparams"], run["train"], seed)
        rows = read_jsonl(Path(data_dir) / "train.jsonl")
        engine = engine_cls(run, load_task(config, task_name), rows, str(student), str(teacher), method, out_dir,
                             device=run["train"]["device"])
        t0 = time.time()
        steps = len(engine.train())  # exactly one metrics row per step, or an error
        engine.save_model(model_dir)
        train_seconds = time.time() - t0
        write_json(out_dir / FINISHED, {"config_hash": run["config_hash"], "steps": steps,
                                        "train_seconds": train_seconds, "model_files": _model_files_hash(model_dir)})
    info = stamp(run=run, config_hash=run["config_hash"], diff_from_base=run["diff_from_base"],
                 dataset_hash=dataset_hash(data_dir), train_seconds=train_seconds, steps=steps,
                 cost=_train_cost(run["train"], out_dir / "metrics.jsonl", train_seconds, threads))
    write_manifest(model_dir, ".", **info)
    write_json(out_dir / "run.json", info)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # the run is complete


FINISHED = "finished.json"  # beside run.json, not a rule output: Snakemake does not remove it


def _train_cost(train: dict[str, Any], metrics: Path, seconds: float, threads: int) -> dict[str, Any]:
    """A run's device-hours and the rollouts it generated (each step's prompts x rollouts, at the
    step's mean response length; Uni-OPD's profiling samples count in its time, not here)."""
    per_step = train["prompts_per_step"] * train["rollouts_per_prompt"]
    rows = read_jsonl(metrics)
    tokens = sum(round(row.get("response_length", 0.0) * per_step) for row in rows)
    return job_cost(seconds, train_gpus(train)[0], threads, tokens, per_step * len(rows))


def _bound_to_inputs(run: dict[str, Any], student: str | Path, teacher: str | Path,
                     data_dir: str | Path) -> dict[str, Any]:
    """The run with what it trains from (the base models' files, the data) in its config
    hash. Checkpoints, fixed state and the finished record carry that hash, so after a base
    model or the data changed none of them is taken for this run's (Snakemake reruns the
    job; without this the job would resume or reuse a run of the old base model)."""
    run = dict(run, inputs={"student": _model_identity(Path(student)), "teacher": _model_identity(Path(teacher)),
                            "data": dataset_hash(data_dir)})
    run["config_hash"] = canonical_hash({k: v for k, v in run.items() if k != "config_hash"})
    return run


def _model_identity(model_dir: Path) -> str:
    """A built model: the hash of its files; a pointer (paper scale): the hub id or path it names; a
    teacher per domain: each one's."""
    teachers = teacher_refs(model_dir)
    if teachers:
        return canonical_hash({domain: _model_identity(Path(ref)) for domain, ref in teachers.items()})
    weights = resolve_weights(model_dir)
    if Path(weights) == model_dir:
        return _model_files_hash(model_dir)
    # a pointer: the hub commit it was fetched at, or a local directory's files (names, sizes, times:
    # new weights at the same path are another model)
    commit = json.loads((model_dir / "model.json").read_text()).get("commit")
    files = sorted(p for p in Path(weights).rglob("*") if p.is_file()) if Path(weights).is_dir() else []
    stats = {str(p.relative_to(weights)): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}
    return weights if commit is None and not stats else canonical_hash({"weights": weights, "commit": commit,
                                                                         "files": stats})


def _model_files_hash(model_dir: Path) -> str:
    """sha256 over the saved model's files (weights, config, tokenizer), model.json excepted."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != "model.json")
    return canonical_hash({p.name: sha256_of(p) for p in files})


def _finished_before(out_dir: Path, model_dir: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The record of an earlier, complete run of exactly this config and code whose model
    files are still intact, else None (then the run trains, resuming from its checkpoint)."""
    try:
        record = json.loads((out_dir / FINISHED).read_text())
        metrics = (out_dir / "metrics.jsonl").read_text().splitlines()
        if (record["config_hash"] == run["config_hash"] and len(metrics) == record["steps"] == run["train"]["steps"]
                and record["model_files"] == _model_files_hash(model_dir)):
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


# -- evaluation ------------------------------------------------------------------------
def evaluate(config: dict[str, Any], task_name: str, model: str | Path, data_dir: str | Path,
             samples_path: str | Path, metrics_path: str | Path, label: dict[str, Any], threads: int = 1,
             benchmarks: list[str] | None = None) -> None:
    """``benchmarks``: only these of the task's benchmarks (default: all)."""
    from opdbench.evaluate.evaluation import generate_and_score, summarize
    from opdbench.evaluate.metrics import samples_of

    torch.set_num_threads(threads)
    # Seed k of every model (base or trained) samples with the same evaluation seed.
    ev = evaluation_settings(config, task_name)
    cfg = dict(ev, seed=ev["seed"] + int(label.get("seed") or 0))
    task = load_task(config, task_name)
    problems = read_jsonl(Path(data_dir) / "eval.jsonl")
    if benchmarks:
        problems = [p for p in problems if p["benchmark"] in benchmarks]
    t0 = time.time()
    rows, generation = generate_and_score(model, task, problems, cfg, device=config["base"]["device"],
                                          desc=f"eval {task_name} {label.get('model')}")
    with atomic_open(samples_path) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    manifest = json.loads((Path(model) / "model.json").read_text())
    summary, scaling = summarize(rows, task, lambda bench: samples_of(cfg, bench))
    seconds = time.time() - t0
    write_json(metrics_path, stamp(
        **label, task=task_name, benchmarks=summary, test_time_scaling=scaling, generation=generation,
        decoding=cfg, dataset_hash=dataset_hash(data_dir), model_config_hash=manifest.get("config_hash"),
        diff_from_base=manifest.get("diff_from_base"), eval_seconds=seconds,
        cost=job_cost(seconds, rule_gpus(config, "evaluate", task_name)[0], threads,
                      sum(r.get("tokens", 0) for r in rows), len(rows)),
        # What two evaluations that disagree are compared by: the model's files, and how the
        # answers were checked (code: zygote or fallback runner, timeouts; this process's checks).
        model_files_hash=_model_identity(Path(model)), scoring=task.scoring_report(),
    ))
