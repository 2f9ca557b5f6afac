"""The base models' quality gate: a broken teacher stops the workflow before any training."""
import json

import pytest

from opdbench.models.quality_gate import QualityGateError, check_base_models

from conftest import MICRO_CONFIG, run_snakemake


def metrics(path, avg, n=4, bench="code_id"):
    path.write_text(json.dumps({"decoding": {"n_samples": n}, "benchmarks": {bench: {f"avg@{n}": avg}}}))
    return path


def test_the_gate_passes_and_records_the_scores(tmp_path):
    record = check_base_models("code", {"benchmark": "code_id", "min_teacher": 60, "min_margin": 30},
                               metrics(tmp_path / "t.json", 0.90), metrics(tmp_path / "s.json", 0.168))
    assert record["passed"] and record["teacher"] == pytest.approx(90.0) and record["margin"] == pytest.approx(73.2)


@pytest.mark.parametrize("teacher, student, message", [
    (0.511, 0.712, r"the teacher scores 51\.1, below min_teacher 60; the teacher is -20\.1 points from the student "
                   r"\(51\.1 against 71\.2\), below min_margin 30"),
    (0.70, 0.45, r"the teacher is \+25\.0 points from the student \(70\.0 against 45\.0\), below min_margin 30"),
])
def test_a_teacher_below_the_expectation_fails_with_the_scores(tmp_path, teacher, student, message):
    with pytest.raises(QualityGateError, match=r"task 'code' fail the quality gate \(task_settings\.code\.gate\) "
                                               r"on code_id Avg@4, evaluation seed 0: " + message):
        check_base_models("code", {"benchmark": "code_id", "min_teacher": 60, "min_margin": 30},
                          metrics(tmp_path / "t.json", teacher), metrics(tmp_path / "s.json", student))


@pytest.mark.slow
def test_a_deliberately_broken_teacher_stops_the_workflow_before_training(tmp_path):
    """An untrained teacher (SFT at lr 1e-9) fails the gate; no method is trained from it."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("tasks: [math]\nmethods: [opd]\nseeds: [0]\ntask_settings: {math: {"
                      "teacher: {sft: {lr: 1.0e-9}}, gate: {benchmark: math_id, min_teacher: 5}}}\n")
    proc = run_snakemake(tmp_path, configfiles=(MICRO_CONFIG, broken), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "the base models of task 'math' fail the quality gate (task_settings.math.gate) on math_id Avg@2" in out
    assert "the teacher scores 0.0, below min_teacher 5" in out and "set it to null" in out
    assert not list((tmp_path / "results/micro/train").glob("**/run.json"))
    assert not (tmp_path / "results/micro/logs/train").exists()  # no training job started
