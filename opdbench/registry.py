"""The method registry (in the manner of verl's loss and estimator registries).

Method files live in ``methods/`` (one per method). ``load_methods`` imports every
``methods/*.py``; each file registers its class with ``@register_method``. Rules and
engines only ever look methods up here, so a new file is a new method everywhere.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from opdbench.errors import ConfigError, unknown_name_error

METHODS: dict[str, type] = {}
_LOADED_DIRS: set[Path] = set()
# Names the results tree and the leaderboard use for the models every method is compared
# with (results/.../eval/<task>/base/{student,teacher}): no method or variant may take them.
RESERVED_NAMES = ("base", "student", "teacher")


def register_method(cls):
    """Class decorator: ``@register_method`` on a ``Method`` subclass with a ``name``."""
    name = getattr(cls, "name", "")
    if not name or not isinstance(name, str):
        raise ConfigError(f"{cls.__qualname__} needs a class attribute 'name' to be registered")
    from opdbench.method import SCORING_NEEDS

    unknown = sorted(set(getattr(cls, "needs", ())) - set(SCORING_NEEDS))
    if unknown:
        raise ConfigError(f"method '{name}' needs unknown scoring '{unknown[0]}'. Valid: {', '.join(SCORING_NEEDS)}")
    if name in RESERVED_NAMES:
        raise ConfigError(f"method name '{name}' ({_source(cls)}) is reserved for the models every method is "
                          f"compared with ({', '.join(RESERVED_NAMES)}); rename it")
    _check_schema(cls, name)
    if name in METHODS and _source(METHODS[name]) != _source(cls):
        raise ConfigError(
            f"method name '{name}' is registered twice: {_source(METHODS[name])} and {_source(cls)}. "
            "Rename one of them."
        )
    METHODS[name] = cls
    return cls


def _check_schema(cls, name: str) -> None:
    """Every hyperparameter has a schema entry, and the defaults fit it."""
    from opdbench.config import first_schema_error

    schema = getattr(cls, "schema", {})
    missing = sorted(set(cls.defaults) - set(schema))
    if missing:
        raise ConfigError(f"method '{name}' ({_source(cls)}) declares no schema for hyperparameter '{missing[0]}': "
                          f"add it to the class's `schema`, e.g. {{'{missing[0]}': {{'type': 'number', 'minimum': 0}}}}")
    extra = sorted(set(schema) - set(cls.defaults))
    if extra:
        raise ConfigError(f"method '{name}' ({_source(cls)}): schema entry '{extra[0]}' has no default")
    message = first_schema_error(cls.hparam_schema(), dict(cls.defaults), ("method", name, "defaults"))
    if message:
        raise ConfigError(f"method '{name}' ({_source(cls)}): its defaults do not fit its schema: {message}")


def _source(cls) -> str:
    try:
        return inspect.getfile(cls)
    except TypeError:
        return cls.__module__


def load_methods(methods_dir: str | Path) -> dict[str, type]:
    """Import every method file in ``methods_dir`` once; return the registry."""
    methods_dir = Path(methods_dir).resolve()
    if not methods_dir.is_dir():
        raise ConfigError(f"methods_dir '{methods_dir}' is not a directory")
    if methods_dir in _LOADED_DIRS:
        return METHODS
    for path in sorted(methods_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"opdbench_methods.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            raise
        except Exception as e:  # a broken user file names itself
            raise ConfigError(f"method file {path} failed to import: {type(e).__name__}: {e}") from e
    _LOADED_DIRS.add(methods_dir)
    return METHODS


def script_methods_dir(config: dict, script_dir: str | Path) -> Path:
    """``methods_dir`` of the config, relative to the workflow's directory, for a rule's
    script in ``<workflow>/workflow/scripts`` (Snakemake may report that folder unresolved)."""
    return Path(script_dir).resolve().parents[1] / config["methods_dir"]


def get_method_class(name: str, methods_dir: str | Path) -> type:
    load_methods(methods_dir)
    if name not in METHODS:
        raise unknown_name_error("method", name, METHODS)
    return METHODS[name]
