"""Paper-scale benchmark files: which ones a config needs, and fetching them (atomic, with
a clear error where the network is closed)."""
import ast
import importlib.util
import socket
from pathlib import Path

import pytest

from opdbench.errors import ConfigError
from opdbench.resources import EVALPLUS_RELEASES, ResourceError, fetch, livecodebench_files, resource_urls, resources_of

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


def test_fetch_is_atomic_and_says_where_to_place_a_file_it_cannot_reach(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_text('{"task_id": 1}\n')
    dest = tmp_path / "resources" / "livecodebench" / "test.jsonl"
    assert fetch("livecodebench/test.jsonl", dest, url=src.as_uri()).read_text() == src.read_text()

    with socket.socket() as s:  # a port nobody listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "resources" / "HumanEvalPlus-v0.1.10.jsonl.gz"
    with pytest.raises(ResourceError, match=f"place it at {dest}"):
        fetch("HumanEvalPlus-v0.1.10.jsonl.gz", dest, url=f"http://127.0.0.1:{port}/x", timeout_s=5)
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
