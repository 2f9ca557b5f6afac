"""A task's train prompts in verl's RL dataset schema (verl/utils/dataset/rl_dataset.py, as
verl's examples/data_preprocess/gsm8k.py writes it): one parquet row per prompt with

    data_source   the task name (a mixed task's row: its domain, the task that scores it): verl routes a
                  sample to its teacher by it (distillation.teacher_key) and the reward function
                  (reward.py) scores it with that task
    prompt        the chat messages the task builds (Task.messages), as the local engine encodes them
    ability       the task name
    reward_model  {"style": "rule", "ground_truth": the problem row as JSON}: the task scores a
                  response against the whole row (code problems carry their tests)
    extra_info    {"split": "train", "index": position in train.jsonl (the suite's prompt index),
                   "id": the row's id}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opdbench.atomic import atomic_path

COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def data_source(task, row: dict[str, Any]) -> str:
    """A row's ``data_source``: a mixed task's row its domain (the task that scores it, the key of its
    teacher in a multi-teacher run), any other row the task's name."""
    return row.get("domain", task.name)


def verl_rows(task, rows: list[dict[str, Any]], split: str = "train",
              indices: list[int] | None = None) -> list[dict[str, Any]]:
    """``indices``: each row's prompt index (default its position; an upsampled pool repeats rows)."""
    indices = list(range(len(rows))) if indices is None else indices
    return [{
        "data_source": data_source(task, row),
        "prompt": task.messages(row),
        "ability": data_source(task, row),
        "reward_model": {"style": "rule", "ground_truth": json.dumps(row, sort_keys=True)},
        "extra_info": {"split": split, "index": index, "id": row.get("id", index)},
    } for index, row in zip(indices, rows)]


def write_parquet(task, rows: list[dict[str, Any]], path: str | Path, split: str = "train",
                  indices: list[int] | None = None) -> Path:
    """Write ``rows`` of ``task`` as verl's parquet at ``path`` (atomically); return the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(verl_rows(task, rows, split, indices))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def problem_of(ground_truth: str) -> dict[str, Any]:
    """The problem row back from a parquet row's reward_model.ground_truth."""
    return json.loads(ground_truth)
