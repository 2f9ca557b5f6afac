"""A run's training-code hash covers the engine-neutral training code and its own engine's code
only: editing the verl engine does not rerun local runs, editing shared engine code reruns all."""
import shutil

import pytest

from conftest import METHODS_DIR, REPO
from opdbench import code_hash
from opdbench.config import load_yaml, resolve_run


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "opdbench"
    shutil.copytree(code_hash.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_hash, "PACKAGE", copy)
    code_hash.package_code_hash.cache_clear()
    yield copy
    code_hash.package_code_hash.cache_clear()


def hashes():
    code_hash.package_code_hash.cache_clear()
    return {engine: code_hash.training_code_hash(engine) for engine in code_hash.ENGINE_CODE}


@pytest.mark.parametrize("edited,changes", [
    ("train/engines/verl/plugin.py", {"verl"}),
    ("train/engines/verl/overrides.py", {"verl"}),
    ("train/engines/local.py", {"local"}),
    ("train/common.py", {"local", "verl"}),
    ("train/losses.py", {"local", "verl"}),
    ("method.py", {"local", "verl"}),
])
def test_editing_an_engines_code_changes_only_its_runs_hash(package_copy, edited, changes):
    before = hashes()
    assert before["local"] != before["verl"]
    with open(package_copy / edited, "a") as f:
        f.write("\n# edited\n")
    after = hashes()
    assert {engine for engine in before if before[engine] != after[engine]} == changes


def test_a_runs_code_hash_is_its_engines():
    config = load_yaml(REPO / "config" / "config.yaml")
    local = resolve_run(config, "math", "opd", 0, METHODS_DIR)
    verl = resolve_run({**config, "base": {**config["base"], "engine": "verl"}}, "math", "opd", 0, METHODS_DIR)
    assert local["code"]["training_code"] == code_hash.training_code_hash("local")
    assert verl["code"]["training_code"] == code_hash.training_code_hash("verl")
    assert local["code"]["method_file"] == verl["code"]["method_file"]


def test_every_engine_code_path_exists():
    for parts in code_hash.ENGINE_CODE.values():
        for part in parts:
            assert (code_hash.PACKAGE / part).exists(), part
