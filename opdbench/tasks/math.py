"""Math: generated multi-step word problems at tiny scale; local files at paper scale.

Scoring is math-verify's ``verify(parse(gold), parse(response))`` (gold first), never
string equality. A response with no parsable answer scores wrong.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError
from opdbench.tasks.base import Score, Task, register_task, write_jsonl
from opdbench.tasks.sources import load_problems

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

NAMES = ["Ann", "Ben", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou"]
ITEMS = ["apples", "pens", "cards", "stamps", "books", "shells", "coins", "beads", "eggs", "cups"]


def _step(rng: random.Random, name: str, item: str, x: int, max_value: int, max_operand: int):
    """One story step applied to the running count x: (sentence, worked lines, new x)."""
    choices = []
    if x < max_value:
        choices += ["add", "add"]
    if x > 1:
        choices += ["sub", "sub"]
    if 2 <= x <= max_value // 2:
        choices.append("double")
    if x + 4 <= max_value:
        choices.append("boxes")
    kind = rng.choice(choices)
    if kind == "add":
        k = rng.randint(1, min(max_operand, max_value - x))
        verb = rng.choice(["buys", "finds", "gets"])
        return f"{name} {verb} {k} more.", [f"{x} + {k} = {x + k}."], x + k
    if kind == "sub":
        k = rng.randint(1, min(max_operand, x - 1))
        other = rng.choice([n for n in NAMES if n != name])
        sentence = rng.choice([f"{name} gives {k} to {other}.", f"{name} loses {k}."])
        return sentence, [f"{x} - {k} = {x - k}."], x - k
    if kind == "double":
        return f"{name} doubles the {item}.", [f"{x} * 2 = {2 * x}."], 2 * x
    # boxes: a product, then a sum (two lines of work for one sentence)
    a = rng.choice([a for a in (2, 3) if x + 2 * a <= max_value])
    b = rng.randint(2, max(2, min(max_operand, (max_value - x) // a)))
    return (
        f"{name} buys {a} boxes with {b} {item} each.",
        [f"{a} * {b} = {a * b}.", f"{x} + {a * b} = {x + a * b}."],
        x + a * b,
    )


def generate_problem(rng: random.Random, steps: int, max_value: int, max_operand: int) -> dict[str, Any]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    x = rng.randint(2, min(20, max_value))
    story, work = [f"{name} has {x} {item}."], []
    for _ in range(steps):
        sentence, lines, x = _step(rng, name, item, x, max_value, max_operand)
        story.append(sentence)
        work += lines
    story.append(f"How many {item} does {name} have now?")
    solution = " ".join(work) + f" The answer is \\boxed{{{x}}}."
    return {"problem": " ".join(story), "answer": str(x), "solution": solution, "steps": steps}


def generate_split(rng: random.Random, size: int, steps: list[int], max_value: int, max_operand: int,
                   exclude: set[str]):
    rows, seen, tries = [], set(exclude), 0
    while len(rows) < size:
        tries += 1
        if tries > 50 * size:
            raise ConfigError(f"math generator cannot make {size} distinct problems with steps={steps}")
        row = generate_problem(rng, rng.randint(steps[0], steps[1]), max_value, max_operand)
        if row["problem"] in seen:
            continue
        seen.add(row["problem"])
        rows.append(row)
    return rows


@register_task("math")
class MathTask(Task):
    """Config (``tasks.math``): ``train`` and each of ``benchmarks`` is either
    ``{generator: {steps: [lo, hi], max_value: N, max_operand: N}, size: N}`` (tiny scale) or a local
    file ``{path: ..., problem_key: ..., answer_key: ...}`` (paper scale)."""

    generator_schema = {
        "type": "object", "additionalProperties": False, "required": ["steps", "max_value", "max_operand"],
        "properties": {
            "steps": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
            "max_value": {"type": "integer", "minimum": 4},
            "max_operand": {"type": "integer", "minimum": 1},
        },
    }

    def write_data(self, out_dir: Path, seed: int) -> dict[str, Any]:
        rng = random.Random(seed)
        benchmarks: dict[str, list[dict[str, Any]]] = {}
        taken: set[str] = set()
        # Benchmarks first, so the train split can exclude every held-out problem.
        for bench, spec in self.cfg["benchmarks"].items():
            rows = self._load(spec, rng, taken)
            taken |= {r["problem"] for r in rows}
            benchmarks[bench] = [{"benchmark": bench, "id": i, **r} for i, r in enumerate(rows)]
        train = self._load(self.cfg["train"], rng, taken)
        out_dir.mkdir(parents=True, exist_ok=True)
        hashes = {
            "train.jsonl": write_jsonl(out_dir / "train.jsonl", ({"id": i, **r} for i, r in enumerate(train))),
            "eval.jsonl": write_jsonl(out_dir / "eval.jsonl", (r for rows in benchmarks.values() for r in rows)),
        }
        return {"task": self.name, "seed": seed, "sha256": hashes,
                "sizes": {"train": len(train), **{b: len(r) for b, r in benchmarks.items()}}}

    @staticmethod
    def _load(spec: dict[str, Any], rng: random.Random, exclude: set[str]) -> list[dict[str, Any]]:
        if "generator" in spec:
            g = spec["generator"]
            return generate_split(rng, spec["size"], g["steps"], g["max_value"], g["max_operand"], exclude)
        return load_problems(spec)

    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{problem['problem']} {MATH_INSTRUCTION}"}]

    def score(self, response: str, problem: dict[str, Any]) -> Score:
        from math_verify import parse, verify

        try:
            pred = parse(response)
            if not pred:
                return Score(False, None)
            gold = parse(f"${problem['answer']}$")
            return Score(bool(verify(gold, pred)), str(pred[-1]))
        except Exception:  # a pathological answer is scored wrong, never a crash
            return Score(False, None)

    def same_answer(self, a: str, b: str) -> bool:
        from math_verify import parse, verify

        try:
            return a == b or bool(verify(parse(f"${a}$"), parse(f"${b}$")))
        except Exception:
            return False
