"""A new method is one file: it joins the DAG and the leaderboard with no rule, config key or
registry edit; editing it reruns its runs only; a moved checkout plans nothing. (Its own micro
DAG in a copy of the workflow, apart from the shared one of test_workflow.py.)"""
import json
import shutil
from pathlib import Path

import pytest

from conftest import MICRO_CONFIG, REPO, planned_jobs, run_snakemake

pytestmark = pytest.mark.slow


PLUGIN = '''
from opdbench.blocks import log_ratio_credit
from opdbench.method import Method
from opdbench.registry import register_method


@register_method
class HalfOPD(Method):
    """OPD with half the credit: a throwaway method for the plugin test."""
    name = "half_opd"
    defaults = {"scale": 0.5}
    schema = {"scale": {"type": "number", "minimum": 0}}

    def loss(self, mb, student, progress):
        credit = self.hp["scale"] * log_ratio_credit(mb.logT, mb.logOld)
        pg, stats = self.policy_gradient(mb, student, advantages=credit)
        return [pg], {"credit": credit, **stats}
'''


def _checkout(root: Path) -> Path:
    """A copy of the workflow's files (a checkout without git)."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", repo)
    for folder in ("workflow", "config", "methods", "envs", "profiles", "paper_tables"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def test_a_new_method_file_joins_the_dag_and_the_leaderboard(tmp_path):
    """Adding methods/<name>.py is the whole change: no rule, config key or registry edit.
    Then: editing a method file reruns its runs and only those; a moved checkout plans nothing."""
    repo = _checkout(tmp_path / "a")
    (repo / "methods" / "half_opd.py").write_text(PLUGIN)
    overlay = repo / "plugin.yaml"
    overlay.write_text("methods: [opd, half_opd]\nseeds: [0]\n")
    configs = (MICRO_CONFIG, overlay)
    dry = run_snakemake(repo, "-n", snakefile=repo / "Snakefile", configfiles=configs)
    jobs = planned_jobs(dry.stdout)
    assert jobs["train"] == 4 and jobs["evaluate"] == 8, jobs  # per task: 2 methods trained; they and 2 base models evaluated
    assert "results/micro/train/code/half_opd/seed0/run.json" in dry.stdout
    run_snakemake(repo, snakefile=repo / "Snakefile", configfiles=configs)
    md = (repo / "results/micro/leaderboard.md").read_text()
    assert "| half_opd | 1 |" in md and "| opd | 1 |" in md
    run = json.loads((repo / "results/micro/train/math/half_opd/seed0/run.json").read_text())
    assert run["run"]["hparams"] == {"scale": 0.5}
    assert set(run["run"]["code"]) == {"method_file", "training_code"}

    # Moved (or recloned with its results): nothing to do. copytree keeps the files' times.
    moved = tmp_path / "b" / "deeper" / "repo"
    shutil.copytree(repo, moved, symlinks=True)
    shutil.rmtree(tmp_path / "a")
    configs = (MICRO_CONFIG, moved / "plugin.yaml")
    dry = run_snakemake(moved, "-n", snakefile=moved / "Snakefile", configfiles=configs)
    assert "Nothing to be done" in dry.stdout, dry.stdout[-3000:]

    # An edit to the method's file reruns its runs (2 tasks x 1 seed), their evaluations and the tables.
    method_file = moved / "methods" / "half_opd.py"
    method_file.write_text(method_file.read_text().replace("half the credit", "half of the credit"))
    jobs = planned_jobs(run_snakemake(moved, "-n", snakefile=moved / "Snakefile", configfiles=configs).stdout)
    assert jobs == {"train": 2, "evaluate": 2, "training_curves": 2, "test_time_scaling": 2, "leaderboard": 1,
                    "cost": 1, "leaderboard_deltas": 1, "paper_tables": 1, "all": 1}, jobs

    (moved / "methods" / "half_opd_copy.py").write_text(PLUGIN)
    dup = run_snakemake(moved, "-n", snakefile=moved / "Snakefile", configfiles=configs, check=False)
    assert dup.returncode != 0 and "registered twice" in dup.stdout + dup.stderr
