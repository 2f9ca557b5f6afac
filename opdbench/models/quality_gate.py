"""The base models' quality gate: before any method distils a teacher into a student, both
are evaluated on one held-out benchmark (the task's evaluation settings, seed
``evaluation.seed``, as the leaderboard's seed 0) and must meet the config's expectation,
``task_settings.<task>.gate``:

    gate: {benchmark: code_id, min_teacher: 60, min_margin: 30}

``min_teacher``: the teacher's Avg@N (the benchmark's N) at least this (percent);
``min_margin``: the teacher at least this many points above the student. A model that came out broken (an SFT that
diverged, a swapped or stale model file) then stops the workflow with one message instead
of letting every training run distil from it.

The rule reads the gate from the config when it runs rather than from its params: it
reruns when the models or the data change (and training with it), not when only the gate
or the decoding is edited, which would otherwise retrain every run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError
from opdbench.provenance import write_json


class QualityGateError(RuntimeError):
    """The base models fail the gate; the message names the task, the scores and the key."""


def _avg(metrics: dict[str, Any], benchmark: str, where: Path) -> tuple[float, int]:
    """The benchmark's Avg@N in %, and its N (the benchmark's own, as it was evaluated)."""
    from opdbench.evaluate.metrics import evaluated_samples

    if benchmark not in metrics["benchmarks"]:
        raise ConfigError(f"gate benchmark '{benchmark}' is not a benchmark of the task; valid: "
                          f"{', '.join(sorted(metrics['benchmarks']))} ({where})")
    n = evaluated_samples(metrics, benchmark)
    return 100.0 * metrics["benchmarks"][benchmark][f"avg@{n}"], n


def evaluate_base_models(config: dict[str, Any], task_name: str, data_dir: str | Path, teacher: str | Path,
                         student: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Evaluate teacher and student on the gate's benchmark and check them; the record."""
    from opdbench.config import evaluation_settings
    from opdbench.evaluate.evaluation import generate_and_score, summarize
    from opdbench.evaluate.metrics import samples_of
    from opdbench.pipeline import load_task
    from opdbench.tasks.base import read_jsonl

    spec = config["task_settings"][task_name].get("gate") or {}
    if not spec:
        return {"task": task_name, "gate": None, "passed": True}
    cfg = evaluation_settings(config, task_name)
    task = load_task(config, task_name)
    problems = [p for p in read_jsonl(Path(data_dir) / "eval.jsonl") if p["benchmark"] == spec["benchmark"]]
    paths = {}
    for role, model in (("teacher", teacher), ("student", student)):
        rows, _ = generate_and_score(model, task, problems, cfg, device=config["base"]["device"],
                                     desc=f"gate {task_name} {role}")
        benchmarks, _ = summarize(rows, task, lambda bench: samples_of(cfg, bench))
        paths[role] = Path(out_dir) / f"{role}.json"
        write_json(paths[role], {"decoding": cfg, "benchmarks": benchmarks})
    return check_base_models(task_name, spec, paths["teacher"], paths["student"])


def check_base_models(task: str, spec: dict[str, Any], teacher_metrics: str | Path,
                      student_metrics: str | Path) -> dict[str, Any]:
    """The gate's record (scores, thresholds, passed) from the two models' metrics files;
    raises QualityGateError on a failure."""
    teacher = json.loads(Path(teacher_metrics).read_text())
    student = json.loads(Path(student_metrics).read_text())
    record: dict[str, Any] = {"task": task, "gate": spec, "passed": True}
    if not spec:
        return record
    bench = spec["benchmark"]
    (t, n), (s, _) = _avg(teacher, bench, Path(teacher_metrics)), _avg(student, bench, Path(student_metrics))
    record.update(teacher=t, student=s, margin=t - s, samples_per_problem=n)
    failures = []
    if "min_teacher" in spec and t < spec["min_teacher"]:
        failures.append(f"the teacher scores {t:.1f}, below min_teacher {spec['min_teacher']}")
    if "min_margin" in spec and t - s < spec["min_margin"]:
        failures.append(f"the teacher is {t - s:+.1f} points from the student ({t:.1f} against {s:.1f}), "
                        f"below min_margin {spec['min_margin']}")
    if failures:
        raise QualityGateError(
            f"the base models of task '{task}' fail the quality gate (task_settings.{task}.gate) on {bench} "
            f"Avg@{n}, evaluation seed 0: {'; '.join(failures)}. No method is trained from them. Check the "
            f"models' SFT (sft_curve in their model.json) and the evaluations {teacher_metrics} and "
            f"{student_metrics}; to run anyway, lower the gate or set it to null.")
    return record
