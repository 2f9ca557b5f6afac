"""The tiny code task: generated problems, prompts, and scoring through the sandbox."""
import random

import pytest

from opdbench.config import load_yaml, validate_config
from opdbench.errors import ConfigError
from opdbench.tasks import get_task
from opdbench.tasks.base import read_jsonl
from opdbench.tasks.code import CODE_INSTRUCTION, generate_problem

from conftest import METHODS_DIR, REPO

SPEC = {
    "train": {"generator": {"stages": [1, 2], "tests": 5}, "size": 60},
    "benchmarks": {
        "code_id": {"generator": {"stages": [1, 2], "tests": 5}, "size": 10},
        "code_long": {"generator": {"stages": [3, 4], "tests": 5}, "size": 10},
    },
    "sandbox": {"time_limit_s": 2.0, "memory_mb": 512, "workers": 2},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("code_data")
    task = get_task("code", SPEC)
    manifest = task.write_data(out, seed=0)
    return task, manifest, read_jsonl(out / "train.jsonl"), read_jsonl(out / "eval.jsonl")


def test_generated_splits_are_disjoint_and_deterministic(data, tmp_path):
    task, manifest, train, evals = data
    assert manifest["sizes"] == {"train": 60, "code_id": 10, "code_long": 10}
    assert not {r["problem"] for r in train} & {r["problem"] for r in evals}
    assert {r["stages"] for r in evals if r["benchmark"] == "code_long"} <= {3, 4}
    again = get_task("code", SPEC).write_data(tmp_path, seed=0)
    assert again["sha256"] == manifest["sha256"]


def test_problem_reference_and_tests_agree():
    row = generate_problem(random.Random(3), stages=3, n_tests=6, max_len=6, max_value=20)
    assert row["problem"].startswith(f"Write a Python function `{row['entry_point']}(xs)`")
    assert row["solution"] == f"```python\n{row['reference']}```"
    ns = {}
    exec(row["reference"], ns)
    fn = ns[row["entry_point"]]
    assert row["tests"]["inputs"][0] == [[]]  # the empty list is always a test
    assert [fn(*args) for args in row["tests"]["inputs"]] == row["tests"]["expected"]


def test_prompt_uses_the_papers_instruction(data):
    task, _, train, _ = data
    (message,) = task.messages(train[0])
    assert message["role"] == "user" and message["content"].endswith(CODE_INSTRUCTION)


def test_scoring_runs_the_last_code_block(data):
    task, _, _, evals = data
    row = evals[0]
    good = f"Here is a first try:\n```python\ndef {row['entry_point']}(xs):\n    return None\n```\nFixed:\n{row['solution']}"
    wrong = f"```python\ndef {row['entry_point']}(xs):\n    return 12345\n```"
    crash = f"```python\ndef {row['entry_point']}(xs):\n    return xs[10**9]\n```"
    scores = task.score_many([row["solution"], good, wrong, crash, "no code here", "```python\ndef (:\n```"],
                             [row] * 6)
    assert [s.correct for s in scores] == [True, True, False, False, False, False]
    assert scores[0].answer.startswith(f"def {row['entry_point']}") and scores[4].answer is None


def test_every_reference_solution_scores_correct(data):
    task, _, train, evals = data
    rows = train[:20] + evals
    assert all(s.correct for s in task.score_many([r["solution"] for r in rows], rows))


def test_misspelled_generator_key_is_named():
    config = load_yaml(REPO / "config" / "config.yaml")
    config["task_settings"]["code"]["data"]["benchmarks"]["code_long"]["generator"]["stage"] = [4, 5]
    with pytest.raises(ConfigError, match=r"task_settings\.code\.data\.benchmarks\.code_long\.generator\.stage'.*"
                                          r"Did you mean 'stages'"):
        validate_config(config, METHODS_DIR)


def test_unknown_task_settings_entry_lists_the_tasks():
    config = load_yaml(REPO / "config" / "config.yaml")
    config["task_settings"]["cod"] = config["task_settings"]["code"]
    with pytest.raises(ConfigError, match="code.*math"):
        validate_config(config, METHODS_DIR)


def test_the_configs_sandbox_limits_reach_the_checker():
    """The config's limits change real verdicts: a correct solution that sleeps 0.6 s per test
    passes under the config's limits and fails under a lowered time_limit_s; one that holds
    300 MB passes, and fails under a lowered memory_mb."""
    from opdbench.pipeline import load_task

    config = load_yaml(REPO / "config" / "config.yaml")
    row = generate_problem(random.Random(3), stages=2, n_tests=2, max_len=4, max_value=9)
    name = row["entry_point"]
    wrap = f"```python\n{row['reference']}\nimport time\n_right = {name}\ndef {name}(xs):\n    {{}}\n    return _right(xs)\n```"
    slow = wrap.format("time.sleep(0.6)")
    big = wrap.format("held = bytearray(300 << 20)")
    sandbox = config["task_settings"]["code"]["sandbox"]
    assert sandbox["time_limit_s"] >= 1.0 and sandbox["memory_mb"] >= 512
    scores = lambda *codes: [s.correct for s in load_task(config, "code").score_many(codes, [row] * len(codes))]  # noqa: E731
    assert scores(slow, big) == [True, True]
    config["task_settings"]["code"]["sandbox"] = {**sandbox, "time_limit_s": 0.3}
    assert scores(slow) == [False]
    config["task_settings"]["code"]["sandbox"] = {**sandbox, "memory_mb": 128}
    assert scores(slow, big) == [True, False]


def test_an_under_thinking_writer_returns_before_its_last_stage():
    """``sft.writer.stop_early``: the solution keeps its first stages (at least one, never
    all of a multi-stage one) and its reduction; the checker then finds it wrong unless the
    dropped stages do nothing on the tests."""
    task = get_task("code", SPEC)
    rng = random.Random(3)
    rows = [generate_problem(rng, rng.randint(1, 4), 5, 6, 20) for _ in range(200)]
    assert task.written_by({}, rows, seed=0) == rows
    written = task.written_by({"stop_early": 1.0}, rows, seed=0)
    assert written == task.written_by({"stop_early": 1.0}, rows, seed=0)  # deterministic in the seed
    wrong = 0
    for gold, row in zip(rows, written):
        assert {k: v for k, v in row.items() if k != "solution"} == {k: v for k, v in gold.items() if k != "solution"}
        gold_lines, lines = gold["solution"].split("\n"), row["solution"].split("\n")
        stages = [line for line in gold_lines if line.startswith("    xs = ")]
        kept = [line for line in lines if line.startswith("    xs = ")]
        if len(stages) == 1:
            assert row["solution"] == gold["solution"]
            continue
        assert 1 <= len(kept) < len(stages) and kept == stages[:len(kept)]
        assert [line for line in lines if not line.startswith("    xs = ")] == \
            [line for line in gold_lines if not line.startswith("    xs = ")]  # def, return, fences
        wrong += not task.score(row["solution"], row).correct
    multi = sum(gold["stages"] > 1 for gold in rows)
    assert wrong > 0.6 * multi  # a dropped stage changes the output on most tests
    half = task.written_by({"stop_early": 0.5}, rows, seed=0)
    share = sum(h["solution"] != r["solution"] for h, r in zip(half, rows) if r["stages"] > 1) / multi
    assert 0.4 < share < 0.6


def test_the_checker_reports_how_each_check_ran(data):
    """Evaluation records which runner forked each check and how it ended, so that two
    evaluations that disagree can be told apart (a fallback path, timeouts under load)."""
    task, _, _, problems = data
    before = task.scoring_report()["checks"]
    responses = [problems[0]["solution"], "```python\nraise SystemExit(3)\n```"]
    scores = task.score_many(responses, problems[:2])
    assert [s.correct for s in scores] == [True, False]
    report = task.scoring_report()
    after = report["checks"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    assert sum(v for k, v in delta.items() if k.startswith("path:")) == 2
    assert delta.get("ending:done", 0) >= 1 and sum(v for k, v in delta.items() if k.startswith("ending:")) == 2
    assert report["limits"] == SPEC["sandbox"] and report["layers"]
