"""The task interface and registry (in the manner of lm-evaluation-harness).

A task knows how to write its data (train prompts, SFT solutions for tiny models,
evaluation benchmarks), how to turn a problem into chat messages, and how to score a
response. Rules and engines only ever talk to this interface, so adding a task never
adds a rule.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from opdbench.atomic import atomic_open
from opdbench.data.catalog import expand
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
    # JSON schema of the ``sft.writer`` block of a tiny model: how the writer of its SFT
    # solutions departs from the gold ones (``written_by``). A task without writers takes
    # none; a task with ``stop_early`` takes STOP_EARLY_WRITER.
    writer_schema: dict[str, Any] = {"type": "object", "additionalProperties": False}

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    # -- data -------------------------------------------------------------------------
    # The generator key that sets a problem's length, as [lo, hi] (math: steps, code: stages).
    length_key: str = ""

    def load_split(self, spec: dict[str, Any], rng: random.Random, exclude: set[str]) -> list[dict[str, Any]]:
        """The rows of one split: generated at tiny scale (distinct problems, none of whose
        ``problem`` texts is in ``exclude``), or loaded from the split's source."""
        if "generator" not in spec:
            return self.load_source(expand(spec))
        g = spec["generator"]
        lo, hi = g[self.length_key]
        return distinct_problems(rng, spec["size"], lambda r: self.generate(r, r.randint(lo, hi), g), exclude,
                                 f"{self.name} {self.length_key}={g[self.length_key]}")

    def generate(self, rng: random.Random, length: int, generator: dict[str, Any]) -> dict[str, Any]:
        """One tiny-scale problem of the given length: problem, answer, solution, ..."""
        raise NotImplementedError

    def load_source(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of a split read from a file or a named benchmark (paper scale)."""
        raise NotImplementedError

    def write_data(self, out_dir: Path, seed: int) -> dict[str, Any]:
        """Write train.jsonl and eval.jsonl (every benchmark) into out_dir; return a manifest."""
        rng = random.Random(seed)
        benchmarks: dict[str, list[dict[str, Any]]] = {}
        taken: set[str] = set()
        # Benchmarks first, so the train split can exclude every held-out problem.
        for bench, spec in self.cfg["benchmarks"].items():
            rows = self.load_split(spec, rng, taken)
            unscorable = sum(not self.for_problem(r).scorable(r) for r in rows)
            if unscorable:
                raise ConfigError(f"benchmark '{bench}': {unscorable} of its {len(rows)} rows have no reference answer "
                                  f"or tests to score a response against (prompts without them can only train)")
            taken |= {r["problem"] for r in rows}
            benchmarks[bench] = [{"benchmark": bench, "id": i, **r} for i, r in enumerate(rows)]
        train = self.load_split(self.cfg["train"], rng, taken)
        out_dir.mkdir(parents=True, exist_ok=True)
        hashes = {
            "train.jsonl": write_jsonl(out_dir / "train.jsonl", ({"id": i, **r} for i, r in enumerate(train))),
            "eval.jsonl": write_jsonl(out_dir / "eval.jsonl", (r for rows in benchmarks.values() for r in rows)),
        }
        return {"task": self.name, "seed": seed, "sha256": hashes,
                "sizes": {"train": len(train), **{b: len(r) for b, r in benchmarks.items()}}}

    def written_by(self, writer: dict[str, Any], rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
        """The SFT rows as ``writer`` would have written their solutions (a tiny model's
        training data); the gold rows when ``writer`` is empty. Deterministic in ``seed``.
        ``stop_early: p``: a share p of the solutions stops before its last step."""
        if not writer:
            return rows
        rng, p = random.Random(seed), writer.get("stop_early", 0.0)
        return [{**r, "solution": self.for_problem(r).stop_early(r["solution"], rng)} if rng.random() < p else r
                for r in rows]

    def stop_early(self, solution: str, rng: random.Random) -> str:
        """The solution as an under-thinking writer writes it: finished before its last step."""
        raise NotImplementedError(f"task '{self.name}' has no solution writers")

    def scorable(self, problem: dict[str, Any]) -> bool:
        """Whether a response to this row can be scored (a reference answer, tests): every benchmark row
        must be; a training prompt need not (OpenThoughts3's)."""
        return True

    def for_problem(self, problem: dict[str, Any]) -> "Task":
        """The task that formats and scores this row (a mixed task's domain; itself otherwise)."""
        return self

    # -- prompting --------------------------------------------------------------------
    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        raise NotImplementedError

    # -- scoring ----------------------------------------------------------------------
    def score(self, response: str, problem: dict[str, Any]) -> Score:
        raise NotImplementedError

    def score_many(self, responses: list[str], problems: list[dict[str, Any]]) -> list[Score]:
        return [self.score(r, p) for r, p in zip(responses, problems)]

    def scoring_report(self) -> dict[str, Any] | None:
        """How this process's scoring went, cumulative (code: the checker's paths and endings),
        recorded with each evaluation; None when there is nothing to say."""
        return None

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


# The writer of a task with ``Task.stop_early``: the share of multi-step solutions it stops early.
STOP_EARLY_WRITER = {
    "type": "object", "additionalProperties": False,
    "properties": {"stop_early": {"type": "number", "minimum": 0, "maximum": 1}},
}

# A generator's [lo, hi] problem length (math steps, code stages), for generator schemas.
LENGTH_RANGE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}


def get_task(name: str, cfg: dict[str, Any] | None = None) -> Task:
    from opdbench import tasks as _  # noqa: F401  (imports register the built-in tasks)

    if name not in TASKS:
        raise unknown_name_error("task", name, TASKS)
    return TASKS[name](cfg or {})


# -- small file helpers shared by every task -----------------------------------------
def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> str:
    """Write rows and return the sha256 of the bytes written."""
    h = hashlib.sha256()
    with atomic_open(path) as f:
        for row in rows:
            line = json.dumps(row, sort_keys=True) + "\n"
            h.update(line.encode())
            f.write(line)
    return h.hexdigest()


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a jsonl file (gzip-compressed when its name ends in .gz)."""
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def distinct_problems(rng: random.Random, size: int, make: Callable[[random.Random], dict[str, Any]],
                      exclude: set[str], what: str) -> list[dict[str, Any]]:
    """``size`` generated rows with distinct ``problem`` texts, none of them in ``exclude``."""
    rows, seen, tries = [], set(exclude), 0
    while len(rows) < size:
        tries += 1
        if tries > 50 * size:
            raise ConfigError(f"cannot generate {size} distinct problems with {what}")
        row = make(rng)
        if row["problem"] in seen:
            continue
        seen.add(row["problem"])
        rows.append(row)
    return rows
