"""The tiny math task: correct worked solutions, held-out splits, math-verify scoring."""
import random
import re

import pytest

from opdbench.tasks import get_task
from opdbench.tasks.base import read_jsonl
from opdbench.tasks.math import MATH_INSTRUCTION, generate_problem

CFG = {
    "seed": 0,
    "train": {"generator": {"steps": [1, 3], "max_value": 20, "max_operand": 5}, "size": 300},
    "benchmarks": {
        "math_id": {"generator": {"steps": [1, 3], "max_value": 20, "max_operand": 5}, "size": 40},
        "math_long": {"generator": {"steps": [4, 5], "max_value": 20, "max_operand": 5}, "size": 40},
    },
}


def test_worked_solutions_are_correct_arithmetic():
    rng = random.Random(1)
    for _ in range(500):
        p = generate_problem(rng, rng.randint(1, 5), 20, 5)
        lines = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", p["solution"])
        assert len(lines) >= p["steps"]
        for a, op, b, c in lines:
            assert eval(f"{a} {op} {b}") == int(c)
        assert p["solution"].endswith(f"\\boxed{{{p['answer']}}}.")
        assert 0 <= int(p["answer"]) <= 20


def test_an_under_thinking_writer_answers_with_an_earlier_lines_result():
    task = get_task("math", CFG)
    rng = random.Random(2)
    rows = [generate_problem(rng, rng.randint(1, 3), 20, 5) for _ in range(400)]
    assert task.written_by({}, rows, seed=0) == rows
    assert task.written_by({"stop_early": 0.0}, rows, seed=0) == rows
    written = task.written_by({"stop_early": 1.0}, rows, seed=0)
    assert written == task.written_by({"stop_early": 1.0}, rows, seed=0)  # deterministic in the seed
    for gold, row in zip(rows, written):
        assert {k: v for k, v in row.items() if k != "solution"} == {k: v for k, v in gold.items() if k != "solution"}
        lines = re.findall(r"\d+ [-+*] \d+ = (\d+)\.", gold["solution"])
        kept = re.findall(r"\d+ [-+*] \d+ = (\d+)\.", row["solution"])
        if len(lines) == 1:  # nothing to stop before
            assert row["solution"] == gold["solution"]
            continue
        assert 1 <= len(kept) < len(lines) and gold["solution"].startswith(row["solution"].split(" The answer")[0])
        assert row["solution"].endswith(f"The answer is \\boxed{{{kept[-1]}}}.")
    # about half of the multi-line solutions at 0.5
    half = task.written_by({"stop_early": 0.5}, rows, seed=0)
    multi = [i for i, r in enumerate(rows) if len(re.findall(" = ", r["solution"])) > 1]
    share = sum(half[i]["solution"] != rows[i]["solution"] for i in multi) / len(multi)
    assert 0.4 < share < 0.6


def test_splits_are_disjoint_deterministic_and_hashed(tmp_path):
    task = get_task("math", CFG)
    m1 = task.write_data(tmp_path / "a", seed=0)
    m2 = task.write_data(tmp_path / "b", seed=0)
    assert m1["sha256"] == m2["sha256"]
    train = {r["problem"] for r in read_jsonl(tmp_path / "a" / "train.jsonl")}
    ev = read_jsonl(tmp_path / "a" / "eval.jsonl")
    assert not train & {r["problem"] for r in ev}
    assert {r["benchmark"] for r in ev} == {"math_id", "math_long"}
    long_steps = [r["steps"] for r in ev if r["benchmark"] == "math_long"]
    assert min(long_steps) >= 4


def test_prompt_is_the_papers_instruction():
    task = get_task("math", CFG)
    msg = task.messages({"problem": "Ann has 2 pens. How many pens does Ann have now?"})
    assert msg == [{"role": "user", "content": f"Ann has 2 pens. How many pens does Ann have now? {MATH_INSTRUCTION}"}]


@pytest.mark.parametrize("response,correct", [
    ("2 + 3 = 5. The answer is \\boxed{5}.", True),
    ("The answer is \\boxed{5.0}.", True),
    ("The answer is \\boxed{\\frac{10}{2}}.", True),
    ("The answer is \\boxed{6}.", False),
    ("no final answer here", False),
    ("\\boxed{", False),
    ("", False),
    ("\\boxed{" * 200 + "}" * 3, False),
])
def test_math_verify_scoring(response, correct):
    task = get_task("math", CFG)
    score = task.score(response, {"answer": "5"})
    assert score.correct is correct
    if not correct and "boxed{6}" not in response:
        assert score.answer is None or score.answer != "5"


def test_same_answer_uses_equivalence():
    task = get_task("math", CFG)
    assert task.same_answer("5", "5.0") and task.same_answer("1/2", "0.5") and not task.same_answer("5", "6")
