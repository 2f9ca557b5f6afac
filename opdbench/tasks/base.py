"""The task interface and registry (in the manner of lm-evaluation-harness).

A task knows how to write its data (train prompts, SFT solutions for tiny models,
evaluation benchmarks), how to turn a problem into chat messages, and how to score a
response. Rules and engines only ever talk to this interface, so adding a task never
adds a rule.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from opdbench.errors import ConfigError, unknown_name_error


@dataclass(frozen=True)
class Score:
    correct: bool
    answer: str | None  # the extracted final answer, None when nothing could be parsed


class Task:
    """Base class. Subclasses set ``name`` and implement the abstract methods."""

    name: str = ""
    # JSON schema of the task's ``generator`` block (tiny-scale data), checked at start-up.
    generator_schema: dict[str, Any] = {"type": "object"}

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    # -- data -------------------------------------------------------------------------
    def write_data(self, out_dir: Path, seed: int) -> dict[str, Any]:
        """Write train.jsonl, sft.jsonl and eval.jsonl into out_dir; return a manifest."""
        raise NotImplementedError

    # -- prompting --------------------------------------------------------------------
    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        raise NotImplementedError

    # -- scoring ----------------------------------------------------------------------
    def score(self, response: str, problem: dict[str, Any]) -> Score:
        raise NotImplementedError

    def score_many(self, responses: list[str], problems: list[dict[str, Any]]) -> list[Score]:
        return [self.score(r, p) for r, p in zip(responses, problems)]

    def same_answer(self, a: str, b: str) -> bool:
        """Equivalence used to group answers for Maj@k."""
        return a == b


TASKS: dict[str, Callable[[dict[str, Any]], Task]] = {}


def register_task(name: str):
    def wrap(cls):
        if name in TASKS:
            raise ConfigError(f"task '{name}' is registered twice")
        cls.name = name
        TASKS[name] = cls
        return cls

    return wrap


def get_task(name: str, cfg: dict[str, Any] | None = None) -> Task:
    from opdbench import tasks as _  # noqa: F401  (imports register the built-in tasks)

    if name not in TASKS:
        raise unknown_name_error("task", name, TASKS)
    return TASKS[name](cfg or {})


# -- small file helpers shared by every task -----------------------------------------
def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> str:
    """Write rows and return the sha256 of the bytes written."""
    h = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            line = json.dumps(row, sort_keys=True) + "\n"
            h.update(line.encode())
            f.write(line)
    return h.hexdigest()


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
