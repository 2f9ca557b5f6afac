"""The DAG end to end at micro scale: outputs, provenance, lint, dry-run, bad config,
and a killed training job that resumes from its checkpoint."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import MICRO_CONFIG, REPO, run_snakemake, snakemake_cmd

pytestmark = pytest.mark.slow


def test_leaderboard_and_provenance(micro_workflow):
    md = (micro_workflow / "leaderboard.md").read_text()
    for row in ("base student", "teacher", "| 1 | opd | 2 |"):
        assert row in md
    assert "math_id Avg@2" in md and "math_long Pass@2" in md
    metrics = json.loads((micro_workflow / "eval/math/opd/seed1/metrics.json").read_text())
    for key in ("code_version", "dataset_hash", "decoding", "model_config_hash", "diff_from_base"):
        assert metrics[key] is not None, key
    assert metrics["decoding"]["n_samples"] == 2 and metrics["benchmarks"]["math_id"]["problems"] == 8
    run = json.loads((micro_workflow / "train/math/opd/seed1/run.json").read_text())
    assert run["diff_from_base"] == {"method": "opd", "hparams": {}, "train": {}}
    steps = [json.loads(line) for line in (micro_workflow / "train/math/opd/seed1/metrics.jsonl").open()]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    for key in ("loss", "credit_mean", "credit_p05", "credit_p95", "entropy", "response_length", "grad_norm",
                "seconds_generation", "seconds_teacher", "seconds_update"):
        assert key in steps[0], key
    samples = [json.loads(line) for line in (micro_workflow / "eval/math/opd/seed1/samples.jsonl").open()]
    assert len(samples) == 2 * 16 and {"benchmark", "id", "sample", "response", "answer", "correct", "tokens"} <= set(samples[0])
    assert not (micro_workflow / "train/math/opd/seed1/checkpoints").exists()


def test_lint_and_dry_run(tmp_path):
    lint = run_snakemake(tmp_path, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = run_snakemake(tmp_path, "-n")
    for rule in ("make_data", "tokenizer", "model", "train", "evaluate", "leaderboard"):
        assert rule in dry.stdout


def test_misspelled_method_stops_the_workflow_at_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [odp]\n")
    proc = run_snakemake(tmp_path, "-n", configfiles=(MICRO_CONFIG, bad), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown method 'odp'" in out and "Valid methods: opd" in out


def _training_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd and "python" in cmd:
                pids.append(int(proc.name))
    return pids


def _comparable(metrics_path: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics_path.open()]
    return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]


def test_killed_training_resumes_from_checkpoint(micro_workflow):
    workdir = micro_workflow.parent.parent
    run_dir = micro_workflow / "train/math/opd/seed7"
    target = str(run_dir.relative_to(workdir) / "run.json")
    configs = (MICRO_CONFIG, REPO / "tests" / "resume_config.yaml")
    proc = subprocess.Popen(snakemake_cmd(workdir, target, configfiles=configs, cores=1),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            for pid in _training_pids(".train.py"):
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
    log = (micro_workflow / "logs/train/math_opd_seed7.log").read_text()
    assert f"resumed from checkpoint at step {saved}" in log, resumed.stdout[-2000:]
    resumed_metrics = _comparable(run_dir / "metrics.jsonl")
    assert [r["step"] for r in resumed_metrics] == list(range(40))
    resumed_weights = (run_dir / "model" / "model.safetensors").read_bytes()

    # The same run without interruption gives the same steps and the same weights.
    os.replace(run_dir, run_dir.with_name("seed7_resumed"))
    run_snakemake(workdir, target, configfiles=configs)
    assert _comparable(run_dir / "metrics.jsonl") == resumed_metrics
    assert (run_dir / "model" / "model.safetensors").read_bytes() == resumed_weights
