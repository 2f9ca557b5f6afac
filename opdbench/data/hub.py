"""Models and datasets of the Hugging Face hub, fetched into ``resources/hub/`` before any job
needs them (the ``fetch_hub`` rule, a local job: compute nodes often cannot reach the hub).

A model's ``source: org/name`` (with an optional ``revision``) and a data file under
``resources/hub/datasets/<org>/<name>/`` (with an optional ``revision`` in its spec) each become one
download of the repository at that revision with ``huggingface_hub.snapshot_download``. Every file is
then checked against what the hub records for it at that commit: the sha256 of a file kept in LFS
(weights, parquet), the git blob hash of any other. ``fetched.json`` beside the files records the
commit and each file's hash; the model's ``model.json`` and every result made from it carry that
commit. A revision that is a branch or tag is resolved to its commit and the record says so (pin
the commit in the config to make the fetch exact). Offline, the error names the command to run on a
machine that reaches the hub and the directory to copy here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from opdbench.atomic import atomic_write_text
from opdbench.data.resources import ResourceError, sha256_of

HUB_DIR = "resources/hub"
RECORD = "fetched.json"
KINDS = {"model": "models", "dataset": "datasets"}  # repo type -> directory under resources/hub/
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_hub_id(source: str) -> bool:
    """'org/name' that is not a local directory (the config's check of a model source)."""
    from opdbench.config import _HUB_ID

    return source != "tiny" and not Path(source).is_dir() and bool(_HUB_ID.match(source))


def repo_dir(repo_id: str, repo_type: str = "model") -> Path:
    return Path(HUB_DIR) / KINDS[repo_type] / repo_id


def record_of(repo_id: str, repo_type: str = "model") -> str:
    """The fetch rule's output for a repository: its record, written last."""
    return str(repo_dir(repo_id, repo_type) / RECORD)


def dataset_of(path: str) -> str | None:
    """The hub dataset a ``resources/hub/datasets/<org>/<name>/...`` path lies in, else None."""
    parts = Path(path).parts
    prefix = Path(HUB_DIR, KINDS["dataset"]).parts
    if len(parts) > len(prefix) + 2 and parts[:len(prefix)] == prefix:
        return "/".join(parts[len(prefix):len(prefix) + 2])
    return None


def git_blob_sha1(path: str | Path) -> str:
    """git's hash of a file (``sha1("blob <size>\\0" + content)``): what the hub records for a file
    not kept in LFS."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def expected_hashes(siblings) -> dict[str, dict[str, Any]]:
    """File -> {size, sha256 (LFS) or git_sha1}, from the hub's file metadata at one commit."""
    out = {}
    for s in siblings:
        if s.lfs is not None:
            out[s.rfilename] = {"size": s.lfs.size, "sha256": s.lfs.sha256}
        else:
            out[s.rfilename] = {"size": s.size, "git_sha1": s.blob_id}
    return out


def check_files(directory: Path, expected: dict[str, dict[str, Any]], shown_as: str) -> None:
    for name, want in expected.items():
        path = directory / name
        if not path.is_file():
            raise ResourceError(f"{shown_as}: {name} is missing after the download")
        got = sha256_of(path) if "sha256" in want else git_blob_sha1(path)
        key = "sha256" if "sha256" in want else "git_sha1"
        if got != want[key]:
            raise ResourceError(f"{shown_as}: {name} has {key} {got}, the hub records {want[key]} at this commit "
                                "(a truncated or altered download)")


def fetch_repo(repo_id: str, repo_type: str = "model", revision: str | None = None, dest: str | Path | None = None,
               api=None, download: Callable | None = None) -> dict[str, Any]:
    """Download ``repo_id`` at ``revision`` (default: its main branch, resolved to a commit) into
    ``dest`` (default ``resources/hub/<kind>/<repo_id>``), check every file and write the record.
    ``api`` and ``download``: huggingface_hub's ``HfApi()`` and ``snapshot_download`` (tests pass fakes)."""
    if api is None or download is None:
        from huggingface_hub import HfApi, snapshot_download

        api, download = api or HfApi(), download or snapshot_download
    dest = Path(dest or repo_dir(repo_id, repo_type))
    asked = revision or "main"
    shown = f"{repo_type} {repo_id}@{asked}"
    try:
        info = api.repo_info(repo_id, repo_type=repo_type, revision=asked, files_metadata=True)
    except Exception as e:  # offline, unknown repo or revision, gated without a token
        raise ResourceError(
            f"could not reach the hub for {shown} ({type(e).__name__}: {e}). On a machine that reaches huggingface.co "
            f"run `snakemake {dest / RECORD}` (or `huggingface-cli download {repo_id} --repo-type {repo_type} "
            f"--revision {asked} --local-dir {dest}` and then that rule), and copy {dest}/ to this machine, "
            f"{RECORD} included") from e
    commit = info.sha
    if _COMMIT.match(asked) and commit != asked:
        raise ResourceError(f"{shown}: the hub answered with commit {commit}, not the pinned one")
    expected = expected_hashes(info.siblings)
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    try:
        download(repo_id, repo_type=repo_type, revision=commit, local_dir=str(part))
        check_files(part, expected, shown)
    except ResourceError:
        shutil.rmtree(part, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(part, ignore_errors=True)
        raise ResourceError(f"{shown}: the download failed ({type(e).__name__}: {e})") from e
    shutil.rmtree(part / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    record = {"repo_id": repo_id, "repo_type": repo_type, "revision": asked, "commit": commit,
              "pinned": bool(_COMMIT.match(asked)), "files": expected}
    atomic_write_text(part / RECORD, json.dumps(record, indent=1, sort_keys=True))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(part, dest)
    if not record["pinned"]:
        print(f"[fetch] {repo_id}: revision '{asked}' is commit {commit}; write `revision: {commit}` in the config "
              "to fetch exactly these files again")
    return record


def _one_revision(found: dict[str, str | None], repo: str, revision: str | None, where: str) -> None:
    """One download per repository: two revisions of it in one experiment is a config error."""
    if repo in found and found[repo] != revision:
        from opdbench.errors import ConfigError

        raise ConfigError(f"config key '{where}': {repo} is asked at revision {found[repo]!r} and {revision!r}; "
                          "one experiment fetches a repository once")
    found[repo] = revision


def fetched_copy(source: str) -> Path | None:
    """A hub model's fetched directory under resources/hub/ (its record there), else None: a local
    path, or a hub id the workflow has not fetched (a caller outside the DAG)."""
    record = Path(record_of(source))
    return record.parent if is_hub_id(source) and record.exists() else None


def hub_models(config: dict[str, Any]) -> dict[str, str | None]:
    """Every hub model of the config's tasks -> its revision (None: the main branch)."""
    from opdbench.config import role_models

    models: dict[str, str | None] = {}
    for task in config["tasks"]:
        for role in ("teacher", "student"):
            for domain, spec in role_models(config["task_settings"][task], role).items():
                if is_hub_id(spec["source"]):
                    key = f"task_settings.{task}.{role}" + (f".by_domain.{domain}" if domain else "")
                    _one_revision(models, spec["source"], spec.get("revision"), f"{key}.revision")
    return models


def hub_datasets(config: dict[str, Any]) -> dict[str, str | None]:
    """Every hub dataset the config's data files lie in -> its revision (None: the main branch)."""
    from opdbench.data.catalog import data_sources, expand

    datasets: dict[str, str | None] = {}
    for task in config["tasks"]:
        for name, spec in data_sources(config["task_settings"][task]["data"]):
            spec = expand(spec)
            repo = dataset_of(str(spec.get("path", "")))
            if repo:
                _one_revision(datasets, repo, spec.get("revision"), f"task_settings.{task}.data.{name}.revision")
    return datasets
