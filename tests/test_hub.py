"""Hub models and datasets fetched into resources/hub/ (opdbench/data/hub.py), against fakes of
huggingface_hub's HfApi.repo_info and snapshot_download with the library's own signatures and
metadata classes (no network here): every file checked against the hub's hashes at the commit,
nothing left behind by a bad download, an offline error that says what to run and copy."""
import hashlib
import inspect
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

from conftest import REPO, run_snakemake
from opdbench.data.hub import RECORD, dataset_of, fetch_repo, git_blob_sha1, hub_datasets, hub_models, record_of
from opdbench.data.resources import ResourceError, resources_of

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = {"config.json": b'{"model_type": "qwen2"}', "model.safetensors": b"\x00weights" * 100,
         "tokenizer.json": b'{"version": "1.0"}'}
LFS = {"model.safetensors"}


def sibling(name: str, data: bytes) -> RepoSibling:
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if name in LFS:
        lfs = BlobLfsInfo(size=len(data), sha256=hashlib.sha256(data).hexdigest(), pointer_size=134)
        return RepoSibling(rfilename=name, size=len(data), blob_id="a" * 40, lfs=lfs)
    return RepoSibling(rfilename=name, size=len(data), blob_id=git, lfs=None)


class FakeApi:
    """HfApi.repo_info's signature; answers for one repository at one commit."""

    def __init__(self, files=FILES, fail=None):
        self.files, self.fail, self.calls = files, fail, []

    def repo_info(self, repo_id, *, revision=None, repo_type=None, timeout=None, files_metadata=False, expand=None,
                  token=None):
        self.calls.append((repo_id, revision, repo_type, files_metadata))
        if self.fail:
            raise self.fail
        return SimpleNamespace(sha=COMMIT, siblings=[sibling(n, d) for n, d in self.files.items()])


def fake_download(served=FILES):
    calls = []

    def snapshot(repo_id, *, repo_type=None, revision=None, local_dir=None, **kwargs):
        calls.append((repo_id, repo_type, revision))
        for name, data in served.items():
            path = Path(local_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)
        return local_dir

    snapshot.calls = calls
    return snapshot


def test_the_fakes_take_the_libraries_arguments():
    real = inspect.signature(HfApi.repo_info).parameters
    assert set(inspect.signature(FakeApi.repo_info).parameters) == set(real)
    assert {"repo_type", "revision", "local_dir"} <= set(inspect.signature(snapshot_download).parameters)


def test_a_model_is_fetched_at_its_commit_and_every_file_checked(tmp_path, capsys):
    api, download = FakeApi(), fake_download()
    dest = tmp_path / "resources/hub/models/org/model"
    record = fetch_repo("org/model", "model", None, dest, api=api, download=download)
    assert api.calls == [("org/model", "main", "model", True)]
    assert download.calls == [("org/model", "model", COMMIT)]  # the files of the resolved commit
    assert {p.name for p in dest.iterdir()} == set(FILES) | {RECORD}  # no download cache left
    on_disk = json.loads((dest / RECORD).read_text())
    assert on_disk == record and record["commit"] == COMMIT and record["pinned"] is False
    assert record["files"]["model.safetensors"]["sha256"] == hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    assert record["files"]["config.json"]["git_sha1"] == git_blob_sha1(dest / "config.json")
    assert f"revision: {COMMIT}" in capsys.readouterr().out  # how to pin it
    # pinned: the same commit asked for and recorded
    assert fetch_repo("org/model", "model", COMMIT, dest, api=FakeApi(), download=fake_download())["pinned"]


@pytest.mark.parametrize("bad", ["model.safetensors", "config.json"])
def test_a_file_unlike_the_hubs_record_fails_and_leaves_nothing(tmp_path, bad):
    served = {**FILES, bad: FILES[bad] + b"!"}
    dest = tmp_path / "model"
    with pytest.raises(ResourceError, match=rf"{re.escape(bad)} has (sha256|git_sha1) .* the hub records"):
        fetch_repo("org/model", "model", None, dest, api=FakeApi(), download=fake_download(served))
    assert not dest.exists() and not any(tmp_path.iterdir())


def test_offline_the_error_says_what_to_run_where_and_what_to_copy(tmp_path):
    dest = tmp_path / "resources/hub/datasets/org/data"
    with pytest.raises(ResourceError) as err:
        fetch_repo("org/data", "dataset", "v1", dest, api=FakeApi(fail=ConnectionError("no network")),
                   download=fake_download())
    message = str(err.value)
    assert "no network" in message and f"snakemake {dest / RECORD}" in message
    assert f"huggingface-cli download org/data --repo-type dataset --revision v1 --local-dir {dest}" in message
    assert f"copy {dest}/ to this machine" in message and not dest.exists()


def test_a_pinned_commit_the_hub_does_not_return_is_refused(tmp_path):
    other = "f" * 40
    with pytest.raises(ResourceError, match=f"commit {COMMIT}, not the pinned one"):
        fetch_repo("org/model", "model", other, tmp_path / "m", api=FakeApi(), download=fake_download())


def test_one_repository_at_two_revisions_is_refused_naming_both():
    from opdbench.errors import ConfigError

    config = {"tasks": ["math", "code"], "task_settings": {
        task: {"teacher": {"source": "org/teacher", "revision": rev}, "student": {"source": "tiny"}}
        for task, rev in (("math", "v1"), ("code", "v2"))}}
    with pytest.raises(ConfigError, match="org/teacher.*'v1'.*'v2'"):
        hub_models(config)


def test_the_config_names_what_to_fetch():
    config = {"tasks": ["math"], "task_settings": {"math": {
        "teacher": {"source": "org/teacher", "revision": COMMIT}, "student": {"source": "tiny"},
        "data": {"train": {"path": "resources/hub/datasets/org/data/train.parquet", "revision": "v2"},
                 "benchmarks": {"aime": {"source": "mmath"}, "mine": {"path": "resources/mine.jsonl"}}}}}}
    assert hub_models(config) == {"org/teacher": COMMIT}
    assert hub_datasets(config) == {"org/data": "v2"}
    assert dataset_of("resources/hub/datasets/org/data/sub/x.parquet") == "org/data" and dataset_of("resources/x") is None
    assert resources_of(config["task_settings"]["math"]["data"]) == [record_of("org/data", "dataset"),
                                                                      "resources/mine.jsonl"]


def test_snakemake_fetches_each_hub_model_and_dataset_first(tmp_path):
    """A paper-scale file with two hub models and a hub dataset: one fetch_hub job each, before the
    jobs that read them (dry run)."""
    overlay = tmp_path / "hub.yaml"
    overlay.write_text("""
experiment: hubtest
tasks: [math]
methods: [opd]
seeds: [0]
replace: [task_settings.math]
task_settings:
  math:
    data:
      seed: 0
      train: {path: resources/hub/datasets/org/mathdata/train.parquet, revision: v2, problem_key: problem, answer_key: answer}
      benchmarks:
        aime24: {source: mmath, where: {data_source: AIME2024}}
    teacher: {source: org/teacher-7b, revision: %s}
    student: {source: org/student-1b}
""" % COMMIT)
    proc = run_snakemake(tmp_path / "work", "-n", configfiles=(REPO / "config" / "config.yaml", overlay), timeout=300)
    fetches = re.findall(r"rule fetch_hub:\n\s+output: (\S+)", proc.stdout)
    assert sorted(fetches) == ["resources/hub/datasets/org/mathdata/fetched.json",
                               "resources/hub/models/org/student-1b/fetched.json",
                               "resources/hub/models/org/teacher-7b/fetched.json"]
    model_inputs = re.findall(r"rule model:\n\s+input: ([^\n]+)", proc.stdout)
    assert any("resources/hub/models/org/teacher-7b/fetched.json" in line for line in model_inputs)


def test_the_model_rule_points_at_the_fetched_files_and_records_their_commit(tmp_path, monkeypatch):
    from opdbench.pipeline import build_model

    monkeypatch.chdir(tmp_path)
    fetch_repo("org/teacher-7b", "model", COMMIT, record_of("org/teacher-7b").removesuffix("/" + RECORD),
               api=FakeApi(), download=fake_download())
    config = {"tasks": ["math"], "task_settings": {"math": {"teacher": {"source": "org/teacher-7b", "revision": COMMIT},
                                                            "student": {"source": "tiny"}}}}
    build_model(config, "math", "teacher", tmp_path, tmp_path, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())
    assert manifest["weights"] == "resources/hub/models/org/teacher-7b"  # relative, as every results path
    assert (manifest["source"], manifest["revision"], manifest["commit"]) == ("org/teacher-7b", COMMIT, COMMIT)
