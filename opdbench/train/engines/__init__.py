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


def missing_capability(method_cls: type, engine_name: str) -> str | None:
    """Why ``method_cls`` cannot run on the engine (its first need the engine lacks), or None."""
    engines = load_engines()
    engine = get_engine(engine_name)
    lacking = sorted(set(method_cls.needs) - engine.capabilities)
    if not lacking:
        return None
    need = lacking[0]
    providers = sorted(n for n, e in engines.items() if need in e.capabilities)
    have = ", ".join(providers) if providers else "none"
    return (f"method '{method_cls.name}' needs '{need}', which engine '{engine_name}' does not provide "
            f"(engines that provide it: {have})")


def check_capabilities(runs: list[tuple[str, type, str]]) -> None:
    """Each (run name, method class, engine name): raise ConfigError at the first run whose
    method needs what its engine lacks."""
    for run_name, method_cls, engine_name in runs:
        message = missing_capability(method_cls, engine_name)
        if message:
            where = f"run '{run_name}': " if run_name != method_cls.name else ""
            raise ConfigError(f"{where}{message}; config key 'base.engine'")
