"""A benchmark's own N (``data.benchmarks.<name>.n_samples``, e.g. Avg@32 on AIME beside
Pass@1 on MATH-500): the config resolves it without touching the data, the evaluation draws
each N with one generate call and scores each benchmark with its own N, and the leaderboard,
the paper tables and the quality gate read each benchmark's N."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from opdbench.config import (benchmark_samples, canonical_hash, data_settings, deep_update, evaluation_settings,
                             load_yaml, validate_config)
from opdbench.errors import ConfigError
from opdbench.evaluate.generation import Completion, Generation
from opdbench.models.quality_gate import QualityGateError, check_base_models, evaluate_base_models
from opdbench.pipeline import evaluate, load_task
from opdbench.report.leaderboard import write_leaderboard
from opdbench.report.paper_tables import render_table
from opdbench.tasks.base import write_jsonl

from conftest import MICRO_CONFIG, REPO, tiny

CONFIG = deep_update(load_yaml(REPO / "config" / "config.yaml"), load_yaml(MICRO_CONFIG))


def mixed_config(aime_n: int | None = None, math500_n: int | None = 1) -> dict:
    """Task math with N = 4 (the task's) on aime and, by default, N = 1 on math500."""
    config = copy.deepcopy(CONFIG)
    config["task_settings"]["math"]["evaluation"] = {"n_samples": 4}
    gen = {"generator": {"steps": [1, 2], "max_value": 20, "max_operand": 5}, "size": 8}
    config["task_settings"]["math"]["data"]["benchmarks"] = {
        "aime": dict(gen, **({"n_samples": aime_n} if aime_n is not None else {})),
        "math500": dict(gen, **({"n_samples": math500_n} if math500_n is not None else {}))}
    return config


# -- config ---------------------------------------------------------------------------------
def test_each_benchmark_has_its_own_n_or_the_tasks():
    config = mixed_config()
    assert benchmark_samples(config, "math") == {"aime": 4, "math500": 1}
    assert evaluation_settings(config, "math")["samples_per_benchmark"] == {"aime": 4, "math500": 1}
    assert evaluation_settings(config, "math")["n_samples"] == 4  # the task's stays the default
    # One N per task (every shipped config; or a benchmark that repeats the task's): as before.
    assert benchmark_samples(CONFIG, "code") == {"code_id": 2, "code_long": 2}
    assert "samples_per_benchmark" not in evaluation_settings(CONFIG, "math")
    assert "samples_per_benchmark" not in evaluation_settings(mixed_config(aime_n=4, math500_n=4), "math")


def test_a_benchmarks_n_leaves_its_data_as_it_was():
    plain, mixed = mixed_config(math500_n=None), mixed_config(aime_n=32)
    assert data_settings(plain, "math") is plain["task_settings"]["math"]["data"]  # untouched
    assert data_settings(mixed, "math") == plain["task_settings"]["math"]["data"]
    assert canonical_hash(data_settings(mixed, "math")) == canonical_hash(plain["task_settings"]["math"]["data"])
    assert all("n_samples" not in spec for spec in load_task(mixed, "math").cfg["benchmarks"].values())
    assert mixed["task_settings"]["math"]["data"]["benchmarks"]["aime"]["n_samples"] == 32  # the config kept


def test_the_schema_rejects_a_benchmark_n_of_zero_and_an_n_on_the_train_split():
    validate_config(mixed_config(aime_n=32))
    with pytest.raises(ConfigError, match=r"config key 'task_settings\.math\.data\.benchmarks\.aime\.n_samples': "
                                          r"0 is less than the minimum of 1"):
        validate_config(mixed_config(aime_n=0))
    config = mixed_config()
    config["task_settings"]["math"]["data"]["train"]["n_samples"] = 4
    with pytest.raises(ConfigError, match=r"'task_settings\.math\.data\.train\.n_samples': samples per problem are a "
                                          r"benchmark's"):
        validate_config(config)


# -- evaluation -----------------------------------------------------------------------------
class FakeGenerate:
    """generate(): per prompt n completions; sample 0 answers 7 (right), the others 3;
    sample j has j + 1 tokens, the last one truncated."""

    def __init__(self):
        self.calls = []

    def __call__(self, model_ref, prompts, spec, *, backend, batch_size, keys, device, tokenizer, desc):
        self.calls.append({"n": spec.n, "keys": list(keys), "prompts": len(prompts), "seed": spec.seed,
                           "temperature": spec.temperature, "top_p": spec.top_p, "max_tokens": spec.max_tokens})
        completions = [[Completion([1] * (j + 1), f"The answer is \\boxed{{{7 if j == 0 else 3}}}.",
                                   "length" if j == spec.n - 1 and j else "stop") for j in range(spec.n)]
                       for _ in prompts]
        return Generation(completions, {"seconds": 1.0, "decode_steps": spec.n, "parameters": 10,
                                        "seconds_per_decode_step": 1.0 / spec.n, "backend": backend,
                                        "backend_version": "0"})


@pytest.fixture
def fake_eval(tmp_path, monkeypatch):
    """A model directory (the tiny tokenizer; generate is faked), the data of two aime and
    three math500 problems, and the fake generate."""
    tok, _ = tiny(tmp_path)
    model = tmp_path / "model"
    tok.save_pretrained(model)
    (model / "model.json").write_text(json.dumps({"weights": ".", "config_hash": "h"}))
    data = tmp_path / "data"
    data.mkdir()
    problems = [{"benchmark": b, "id": i, "problem": f"What is 3 + {4 + i}?", "answer": "7"}
                for b, count in (("aime", 2), ("math500", 3)) for i in range(count)]
    (data / "manifest.json").write_text(json.dumps({"sha256": {"eval.jsonl": write_jsonl(data / "eval.jsonl", problems)}}))
    fake = FakeGenerate()
    monkeypatch.setattr("opdbench.evaluate.evaluation.generate", fake)
    return model, data, fake


def run_evaluation(config, model, data, out):
    evaluate(config, "math", model, data, out / "samples.jsonl", out / "metrics.json",
             {"model": "student", "seed": 1, "kind": "reference"})
    return json.loads((out / "metrics.json").read_text()), [json.loads(line) for line in open(out / "samples.jsonl")]


def test_the_evaluation_draws_each_n_once_and_scores_each_benchmark_with_its_own(fake_eval, tmp_path):
    model, data, fake = fake_eval
    metrics, rows = run_evaluation(mixed_config(), model, data, tmp_path / "mixed")
    seed = CONFIG["evaluation"]["seed"] + 1
    settings = {"seed": seed, "temperature": 0.6, "top_p": 0.95, "max_tokens": CONFIG["evaluation"]["max_new_tokens"]}
    assert fake.calls == [{"n": 4, "keys": ["aime/0", "aime/1"], "prompts": 2, **settings},
                          {"n": 1, "keys": ["math500/0", "math500/1", "math500/2"], "prompts": 3, **settings}]
    # The rows keep the problems' order; each problem has its benchmark's N samples.
    assert [(r["benchmark"], r["id"], r["sample"]) for r in rows] == \
        [("aime", i, j) for i in range(2) for j in range(4)] + [("math500", i, 0) for i in range(3)]
    assert [r["correct"] for r in rows] == [True, False, False, False] * 2 + [True] * 3
    aime, math500 = metrics["benchmarks"]["aime"], metrics["benchmarks"]["math500"]
    assert aime == {"avg@4": 0.25, "pass@1": 0.25, "pass@4": 1.0, "maj@4": 0.0,  # 3 outvotes 7 in every draw of 4
                    "mean_tokens": 2.5, "truncated": 0.25, "problems": 2, "samples_per_problem": 4}
    assert math500 == {"avg@1": 1.0, "pass@1": 1.0, "maj@1": 1.0, "mean_tokens": 1.0, "truncated": 0.0,
                       "problems": 3, "samples_per_problem": 1}
    assert metrics["test_time_scaling"]["aime"]["k"] == [1, 2, 4] and metrics["test_time_scaling"]["math500"]["k"] == [1]
    assert metrics["decoding"]["n_samples"] == 4
    assert metrics["decoding"]["samples_per_benchmark"] == {"aime": 4, "math500": 1}
    assert metrics["cost"]["generated_sequences"] == 11 and metrics["cost"]["generated_tokens"] == 2 * 10 + 3
    assert metrics["generation"]["seconds"] == 2.0 and metrics["generation"]["decode_steps"] == 5


def test_one_n_per_task_is_one_generate_call_and_no_per_benchmark_record(fake_eval, tmp_path):
    model, data, fake = fake_eval
    metrics, rows = run_evaluation(mixed_config(math500_n=None), model, data, tmp_path / "one")
    assert [(c["n"], c["prompts"]) for c in fake.calls] == [(4, 5)] and len(rows) == 20
    assert "samples_per_benchmark" not in metrics["decoding"]
    assert {b: m["samples_per_problem"] for b, m in metrics["benchmarks"].items()} == {"aime": 4, "math500": 4}
    assert metrics["generation"] == {"seconds": 1.0, "decode_steps": 4, "parameters": 10, "seconds_per_decode_step": 0.25,
                                     "backend": "hf", "backend_version": "0"}


def test_the_gate_evaluates_its_benchmark_with_that_benchmarks_n(fake_eval, tmp_path):
    model, data, fake = fake_eval
    config = mixed_config(aime_n=32)
    config["task_settings"]["math"]["gate"] = {"benchmark": "math500", "min_teacher": 50}
    record = evaluate_base_models(config, "math", data, model, model, tmp_path / "gate")
    assert [(c["n"], c["prompts"]) for c in fake.calls] == [(1, 3), (1, 3)]  # teacher, student
    assert record["samples_per_problem"] == 1 and record["teacher"] == 100.0 and record["passed"]


# -- readers of N ---------------------------------------------------------------------------
def gate_metrics(path, avg, bench="math500", n=1, task_n=32, own=True):
    """A metrics file whose benchmark has N = n beside the task's task_n (``own``: the file
    records samples_per_problem; else, as an older file, only decoding.samples_per_benchmark)."""
    values = {f"avg@{n}": avg, **({"samples_per_problem": n} if own else {})}
    decoding = {"n_samples": task_n, **({} if own else {"samples_per_benchmark": {bench: n, "aime": task_n}})}
    path.write_text(json.dumps({"decoding": decoding, "benchmarks": {bench: values}}))
    return path


@pytest.mark.parametrize("own", [True, False])
def test_the_quality_gate_reads_the_benchmarks_own_n(tmp_path, own):
    spec = {"benchmark": "math500", "min_teacher": 60, "min_margin": 30}
    record = check_base_models("math", spec, gate_metrics(tmp_path / "t.json", 0.9, own=own),
                               gate_metrics(tmp_path / "s.json", 0.2, own=own))
    assert record["teacher"] == pytest.approx(90.0) and record["margin"] == pytest.approx(70.0)
    assert record["samples_per_problem"] == 1
    with pytest.raises(QualityGateError, match=r"on math500 Avg@1, evaluation seed 0: the teacher scores 50\.0"):
        check_base_models("math", spec, gate_metrics(tmp_path / "t.json", 0.5, own=own),
                          gate_metrics(tmp_path / "s.json", 0.1, own=own))


# Avg@N per (model, benchmark) for seeds 0 and 1; aime N = 32, math500 N = 1. By aime alone
# eopd would rank first; by the mean over both benchmarks opd does (0.55 against 0.50).
AVG = {("student", "aime"): (0.10, 0.20), ("student", "math500"): (0.40, 0.60),
       ("opd", "aime"): (0.20, 0.20), ("opd", "math500"): (0.80, 1.00),
       ("eopd", "aime"): (0.40, 0.60), ("eopd", "math500"): (0.50, 0.50)}
N = {"aime": 32, "math500": 1}


def mixed_metrics(root) -> list:
    files = []
    for model in ("student", "opd", "eopd"):
        for seed in (0, 1):
            benchmarks = {}
            for bench, n in N.items():
                avg = AVG[(model, bench)][seed]
                benchmarks[bench] = {f"avg@{n}": avg, f"pass@{n}": min(1.0, 2 * avg), "pass@1": avg, f"maj@{n}": avg,
                                     "mean_tokens": 10.0, "truncated": 0.0, "problems": 5, "samples_per_problem": n}
            path = root / f"{model}_{seed}.json"
            path.write_text(json.dumps({"task": "math", "model": model, "seed": seed,
                                        "kind": "reference" if model == "student" else "method",
                                        "benchmarks": benchmarks, "code_version": "v", "dataset_hash": "d",
                                        "decoding": {"n_samples": 32, "samples_per_benchmark": N}}))
            files.append(path)
    return files


def test_the_leaderboard_shows_and_ranks_each_benchmark_with_its_own_n(tmp_path):
    config = mixed_config(aime_n=32)
    config["task_settings"]["math"]["evaluation"] = {"n_samples": 32, "temperature": 0.6, "top_p": 0.95}
    md, csv = tmp_path / "leaderboard.md", tmp_path / "leaderboard.csv"
    write_leaderboard(mixed_metrics(tmp_path), md, csv, config)
    text = md.read_text()
    assert "N = 32 (aime), 1 (math500) samples per problem; temperature 0.6, top-p 0.95" in text
    assert ("| rank | model | seeds | train cost | aime Avg@32 | aime Pass@32 | aime Δ Avg@32 | math500 Avg@1 | "
            "math500 Pass@1 | math500 Δ Avg@1 |") in text
    # opd: aime 20.0 ± 0.0, Δ +5.0 ± 7.1 (0.10, 0.00); math500 90.0 ± 14.1, Δ +40.0 ± 0.0.
    assert "| 1 | opd | 2 |  | 20.0 ± 0.0 | 40.0 ± 0.0 | +5.0 ± 7.1 | 90.0 ± 14.1 | 90.0 ± 14.1 | +40.0 ± 0.0 |" in text
    assert "| 2 | eopd | 2 |  | 50.0 ± 14.1 | 90.0 ± 14.1 | +35.0 ± 7.1 | 50.0 ± 0.0 | 50.0 ± 0.0 | +0.0 ± 14.1 |" in text
    assert "|  | base student | 2 |  | 15.0 ± 7.1 | 30.0 ± 14.1 |  | 50.0 ± 14.1 | 50.0 ± 14.1 |  |" in text
    s = pd.read_csv(csv).set_index(["model", "benchmark"])
    assert s.loc[("opd", "aime"), "avg@32_mean"] == pytest.approx(0.2) and math.isnan(s.loc[("opd", "aime"), "avg@1_mean"])
    assert s.loc[("opd", "math500"), "avg@1_mean"] == pytest.approx(0.9) and math.isnan(s.loc[("opd", "math500"), "avg@32_mean"])
    assert s.loc[("eopd", "math500"), "delta_avg_mean"] == pytest.approx(0.0)
    assert s.loc[("opd", "aime"), "delta_avg_mean"] == pytest.approx(0.05)

    # The paper table beside it: each benchmark's own Avg@N.
    table = {"paper": "REOPOLD", "citation": "c", "source": "s", "verified": True, "caption": "Math.",
             "setup": {"task": "math", "metric": "Avg@32 / Pass@1"}, "columns": ["AIME24", "MATH500"],
             "rows": [{"label": "Student", "method": None, "role": "student", "values": {"AIME24": 20.0, "MATH500": 70.0}},
                      {"label": "OPD", "method": "opd", "role": "method", "values": {"AIME24": 25.0, "MATH500": 80.0}}]}
    rendered, _ = render_table("t", table, pd.read_csv(csv))
    assert ("| row | suite run | AIME24 | MATH500 | published score | aime avg@32 (this run) | "
            "math500 avg@1 (this run) | this run's mean |") in rendered
    assert "| OPD | opd | 25.00 | 80.00 | 52.50 | 20.0 | 90.0 | 55.0 |" in rendered
    assert "| Student | student | 20.00 | 70.00 | 45.00 | 15.0 | 50.0 | 32.5 |" in rendered


def test_a_benchmark_evaluated_with_two_ns_is_named(tmp_path):
    files = mixed_metrics(tmp_path)
    stale = json.loads(files[0].read_text())
    stale["benchmarks"]["math500"] = dict(stale["benchmarks"]["math500"], samples_per_problem=4, **{"avg@4": 0.1})
    files[0].write_text(json.dumps(stale))
    with pytest.raises(ValueError, match=r"different samples per problem \{'math500': \[1, 4\]\}"):
        write_leaderboard(files, tmp_path / "l.md", tmp_path / "l.csv", mixed_config(aime_n=32))
