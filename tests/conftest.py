"""Shared fixtures. The project's tests folder is not a package (verl installs one named
`tests`), so helpers live here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
MICRO_CONFIG = REPO / "tests" / "micro_config.yaml"

torch.set_num_threads(1)


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
