"""Config: validation with errors that name the key, and the resolved config of each run.

The workflow validates the whole config at start-up (``validate_config``); each job then
resolves its own run config (``resolve_run``): the base settings, the method's own
hyperparameters, and the diff between the two, hashed for provenance.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from opdbench.errors import ConfigError, unknown_name_error

# The generation backend when the config names none (opdbench.evaluate.generation.BACKENDS); here so
# that reading a config does not import torch.
DEFAULT_BACKEND = "hf"

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


def load_yaml(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def deep_update(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (as snakemake merges --configfile over configfile)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def compose_config(default: dict[str, Any], overlays: list[dict[str, Any]],
                   command_line: dict[str, Any] | None = None) -> dict[str, Any]:
    """The workflow's config: ``default`` (config/config.yaml), each ``--configfile`` merged over it
    in order, then ``--config``. A file's ``replace`` paths (dotted) are taken as the file writes them
    instead of merged: a paper-scale experiment's task data, models or evaluation must not keep the
    tiny scale's generated benchmarks or model recipes beside its own."""
    out = copy.deepcopy(default)
    for overlay in overlays:
        out = deep_update(out, overlay)
        for dotted in overlay.get("replace") or []:
            keys, value = str(dotted).split("."), overlay
            for i, key in enumerate(keys):
                if not isinstance(value, dict) or key not in value:
                    raise ConfigError(f"config key 'replace': '{dotted}' is not set in the same file "
                                      f"('{'.'.join(keys[:i + 1])}' is missing)")
                value = value[key]
            target = out
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = copy.deepcopy(value)
    return deep_update(out, command_line or {})


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_message(err, prefix: tuple = ()) -> str:
    where = _key_path(prefix + tuple(err.absolute_path))
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
        msgs = []
        for k in extra:
            key = f"{where}.{k}" if prefix or err.absolute_path else k
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            msgs.append(f"unknown config key '{key}'.{hint} Valid keys here: {', '.join(allowed)}")
        if msgs:
            return "; ".join(msgs)
    if err.validator == "required":
        return f"config key '{where}' is missing a required entry: {err.message}"
    return f"config key '{where}': {err.message}"


def first_schema_error(schema: dict[str, Any], instance: Any, prefix: tuple = ()) -> str | None:
    import jsonschema

    errors = jsonschema.Draft202012Validator(schema).iter_errors(instance)
    errors = sorted(errors, key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    return _schema_message(errors[0], prefix) if errors else None


_SCALARS = {"integer": int, "number": (int, float), "boolean": bool}


def coerce_command_line(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """Snakemake reads a ``--config key=[0, 1]`` value with YAML's BaseLoader, so every
    scalar inside it is a string. Where the schema wants a number or a boolean, read such a
    string as YAML; anything that still does not fit is left for the schema to name. A schema
    that also takes a string (``where: {data_source: AIME2024}``) keeps the string. Snakemake
    hands a --configfile's values here too (parsed, so only true strings arrive as strings)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    types = [schema["type"]] if isinstance(schema.get("type"), str) else schema.get("type") or []
    if isinstance(instance, dict):
        for key, value in instance.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                instance[key] = coerce_command_line(value, sub, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        instance[:] = [coerce_command_line(item, schema["items"], root) for item in instance]
    elif isinstance(instance, str) and "string" not in types and any(t in _SCALARS for t in types):
        try:
            value = yaml.safe_load(instance)
        except yaml.YAMLError:
            return instance
        for kind in (t for t in types if t in _SCALARS):
            if isinstance(value, _SCALARS[kind]) and (kind == "boolean" or not isinstance(value, bool)):
                return value
    return instance


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_source(source: str, where: tuple) -> None:
    """A model source is "tiny" (built by the workflow), a local directory, or a hub id
    "org/name": a typo such as "tinyy" stops the workflow here, not in a hub download."""
    if source == "tiny" or Path(source).is_dir() or _HUB_ID.match(source):
        return
    close = difflib.get_close_matches(source, ["tiny"], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"config key '{_key_path(where)}': '{source}' is not 'tiny', an existing local directory, "
                      f"or a hub id 'org/name'.{hint}")


def validate_config(config: dict[str, Any], methods_dir: str | Path | None = None,
                    schema_path: str | Path = SCHEMA_PATH, command_line: tuple[str, ...] = (),
                    jobs_run_here: bool = True) -> None:
    """Raise ConfigError naming the first bad key, or an unknown method / task name.
    The top-level keys in ``command_line`` came from ``--config``: their numbers and
    booleans arrive as strings and are read in place first. ``jobs_run_here``: the jobs
    run in this Python environment (not in per-rule conda envs), so the generation
    backend they need must import here."""
    schema = load_yaml(schema_path)
    for key in command_line:
        if key in config and key in schema["properties"]:
            config[key] = coerce_command_line(config[key], schema["properties"][key], schema)
    message = first_schema_error(schema, config)
    if message:
        raise ConfigError(message)

    from opdbench.data.catalog import CATALOG, data_sources, split_list
    from opdbench.tasks import TASKS

    for task in config["tasks"]:
        if task not in TASKS and task not in config["task_settings"]:
            raise unknown_name_error("task", task, TASKS)
        if task not in config["task_settings"]:
            raise ConfigError(f"task '{task}' has no entry under 'task_settings'")
    for task, settings in config["task_settings"].items():
        kind = task_type(config, task)
        if kind not in TASKS:
            where = f"config key 'task_settings.{task}.task'" if "task" in settings else "task_settings"
            raise ConfigError(f"{where}: {unknown_name_error('task', kind, TASKS)}")
        data = settings["data"]
        if any("n_samples" in spec for spec in split_list(data["train"])):
            raise ConfigError(f"config key 'task_settings.{task}.data.train.n_samples': samples per problem are a "
                              "benchmark's (task_settings.<task>.data.benchmarks.<name>.n_samples), not the train split's")
        if isinstance(data["train"], list) and kind != "mixed":
            raise ConfigError(f"config key 'task_settings.{task}.data.train': a list of sources needs `task: mixed` "
                              f"(one training set of several tasks' prompts)")
        for split, spec in data_sources(data):
            key = f"task_settings.{task}.data.{split}"
            if "from" in spec and spec["from"] not in CATALOG:
                raise ConfigError(f"config key '{key}.from': {unknown_name_error('dataset', spec['from'], CATALOG)}")
            # A mixed task's sources each name the task that formats and scores them; others may repeat their own.
            source_kind = spec.get("task", None if kind == "mixed" else kind)
            if source_kind is None:
                raise ConfigError(f"config key '{key}' needs 'task': the task of these rows (one of "
                                  f"{', '.join(sorted(t for t in TASKS if t != 'mixed'))})")
            if source_kind not in TASKS or source_kind == "mixed" or (kind != "mixed" and source_kind != kind):
                valid = sorted(t for t in TASKS if t != "mixed") if kind == "mixed" else [kind]
                raise ConfigError(f"config key '{key}.task': '{source_kind}' is not valid here; valid: {', '.join(valid)}")
            # Each task checks its own generator keys, with the same messages as the schema.
            if "generator" in spec:
                prefix = ("task_settings", task, "data", *split.split("."), "generator")
                message = first_schema_error(TASKS[source_kind].generator_schema, spec["generator"], prefix)
                if message:
                    raise ConfigError(message)
        gate = settings.get("gate")
        if gate and gate["benchmark"] not in data["benchmarks"]:
            raise ConfigError(f"config key 'task_settings.{task}.gate.benchmark': "
                              f"{unknown_name_error('benchmark', gate['benchmark'], data['benchmarks'])}")
        domains = {spec.get("task") for _, spec in data_sources(data)}
        for role in ("teacher", "student"):
            for domain, spec in role_models(settings, role).items():
                where = ("task_settings", task, role) + (("by_domain", domain) if domain else ())
                check_model_source(spec["source"], where + ("source",))
                writer = spec.get("sft", {}).get("writer")
                if writer is not None:
                    message = first_schema_error(TASKS[kind].writer_schema, writer, where + ("sft", "writer"))
                    if message:
                        raise ConfigError(message)
            by_domain = set(role_models(settings, role)) - {None}
            if by_domain and (kind != "mixed" or by_domain != domains):
                need = f"one teacher for each of its domains ({', '.join(sorted(domains))})" if kind == "mixed" else \
                    "a mixed task (task: mixed), whose rows each name their domain"
                raise ConfigError(f"config key 'task_settings.{task}.{role}.by_domain' has teachers for "
                                  f"{', '.join(sorted(by_domain))}: a teacher per domain needs {need}")
    from opdbench.data.hub import hub_datasets, hub_models

    hub_models(config), hub_datasets(config)  # each hub repository at one revision
    if methods_dir is not None:
        from opdbench.registry import load_methods

        from opdbench.registry import RESERVED_NAMES

        methods = load_methods(methods_dir)
        for name, spec in config["variants"].items():
            if name in RESERVED_NAMES:
                raise ConfigError(f"variant name '{name}' is reserved for the models every method is compared with "
                                  f"({', '.join(RESERVED_NAMES)}); rename it (config key 'variants.{name}')")
            if name in methods:
                raise ConfigError(f"variant '{name}' has the name of a registered method; rename it")
            if spec["method"] not in methods:
                raise ConfigError(f"variant '{name}': {unknown_name_error('method', spec['method'], methods)}")
            methods[spec["method"]].resolve_hparams({k: v for k, v in spec.items() if k != "method"},
                                                    ("variants", name))
        for name, overrides in config.get("method_settings", {}).items():
            if name not in methods:
                raise ConfigError(f"method_settings: {unknown_name_error('method', name, methods)}")
            methods[name].resolve_hparams(overrides, ("method_settings", name))
        for name in config["methods"]:
            if name not in methods and name not in config["variants"]:
                raise unknown_name_error("method", name, methods, also={"variants": config["variants"]})
        check_engines(config, methods)
    if jobs_run_here:
        from opdbench.evaluate.generation import check_backend

        for task in config["tasks"]:
            check_backend(evaluation_settings(config, task)["backend"])
    base = config["base"]
    batch = base["prompts_per_step"] * base["rollouts_per_prompt"]
    if batch % base["mini_batch_size"]:
        raise ConfigError(f"config key 'base.mini_batch_size' ({base['mini_batch_size']}) must divide "
                          f"prompts_per_step * rollouts_per_prompt ({batch})")


def run_engine(config: dict[str, Any], method_cls: type) -> str:
    """The engine a run of ``method_cls`` trains on: ``base.engine``, or in paper mode the
    method's paper settings' engine if they name one."""
    train = {**config["base"], **(method_cls.paper_settings if config["mode"] == "paper" else {})}
    return train["engine"]


def check_engines(config: dict[str, Any], methods: dict[str, type]) -> None:
    """The engine is registered, and it provides what each listed run's method needs."""
    from opdbench.train.engines import check_capabilities, load_engines

    engines = load_engines()
    if config["base"]["engine"] not in engines:
        raise ConfigError(f"config key 'base.engine': {unknown_name_error('engine', config['base']['engine'], engines)}")
    runs = []
    for name in config["methods"]:
        variant = config["variants"].get(name, {})
        cls = methods[variant.get("method", name)]
        overrides = {**config.get("method_settings", {}).get(cls.name, {}),
                     **{k: v for k, v in variant.items() if k != "method"}}
        runs.append((name, cls, run_engine(config, cls), overrides))
    check_capabilities(runs)


def role_models(settings: dict[str, Any], role: str) -> dict[str | None, dict[str, Any]]:
    """A role's model specs: ``{None: spec}``, or a mixed task's teacher per domain
    (``teacher: {by_domain: {domain: spec}}``) as ``{domain: spec}``."""
    spec = settings[role]
    return dict(spec["by_domain"]) if "by_domain" in spec else {None: spec}


def task_type(config: dict[str, Any], task: str) -> str:
    """The registered task a ``task_settings`` entry is (its ``task`` key; default its own name)."""
    return config["task_settings"][task].get("task", task)


def evaluation_settings(config: dict[str, Any], task: str) -> dict[str, Any]:
    """The shared ``evaluation`` block with the task's own overrides (``task_settings.<task>.evaluation``:
    e.g. N = 4 samples for code, the papers' protocol), and the generation backend (default hf).
    ``samples_per_benchmark`` (``benchmark_samples``) only where a benchmark's N differs from
    ``n_samples``: a config with one N per task resolves as before."""
    settings = {"backend": DEFAULT_BACKEND, **config["evaluation"],
                **config["task_settings"].get(task, {}).get("evaluation", {})}
    per_benchmark = benchmark_samples(config, task, settings["n_samples"])
    if any(n != settings["n_samples"] for n in per_benchmark.values()):
        settings["samples_per_benchmark"] = per_benchmark
    return settings


def benchmark_samples(config: dict[str, Any], task: str, default: int | None = None) -> dict[str, int]:
    """Every benchmark of the task -> its samples per problem in evaluation: the benchmark's own
    ``n_samples`` (``task_settings.<task>.data.benchmarks.<name>.n_samples``, e.g. Avg@32 on AIME
    beside Pass@1 on MATH-500), else the task's ``evaluation.n_samples`` (``default``, when given)."""
    if default is None:
        default = evaluation_settings(config, task)["n_samples"]
    benchmarks = config["task_settings"].get(task, {}).get("data", {}).get("benchmarks", {})
    return {b: spec.get("n_samples", default) for b, spec in benchmarks.items()}


# A benchmark's keys that are the evaluation's, not its data's: they leave the data (its files,
# the data manifest's config hash and the data rule's params) as they were.
EVALUATION_KEYS = ("n_samples",)


def data_settings(config: dict[str, Any], task: str) -> dict[str, Any]:
    """The task's ``data`` block as its data is built from: without the benchmarks' evaluation
    keys (``EVALUATION_KEYS``), so setting a benchmark's N does not rebuild or re-hash its data."""
    data = config["task_settings"][task]["data"]
    if not any(k in spec for spec in data["benchmarks"].values() for k in EVALUATION_KEYS):
        return data
    return {**data, "benchmarks": {b: {k: v for k, v in spec.items() if k not in EVALUATION_KEYS}
                                   for b, spec in data["benchmarks"].items()}}


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_run(config: dict[str, Any], task: str, run_name: str, seed: int, methods_dir: str | Path) -> dict[str, Any]:
    """The full settings of one training run, with its diff from the unified base."""
    from opdbench.code_hash import method_code
    from opdbench.registry import get_method_class

    method_name, variant = run_name, {}
    if run_name in config["variants"]:
        spec = config["variants"][run_name]
        method_name = spec["method"]
        variant = {k: v for k, v in spec.items() if k != "method"}
    # The method's settings for this scale (method_settings), then the variant's own.
    overrides = {**config.get("method_settings", {}).get(method_name, {}), **variant}
    cls = get_method_class(method_name, methods_dir)
    hparams = cls.resolve_hparams(overrides)
    base = config["base"]
    train = dict(base)
    if config["mode"] == "paper":
        unknown = sorted(set(cls.paper_settings) - set(base))
        if unknown:
            raise ConfigError(f"method '{method_name}': paper_settings key '{unknown[0]}' is not a base setting")
        train.update(cls.paper_settings)
    diff = {
        "method": method_name,
        "hparams": hparams,
        "hparams_changed": {k: {"default": cls.defaults[k], "run": v} for k, v in hparams.items()
                            if cls.defaults[k] != v},
        "train": {k: {"base": base[k], "run": v} for k, v in train.items() if base[k] != v},
    }
    run = {"task": task, "run_name": run_name, "method": method_name, "seed": seed, "mode": config["mode"],
           "train": train, "hparams": hparams, "diff_from_base": diff,
           "code": method_code(cls, train["engine"])}  # an edit to the method or its training code reruns the run
    run["config_hash"] = canonical_hash(run)
    return run
