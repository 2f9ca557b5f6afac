"""The DAG end to end at micro scale: outputs, provenance, lint, dry-run, bad config,
and a killed training job that resumes from its checkpoint."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import MICRO_CONFIG, REPO, planned_jobs, run_snakemake, snakemake_cmd

pytestmark = pytest.mark.slow


ALL_METHODS = ("opd", "eopd", "reopold", "exopd", "uniopd", "tropd")


def test_leaderboard_and_provenance(micro_workflow):
    md = (micro_workflow / "leaderboard.md").read_text()
    for row in ("| base student | 2 |", "| teacher | 2 |", *(f"| {m} | 2 |" for m in ALL_METHODS)):
        assert row in md, row
    assert "math_id Avg@2" in md and "math_long Pass@2" in md
    metrics = json.loads((micro_workflow / "eval/math/opd/seed1/metrics.json").read_text())
    for key in ("code_version", "dataset_hash", "decoding", "model_config_hash", "diff_from_base"):
        assert metrics[key] is not None, key
    assert metrics["decoding"]["n_samples"] == 2 and metrics["benchmarks"]["math_id"]["problems"] == 8
    run = json.loads((micro_workflow / "train/math/opd/seed1/run.json").read_text())
    assert run["diff_from_base"] == {"method": "opd", "hparams": {}, "hparams_changed": {}, "train": {}}
    steps = [json.loads(line) for line in (micro_workflow / "train/math/opd/seed1/metrics.jsonl").open()]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    for key in ("loss", "credit_mean", "credit_p05", "credit_p95", "entropy", "response_length", "grad_norm",
                "seconds_generation", "seconds_teacher", "seconds_update"):
        assert key in steps[0], key
    samples = [json.loads(line) for line in (micro_workflow / "eval/math/opd/seed1/samples.jsonl").open()]
    assert len(samples) == 2 * 16 and {"benchmark", "id", "sample", "response", "answer", "correct", "tokens"} <= set(samples[0])
    assert not (micro_workflow / "train/math/opd/seed1/checkpoints").exists()
    base = json.loads((micro_workflow / "eval/math/base/student/seed1/metrics.json").read_text())
    assert base["decoding"]["seed"] == metrics["decoding"]["seed"] == 1235  # paired with the runs' seed 1


def test_every_job_records_its_cost_and_the_experiment_sums_it(micro_workflow):
    import pandas as pd

    cost = pd.read_csv(micro_workflow / "tables/cost.csv")
    jobs = cost[cost.model != "total"]
    # 2 tasks: 2 model builds and a quality gate each, 12 runs, 16 evaluations
    assert jobs.groupby("rule").size().to_dict() == {"evaluate": 32, "model": 4, "quality_gate": 2, "train": 24}
    assert set(jobs.device) == {"cpu"} and (jobs.devices == 1).all() and (jobs.seconds > 0).all()
    assert (jobs.device_hours - jobs.seconds / 3600).abs().max() < 1e-5  # one core each (threads: 1)
    assert jobs.max_rss_mb.notna().all()  # from each job's benchmark file
    row = jobs[(jobs.rule == "evaluate") & (jobs.task == "math") & (jobs.model == "opd") & (jobs.seed == 1)].iloc[0]
    samples = [json.loads(line) for line in (micro_workflow / "eval/math/opd/seed1/samples.jsonl").open()]
    assert (row.generated_sequences, row.generated_tokens) == (len(samples), sum(s["tokens"] for s in samples))
    train = jobs[(jobs.rule == "train") & (jobs.model == "opd") & (jobs.task == "math") & (jobs.seed == 1)].iloc[0]
    assert train.generated_sequences == 4 * 8  # 4 steps x (4 prompts x 2 rollouts)
    total = cost[(cost.rule == "all") & (cost.model == "total")].iloc[0]
    assert total.device_hours == pytest.approx(jobs.device_hours.sum(), rel=1e-4)
    assert total.generated_tokens == jobs.generated_tokens.sum()
    md = (micro_workflow / "leaderboard.md").read_text()
    hours = json.loads((micro_workflow / "train/math/opd/seed0/run.json").read_text())["cost"]["device_hours"]
    assert "| train cost |" in md and "core-h |" in md and hours > 0


def test_code_task_trains_evaluates_and_ranks(micro_workflow):
    md = (micro_workflow / "leaderboard.md").read_text()
    assert "## code" in md and "code_id Avg@2" in md and "code_long Pass@2" in md
    metrics = json.loads((micro_workflow / "eval/code/tropd/seed0/metrics.json").read_text())
    assert metrics["decoding"]["max_new_tokens"] == 32  # the task's own evaluation settings
    samples = [json.loads(line) for line in (micro_workflow / "eval/code/tropd/seed0/samples.jsonl").open()]
    assert len(samples) == 2 * 16 and all(isinstance(s["correct"], bool) for s in samples)
    steps = [json.loads(line) for line in (micro_workflow / "train/code/uniopd/seed0/metrics.jsonl").open()]
    assert all(0 <= s["train_accuracy"] <= 1 for s in steps)  # outcomes from the sandbox


def test_figures_are_drawn_from_the_runs(micro_workflow):
    from opdbench.report.figures import CURVES, read_curves

    for name in ("math_training_curves.png", "code_training_curves.png", "leaderboard_deltas.png"):
        png = (micro_workflow / "figures" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name
    curves = read_curves(sorted((micro_workflow / "train/math").glob("*/seed*/metrics.jsonl")))
    assert sorted(curves.run.unique()) == sorted(ALL_METHODS) and sorted(curves.seed.unique()) == [0, 1]
    assert len(curves) == len(ALL_METHODS) * 2 * 4 and curves[[k for k, _ in CURVES]].notna().all().all()
    # REOPOLD Table 1 beside this experiment's OPD runs: the energy shares over steps 0-9 (all 4 micro steps).
    shares = read_curves(sorted((micro_workflow / "train/math/opd").glob("seed*/metrics.jsonl")),
                         [f"energy_share_bottom{q}" for q in (1, 5, 10)])
    mine = [f"{100 * shares.groupby('seed')[f'energy_share_bottom{q}'].mean().mean():.2f}" for q in (1, 5, 10)]
    tables = (micro_workflow / "tables/paper_tables.md").read_text()
    assert f"| Standard OPD (Math column) | opd | 95.90 | 97.10 | 98.40 |  | {' | '.join(mine)} |" in tables


@pytest.mark.parametrize("task", ["math", "code"])
def test_test_time_scaling_is_drawn_from_the_evaluations(micro_workflow, task):
    import pandas as pd

    png = (micro_workflow / f"figures/{task}_test_time_scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    table = pd.read_csv(micro_workflow / f"tables/{task}_test_time_scaling.csv")
    assert set(table.model) == {"student", "teacher", *ALL_METHODS} and sorted(table.k.unique()) == [1, 2]
    assert (table.seeds == 2).all() and (table.latency_s_mean > 0).all()
    for _, curve in table.groupby(["model", "benchmark"]):
        curve = curve.sort_values("k")
        assert curve.pass_mean.is_monotonic_increasing and curve.decode_steps_mean.is_monotonic_increasing
    # K = 1 is each evaluation's own Pass@1, and K = N its Pass@N and Maj@N (mean over seeds, in %).
    evals = [json.loads((micro_workflow / f"eval/{task}/opd/seed{k}/metrics.json").read_text()) for k in (0, 1)]
    bench = next(iter(evals[0]["benchmarks"]))
    row = table[(table.model == "opd") & (table.benchmark == bench)].set_index("k")
    for k, key in ((1, "pass@1"), (2, "pass@2")):
        assert row.loc[k, "pass_mean"] == pytest.approx(50 * sum(m["benchmarks"][bench][key] for m in evals))
    assert row.loc[2, "maj_mean"] == pytest.approx(50 * sum(m["benchmarks"][bench]["maj@2"] for m in evals))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_logs_the_shared_diagnostics(micro_workflow, name):
    steps = [json.loads(line) for line in (micro_workflow / f"train/math/{name}/seed0/metrics.jsonl").open()]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    for s in steps:
        assert sum(s["credit_hist"]) > 0 and 0 <= s["energy_share_bottom1"] <= s["energy_share_bottom10"] <= 1
        assert s["entropy"] >= 0 and math.isfinite(s["loss"])
    assert [s["step"] for s in steps if "retention" in s] == [0, 2, 3]
    assert all(s["retention"] < 0 for s in steps if "retention" in s)


def test_method_specific_scoring_reached_the_methods(micro_workflow):
    def steps(name):
        return [json.loads(line) for line in (micro_workflow / f"train/math/{name}/seed0/metrics.jsonl").open()]

    tropd = steps("tropd")
    assert tropd[0]["teacher_token_fraction"] > tropd[-1]["teacher_token_fraction"]  # cosine-annealed prefixes
    assert 0 < tropd[0]["trust_mean"] <= 1
    assert "train_accuracy" in steps("uniopd")[0] and "kept_mean" in steps("reopold")[0]
    assert "fkl_token_mean" in steps("eopd")[0]
    log = (micro_workflow / "logs/train/math_uniopd_seed0.log").read_text()
    assert "prompt pool: 8 prompts profiled" in log


def test_lint_and_dry_run(tmp_path):
    lint = run_snakemake(tmp_path, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    jobs = planned_jobs(run_snakemake(tmp_path, "-n").stdout)
    # 2 tasks; 2 roles; 6 methods x 2 seeds; (6 methods + 2 base models) x 2 seeds evaluated per task.
    assert jobs == {"make_data": 2, "tokenizer": 2, "model": 4, "quality_gate": 2, "train": 24, "evaluate": 32,
                    "training_curves": 2, "leaderboard": 1, "cost": 1, "test_time_scaling": 2,
                    "leaderboard_deltas": 1, "paper_tables": 1, "all": 1}, jobs


def test_a_config_edit_reruns_exactly_what_it_changes(micro_workflow, tmp_path):
    workdir = micro_workflow.parent.parent
    assert "Nothing to be done" in run_snakemake(workdir, "-n").stdout
    # The math student's SFT steps: that model, then everything trained or ranked from it.
    edit = tmp_path / "student.yaml"
    edit.write_text("task_settings: {math: {student: {sft: {steps: 11}}}}\n")
    dry = run_snakemake(workdir, "-n", configfiles=(MICRO_CONFIG, edit))
    jobs = planned_jobs(dry.stdout)
    assert "Params have changed" in dry.stdout
    # 1 model; 6 methods x 2 seeds of training; their 12 evaluations + the base student's 2.
    assert jobs == {"model": 1, "quality_gate": 1, "train": 12, "evaluate": 14, "leaderboard": 1, "cost": 1,
                    "training_curves": 1, "test_time_scaling": 1, "leaderboard_deltas": 1, "paper_tables": 1,
                    "all": 1}, jobs
    # A sandbox limit: only the code evaluations, no training.
    edit.write_text("task_settings: {code: {sandbox: {time_limit_s: 3.0}}}\n")
    jobs = planned_jobs(run_snakemake(workdir, "-n", configfiles=(MICRO_CONFIG, edit)).stdout)
    assert jobs == {"evaluate": 16, "test_time_scaling": 1, "leaderboard": 1, "cost": 1, "leaderboard_deltas": 1,
                    "paper_tables": 1, "all": 1}, jobs


def test_misspelled_method_stops_the_workflow_at_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [odp]\n")
    proc = run_snakemake(tmp_path, "-n", configfiles=(MICRO_CONFIG, bad), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown method 'odp'" in out and "Did you mean 'opd'?" in out
    assert "Valid methods: eopd, exopd, opd, reopold, tropd, uniopd; variants: clip_outlier," in out


def _training_pids(workdir: Path) -> list[int]:
    """The training scripts Snakemake runs in this workdir (not another test run's)."""
    marker = str(workdir / ".snakemake" / "scripts")
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd and ".train.py" in cmd and "python" in cmd:
                pids.append(int(proc.name))
    return pids


def _comparable(metrics_path: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics_path.open()]
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]


def test_killed_training_resumes_from_checkpoint(micro_workflow):
    workdir = micro_workflow.parent.parent
    # TrOPD: every source of randomness (teacher prefixes, Bernoulli trust masks) must replay.
    run_dir = micro_workflow / "train/math/tropd/seed7"
    target = str(run_dir.relative_to(workdir) / "run.json")
    configs = (MICRO_CONFIG, REPO / "tests" / "resume_config.yaml")
    proc = subprocess.Popen(snakemake_cmd(workdir, target, configfiles=configs, cores=1),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            for pid in _training_pids(workdir):
                os.kill(pid, signal.SIGKILL)
                killed = True
            if killed:
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=300)
    assert killed, "the training job finished before it could be killed:\n" + out
    assert proc.returncode != 0 and not (run_dir / "run.json").exists()
    saved = torch.load(ckpt, weights_only=False)["next_step"]
    assert 0 < saved < 40

    resumed = run_snakemake(workdir, target, configfiles=configs)
    log = (micro_workflow / "logs/train/math_tropd_seed7.log").read_text()
    assert f"resumed from checkpoint at step {saved}" in log, resumed.stdout[-2000:]
    resumed_metrics = _comparable(run_dir / "metrics.jsonl")
    assert [r["step"] for r in resumed_metrics] == list(range(40))
    resumed_weights = (run_dir / "model" / "model.safetensors").read_bytes()

    # The same run without interruption gives the same steps and the same weights.
    os.replace(run_dir, run_dir.with_name("seed7_resumed"))
    run_snakemake(workdir, target, configfiles=configs)
    assert _comparable(run_dir / "metrics.jsonl") == resumed_metrics
    assert (run_dir / "model" / "model.safetensors").read_bytes() == resumed_weights

    # A finished run whose outputs Snakemake removed (a Ctrl-C as it ended marks the job
    # incomplete; --force does the same) writes its records again without retraining.
    metrics_before = (run_dir / "metrics.jsonl").read_bytes()
    run_snakemake(workdir, target, "--force", configfiles=configs)
    log = (micro_workflow / "logs/train/math_tropd_seed7.log").read_text()
    assert "this run finished before with the same config and code" in log and "train tropd" not in log, log
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics_before and (run_dir / "run.json").exists()
    assert (run_dir / "model" / "model.safetensors").read_bytes() == resumed_weights


def test_distillation_budget_probe_runs_on_the_workflows_models(micro_workflow):
    workdir = micro_workflow.parent.parent
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "distillation_budget.py"), "--configfile",
                           str(MICRO_CONFIG), "--steps", "2", "--methods", "opd", "--eval-seeds", "1"],
                          cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if "math_id" in line]
    assert len(lines) == 4 and lines[0].strip().startswith("base student") and lines[1].strip().startswith("teacher")
    assert "gold SFT" in lines[2] and lines[3].strip().startswith("opd")
    base = json.loads((micro_workflow / "probes/math/base/eval_seed1.json").read_text())
    reference = json.loads((micro_workflow / "eval/math/base/student/seed1/metrics.json").read_text())
    assert base["benchmarks"] == reference["benchmarks"]  # the probe evaluates exactly as the workflow does
    teacher = json.loads((micro_workflow / "probes/math/teacher/eval_seed1.json").read_text())
    reference = json.loads((micro_workflow / "eval/math/base/teacher/seed1/metrics.json").read_text())
    assert teacher["benchmarks"] == reference["benchmarks"]
