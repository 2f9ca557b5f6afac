"""Paper-scale benchmark files: which ones a config needs, and fetching them (pinned by
revision and sha256, atomic, with a clear error where the network is closed)."""
import ast
import hashlib
import importlib.util
import re
import socket
from pathlib import Path

import pytest

from opdbench.errors import ConfigError
from opdbench.data import resources
from opdbench.data.resources import (EVALPLUS_RELEASES, GITHUB_FILES, LCB_REVISION, RESOURCE_SHA256, ResourceError, check_sha256, fetch,
                                livecodebench_files, resource_urls, resources_of)

from conftest import MICRO_CONFIG, run_snakemake

PAPER_CODE = {
    "seed": 0,
    "train": {"generator": {"stages": [1, 2]}, "size": 10},
    "benchmarks": {
        "humaneval_plus": {"source": "evalplus", "path": "resources/HumanEvalPlus-v0.1.10.jsonl.gz", "dataset": "humaneval"},
        "mbpp_plus": {"source": "evalplus", "path": "resources/MbppPlus-v0.2.0.jsonl.gz", "dataset": "mbpp"},
        "lcb_v6": {"source": "livecodebench", "path": "resources/livecodebench", "start_date": "2025-02-01"},
        "humaneval": {"source": "humaneval_package"},
        "own": {"source": "evalplus", "path": "/data/elsewhere.jsonl.gz"},
    },
}


def test_the_files_a_config_reads_and_their_urls():
    files = resources_of(PAPER_CODE)
    lcb = [f"resources/livecodebench/{f}" for f in
           ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")]
    assert files == sorted(["resources/HumanEvalPlus-v0.1.10.jsonl.gz", "resources/MbppPlus-v0.2.0.jsonl.gz", *lcb])
    urls = resource_urls()
    assert all(f.removeprefix("resources/") in urls for f in files)
    assert urls["HumanEvalPlus-v0.1.10.jsonl.gz"] == (
        "https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz")
    assert livecodebench_files("release_v2") == ["livecodebench/test.jsonl", "livecodebench/test2.jsonl"]
    assert resources_of({"train": {"generator": {}}, "benchmarks": {"a": {"generator": {}}}}) == []


def test_the_evalplus_releases_are_those_evalplus_reads():
    """evalplus.data cannot be imported without `datasets`: read its constants from source."""
    root = Path(importlib.util.find_spec("evalplus").submodule_search_locations[0]) / "data"
    constants = {}
    for file in ("humaneval.py", "mbpp.py"):
        for node in ast.parse((root / file).read_text()).body:
            if isinstance(node, ast.Assign) and node.targets[0].id.endswith("_PLUS_VERSION"):
                constants[node.targets[0].id] = node.value.value
    assert constants == {"HUMANEVAL_PLUS_VERSION": EVALPLUS_RELEASES["HumanEvalPlus"],
                         "MBPP_PLUS_VERSION": EVALPLUS_RELEASES["MbppPlus"]}
    assert 'releases/download/{version}/{name}{extra}.jsonl.gz' in (root / "utils.py").read_text()


def test_every_resource_is_pinned_by_a_revision_and_a_sha256():
    urls = resource_urls()
    assert set(urls) == set(RESOURCE_SHA256)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in RESOURCE_SHA256.values())
    for name, url in urls.items():
        if name in GITHUB_FILES:  # a commit of the paper's repository, not a branch
            repo, commit, path = GITHUB_FILES[name]
            assert re.fullmatch(r"[0-9a-f]{40}", commit)
            assert url == f"https://raw.githubusercontent.com/{repo}/{commit}/{path}", url
        elif name.startswith("livecodebench/"):  # a hub commit, not a branch
            assert url.startswith("https://huggingface.co/datasets/livecodebench/code_generation_lite/resolve/"
                                  f"{LCB_REVISION}/test"), url
        else:  # a release tag
            assert f"/releases/download/{EVALPLUS_RELEASES[name.split('-')[0]]}/" in url, url
    assert re.fullmatch(r"[0-9a-f]{40}", LCB_REVISION)


def test_fetch_checks_the_sha256_and_keeps_nothing_of_a_wrong_file(tmp_path, monkeypatch):
    src = tmp_path / "src.jsonl"
    src.write_text('{"task_id": 1}\n')
    right = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "resources" / "livecodebench" / "test.jsonl"

    monkeypatch.setitem(resources.RESOURCE_SHA256, "livecodebench/test.jsonl", "0" * 64)
    with pytest.raises(ResourceError) as e:
        fetch("livecodebench/test.jsonl", dest, url=src.as_uri())
    assert f"livecodebench/test.jsonl ({src.as_uri()} -> {dest}): sha256 mismatch, expected {'0' * 64}, got {right}" in str(e.value)
    assert list(dest.parent.iterdir()) == []  # neither the file nor its .part

    monkeypatch.setitem(resources.RESOURCE_SHA256, "livecodebench/test.jsonl", right)
    assert fetch("livecodebench/test.jsonl", dest, url=src.as_uri()).read_text() == src.read_text()
    check_sha256("livecodebench/test.jsonl", dest)  # a file placed by hand is checked the same way
    dest.write_text("changed\n")
    with pytest.raises(ResourceError, match=f"expected {right}, got {hashlib.sha256(b'changed' + bytes([10])).hexdigest()}"):
        check_sha256("livecodebench/test.jsonl", dest)


def test_fetch_is_atomic_and_says_where_to_place_a_file_it_cannot_reach(tmp_path, monkeypatch):
    src = tmp_path / "src.jsonl"
    src.write_text('{"task_id": 1}\n')
    dest = tmp_path / "resources" / "livecodebench" / "test.jsonl"
    monkeypatch.setitem(resources.RESOURCE_SHA256, "livecodebench/test.jsonl", hashlib.sha256(src.read_bytes()).hexdigest())
    assert fetch("livecodebench/test.jsonl", dest, url=src.as_uri()).read_text() == src.read_text()

    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "resources" / "HumanEvalPlus-v0.1.10.jsonl.gz"
    with pytest.raises(ResourceError, match=re.escape(
            f"could not fetch HumanEvalPlus-v0.1.10.jsonl.gz from http://127.0.0.1:{port}/x (")) as e:
        fetch("HumanEvalPlus-v0.1.10.jsonl.gz", dest, url=f"http://127.0.0.1:{port}/x", timeout_s=5)
    assert (f"place the file at {dest} (its sha256 must be "
            f"{RESOURCE_SHA256['HumanEvalPlus-v0.1.10.jsonl.gz']})") in str(e.value)
    assert list(dest.parent.iterdir()) == [dest.parent / "livecodebench"]  # no partial file


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown resource 'HumanEvalPlus.jsonl'.*Valid resources: HumanEvalPlus-v"):
        fetch("HumanEvalPlus.jsonl", tmp_path / "x")
    with pytest.raises(ConfigError, match="Valid LiveCodeBench versions: release_v1"):
        livecodebench_files("v6")


def test_the_dag_fetches_a_configs_benchmark_files_before_its_data(tmp_path):
    paper = tmp_path / "paper_code.yaml"
    paper.write_text("tasks: [code]\ntask_settings: {code: {data: {benchmarks: "
                     "{humaneval_plus: {source: evalplus, path: resources/HumanEvalPlus-v0.1.10.jsonl.gz}, "
                     "lcb: {source: livecodebench, path: resources/livecodebench, version: release_v2}}}}}\n")
    dry = run_snakemake(tmp_path, "-n", configfiles=(MICRO_CONFIG, paper)).stdout
    assert "resources/HumanEvalPlus-v0.1.10.jsonl.gz" in dry and "resources/livecodebench/test2.jsonl" in dry
    assert dry.count("rule fetch_resource:") == 3
