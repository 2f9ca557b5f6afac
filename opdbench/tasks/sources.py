"""Loading problems from local files (paper scale: datasets fetched into resources/)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError


def load_problems(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``{"problem", "answer"}`` from a jsonl, json or parquet file.

    ``spec``: ``path``, and optionally ``problem_key`` / ``answer_key`` (defaults
    ``problem`` / ``answer``), ``records_key`` for a json file whose rows sit under a key,
    and ``limit``.
    """
    if "path" not in spec:
        raise ConfigError(f"a data source needs 'generator' or 'path', got keys {sorted(spec)}")
    path = Path(spec["path"])
    if not path.exists():
        raise ConfigError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        records = pd.read_parquet(path).to_dict("records")
    elif path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        records = json.loads(path.read_text())
        if spec.get("records_key"):
            records = records[spec["records_key"]]
    pk, ak = spec.get("problem_key", "problem"), spec.get("answer_key", "answer")
    rows = []
    for i, r in enumerate(records[: spec.get("limit")]):
        if pk not in r or ak not in r:
            raise ConfigError(f"{path}: row {i} lacks '{pk}' or '{ak}' (keys: {sorted(r)})")
        rows.append({"problem": str(r[pk]), "answer": str(r[ak])})
    return rows
