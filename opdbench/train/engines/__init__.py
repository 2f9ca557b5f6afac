"""Training engines and their registry (in the manner of verl's registries).

An engine trains one run: it takes the resolved run, the task and its training rows, the
student and teacher, and the method, and writes ``metrics.jsonl`` (one row per step,
``opdbench.train.metrics_schema``), resumable checkpoints, and the trained student in HF
format. It declares which of ``opdbench.method.SCORING_NEEDS`` it can provide; a run whose
method needs one it lacks is refused when the workflow starts (``check_capabilities``).

What every engine shares (seeding, prompt sampling, the run's log and fixed state, teacher
prefixes, Uni-OPD's difficulty profile, per-step metrics, loss aggregation) lives in
``common``, ``losses`` and ``metrics_schema``; an engine module keeps only how it runs models.
Engine modules register themselves with ``@register_engine``; ``load_engines`` imports the
built-in ones.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from opdbench.errors import ConfigError, unknown_name_error

ENGINES: dict[str, type] = {}
# The engines this package ships (module names under opdbench/train/engines/).
BUILTIN = ("local", "verl")


@runtime_checkable
class Engine(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]  # drawn from opdbench.method.SCORING_NEEDS

    def __init__(self, run: dict[str, Any], task, train_rows: list[dict[str, Any]], student_ref: str,
                 teacher_ref: str, method, out_dir: Path, device: str = "cpu") -> None: ...

    def train(self) -> list[dict[str, Any]]:
        """Train every step, resuming from the run's last checkpoint if there is one; the
        metrics rows of all steps (exactly one per step)."""

    def save_model(self, path: Path) -> None:
        """The trained student (weights and tokenizer) in HF format."""


def register_engine(name: str):
    """Class decorator: ``@register_engine("local")`` on an engine class."""
    from opdbench.method import SCORING_NEEDS

    def wrap(cls):
        cls.name = name
        caps = getattr(cls, "capabilities", None)
        if not isinstance(caps, frozenset):
            raise ConfigError(f"engine '{name}' ({cls.__qualname__}) needs a class attribute 'capabilities' "
                              f"(a frozenset of {', '.join(SCORING_NEEDS)})")
        unknown = sorted(caps - set(SCORING_NEEDS))
        if unknown:
            raise ConfigError(f"engine '{name}' declares unknown capability '{unknown[0]}'. "
                              f"Valid: {', '.join(SCORING_NEEDS)}")
        missing = [m for m in ("train", "save_model") if not callable(getattr(cls, m, None))]
        if missing:
            raise ConfigError(f"engine '{name}' ({cls.__qualname__}) has no method '{missing[0]}'")
        if name in ENGINES and ENGINES[name].__qualname__ != cls.__qualname__:
            raise ConfigError(f"engine name '{name}' is registered twice: {ENGINES[name].__module__}."
                              f"{ENGINES[name].__qualname__} and {cls.__module__}.{cls.__qualname__}")
        ENGINES[name] = cls
        return cls

    return wrap


def load_engines() -> dict[str, type]:
    """The registry, with the built-in engines imported."""
    for module in BUILTIN:
        importlib.import_module(f"opdbench.train.engines.{module}")
    return ENGINES


def get_engine(name: str) -> type:
    engines = load_engines()
    if name not in engines:
        raise unknown_name_error("engine", name, engines)
    return engines[name]


def missing_capability(method_cls: type, engine_name: str, hparams: dict[str, Any] | None = None,
                       where: str | None = None) -> str | None:
    """Why a run of ``method_cls`` with ``hparams`` (its overrides of the method's defaults)
    cannot run on the engine (its first need the engine lacks), or None. A method's ``instead``
    (need -> (hyperparameter, value, what it does)) adds the setting that avoids the need, at the
    config key ``where`` (default ``method_settings.<method>``)."""
    engines = load_engines()
    engine = get_engine(engine_name)
    needs = method_cls.needs_of(method_cls.resolve_hparams(hparams or {}))
    lacking = sorted(set(needs) - engine.capabilities)
    if not lacking:
        return None
    need = lacking[0]
    providers = sorted(n for n, e in engines.items() if need in e.capabilities)
    have = ", ".join(providers) if providers else "none"
    message = (f"method '{method_cls.name}' needs '{need}', which engine '{engine_name}' does not provide "
               f"(engines that provide it: {have})")
    if need in getattr(method_cls, "instead", {}):
        key, value, what = method_cls.instead[need]
        message += f"; or set {where or f'method_settings.{method_cls.name}'}.{key}: {value} ({what})"
    return message


def check_capabilities(runs: list[tuple]) -> None:
    """Each (run name, method class, engine name[, the run's hyperparameter overrides]): raise
    ConfigError at the first run whose method needs what its engine lacks."""
    for run_name, method_cls, engine_name, *hparams in runs:
        where = f"variants.{run_name}" if run_name != method_cls.name else None
        message = missing_capability(method_cls, engine_name, *hparams, where=where)
        if message:
            where = f"run '{run_name}': " if run_name != method_cls.name else ""
            raise ConfigError(f"{where}{message}; config key 'base.engine'")
