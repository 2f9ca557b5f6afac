"""Shared fixtures. The project's tests folder is not a package (verl installs one named
`tests`), so helpers live here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opdbench.method import ScoredBatch
from opdbench.models import build_tiny_model, train_tokenizer
from opdbench.train.rollout import Sequences

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
MICRO_CONFIG = REPO / "tests" / "micro_config.yaml"
METHODS_DIR = REPO / "methods"
# The base settings a method's loss reads (the rest of `base` is the engine's).
BASE_TRAIN = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": None, "loss_agg_mode": "token-mean"}

torch.set_num_threads(1)


def scored_batch(logOld, logT, mask=None, entropy=None, group=None, **extras) -> ScoredBatch:
    """A hand-made scored batch: per-token tensors [B, T]; extras as the engine names them."""
    B, T = logOld.shape
    mask = torch.ones(B, T) if mask is None else mask
    ids = torch.zeros((B, T), dtype=torch.long)
    seqs = Sequences(ids, torch.ones_like(ids), torch.zeros_like(ids), ids, mask)
    return ScoredBatch(seqs, logOld, logT, torch.zeros(B, T) if entropy is None else entropy,
                       torch.arange(B) if group is None else group, dict(extras))


def tiny(tmp_path):
    """A 2-layer Qwen2 with a BPE tokenizer trained on a few sentences (untrained weights)."""
    texts = ["Ann has 3 pens. How many pens does Ann have now?", "3 + 4 = 7. The answer is \\boxed{7}.",
             "user", "assistant"] * 20
    tok = train_tokenizer(texts, 300, tmp_path / "tok")
    model = build_tiny_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 2}, tok, seed=0)
    return tok, model.eval()


def snakemake_cmd(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", configfiles=(MICRO_CONFIG,),
                  cores: int = 2) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(workdir), "--cores", str(cores), *args,
            "--configfile", *map(str, configfiles)]


def run_snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", configfiles=(MICRO_CONFIG,),
                  timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(workdir, *args, snakefile=snakefile, configfiles=configfiles)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def micro_workflow(tmp_path_factory) -> Path:
    """The whole DAG at micro scale, run once per test session."""
    workdir = tmp_path_factory.mktemp("micro")
    run_snakemake(workdir)
    return workdir / "results" / "micro"


def planned_jobs(dry_run_stdout: str) -> dict[str, int]:
    """The 'Job stats' table of `snakemake -n`: rule -> job count."""
    table = dry_run_stdout.split("Job stats:")[1].strip().split("\n\n")[0]
    rows = (line.split() for line in table.splitlines()[2:])
    return {row[0]: int(row[1]) for row in rows if row[0] != "total"}
