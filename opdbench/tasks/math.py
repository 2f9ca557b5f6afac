"""Math: generated multi-step word problems at tiny scale; local files at paper scale.

Scoring is math-verify's ``verify(parse(gold), parse(response))`` (gold first), never
string equality. A response with no parsable answer scores wrong.
"""
from __future__ import annotations

import random
import re
from typing import Any

from opdbench.tasks.base import LENGTH_RANGE, STOP_EARLY_WRITER, Score, Task, register_task
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


STRAY_DELIMITER = re.compile(r"\\?\$")  # a dollar sign (\$) or a math delimiter ($) inside an answer
WORK_LINE = re.compile(r"\d+ [-+*] \d+ = (\d+)\.")


def stop_early(solution: str, rng: random.Random) -> str:
    """The worked solution cut after a random line of work before its last, answering with
    that line's result: the writer answers before it has finished (under-thinking)."""
    lines = list(WORK_LINE.finditer(solution))
    if len(lines) < 2:
        return solution
    last = lines[rng.randint(1, len(lines) - 1) - 1]
    return solution[:last.end()] + f" The answer is \\boxed{{{last.group(1)}}}."


@register_task("math")
class MathTask(Task):
    """Config (``tasks.math``): ``train`` and each of ``benchmarks`` is either
    ``{generator: {steps: [lo, hi], max_value: N, max_operand: N}, size: N}`` (tiny scale) or a local
    file ``{path: ..., problem_key: ..., answer_key: ...}`` (paper scale)."""

    generator_schema = {
        "type": "object", "additionalProperties": False, "required": ["steps", "max_value", "max_operand"],
        "properties": {
            "steps": LENGTH_RANGE,
            "max_value": {"type": "integer", "minimum": 4},
            "max_operand": {"type": "integer", "minimum": 1},
        },
    }
    writer_schema = STOP_EARLY_WRITER

    length_key = "steps"

    def generate(self, rng: random.Random, length: int, generator: dict[str, Any]) -> dict[str, Any]:
        return generate_problem(rng, length, generator["max_value"], generator["max_operand"])

    def load_source(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        return load_problems(spec)

    def stop_early(self, solution: str, rng: random.Random) -> str:
        return stop_early(solution, rng)

    def scorable(self, problem: dict[str, Any]) -> bool:
        return bool(str(problem.get("answer", "")).strip())

    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{problem['problem']} {MATH_INSTRUCTION}"}]

    def score(self, response: str, problem: dict[str, Any]) -> Score:
        from math_verify import parse, verify

        try:
            pred = parse(response)
            if not pred:
                return Score(False, None)
            # Some datasets' answers carry stray math delimiters or a full stop (LUFFY's Minerva and
            # OlympiadBench rows), others a dollar sign (\$18.90): either would break the $...$ the
            # gold is parsed in.
            gold = parse(f"${STRAY_DELIMITER.sub('', problem['answer']).strip().rstrip('.')}$")
            return Score(bool(verify(gold, pred)), str(pred[-1]))
        except Exception:  # a pathological answer is scored wrong, never a crash
            return Score(False, None)

    def same_answer(self, a: str, b: str) -> bool:
        from math_verify import parse, verify

        try:
            return a == b or bool(verify(parse(f"${a}$"), parse(f"${b}$")))
        except Exception:
            return False
