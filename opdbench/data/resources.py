"""Paper-scale benchmark files, fetched into ``resources/`` where GitHub or the Hugging Face
hub is reachable (the ``fetch_resource`` rule), or placed there by hand where they are not.

A config names them by path (``{source: evalplus, path: resources/HumanEvalPlus-v0.1.10.jsonl.gz}``);
``make_data`` depends on every ``resources/`` path of its task, so Snakemake fetches what is
missing first. EvalPlus's release URLs are those evalplus itself downloads, and
LiveCodeBench's code_generation_lite files from the hub (``release_v6`` = test.jsonl ... test6.jsonl),
the math benchmark files the papers evaluate on from their own GitHub repositories (``GITHUB_FILES``;
opdbench/data/catalog.py names the benchmarks in them). Each file is pinned twice: by a revision in
its URL (a release tag, a commit) and by its
sha256, checked after every download (a tag or a hub file can be replaced under the same name).
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from opdbench.errors import ConfigError, unknown_name_error

RESOURCES_DIR = "resources"
# The releases evalplus 0.3.1 reads (HUMANEVAL_PLUS_VERSION, MBPP_PLUS_VERSION) and its URL
# template (evalplus.data.utils; importing it would pull in `datasets`).
EVALPLUS_RELEASES = {"HumanEvalPlus": "v0.1.10", "MbppPlus": "v0.2.0"}
EVALPLUS_URL = "https://github.com/evalplus/{lower}_release/releases/download/{version}/{name}.jsonl.gz"
# The hub commit that has all six files of release_v6 (the dataset's main branch moves).
LCB_REVISION = "0fe84c3912ea0c4d4a78037083943e8f0c4dd505"
LCB_URL = f"https://huggingface.co/datasets/livecodebench/code_generation_lite/resolve/{LCB_REVISION}/{{}}"
LCB_RELEASES = {"release_v1": 1, "release_v2": 2, "release_v3": 3, "release_v4": 4, "release_v5": 5, "release_v6": 6}
# Benchmark files kept in the papers' own GitHub repositories: resources/<name> -> (repository,
# commit, path in it). LUFFY's evaluation data is REOPOLD's (App. D); G-OPD's, ExOPD's and
# Uni-OPD's (their scripts' data/).
GITHUB_FILES = {
    "luffy/valid.all.parquet": ("ElliottYan/LUFFY", "01f4ae066249e6965ce0d5512ccdf99a12895c74", "data/valid.all.parquet"),
    "luffy/valid.gpqa.parquet": ("ElliottYan/LUFFY", "01f4ae066249e6965ce0d5512ccdf99a12895c74", "data/valid.gpqa.parquet"),
    **{f"g_opd/{name}.jsonl": ("RUCBM/G-OPD", "37371a4c31ad7947746200d234161769191f4748", f"data/{name}/test.jsonl")
       for name in ("aime24", "aime25", "hmmt25_feb", "hmmt25_nov")},
}
GITHUB_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
# The EvalPlus assets' and the hub's LFS sha256 at LCB_REVISION: not computed here (no network), as
# recorded, identically, by several public projects that pin these files. The GitHub files': computed
# from the files at those commits (a mirror of each repository, 2026-12-02).
RESOURCE_SHA256 = {
    "luffy/valid.all.parquet": "92503399b914212d2e3d85839882bc1376a0111652fec0dcb722e86307e97617",
    "luffy/valid.gpqa.parquet": "55bde3943eeb6906d6d569d0ab882638c2f395a716ab5fa1fa20a186e722e58b",
    "g_opd/aime24.jsonl": "1c1004689dbaec0bd43b71f7083cabffefc27716783e19235947dc355031a95c",
    "g_opd/aime25.jsonl": "b4e273c02d3e7fe1b74b59eae768fc8230bfb0f79539890cb56f4361caac0331",
    "g_opd/hmmt25_feb.jsonl": "86825dc3a44cf9fd5fd62c5d6a4ab4afeb8feba1ae47ded20eea5663ec733524",
    "g_opd/hmmt25_nov.jsonl": "7bd6f3f15b689d36a458556fd7daef6f7257022be15f9cf42e2dff9ffb51ddd6",
    "HumanEvalPlus-v0.1.10.jsonl.gz": "272720b90ac375502c8ed23cd791c2a93dfb22a911641a494da74a426c09f101",
    "MbppPlus-v0.2.0.jsonl.gz": "af43697e8791c4c149bdfd6b489d8b5412507551ac20e28a439f650b8225db63",
    "livecodebench/test.jsonl": "2bd02b38beb48e8c46b5b9987095d999ff38cd8efc255ea5d58974317c48f63f",
    "livecodebench/test2.jsonl": "095df7c5daf15f882c51a9deb84085cff1e073495a5dbcf95015a564d485f3a3",
    "livecodebench/test3.jsonl": "28ed26cc83363ce3f1fe2d5fad9f8393077beb1907b167a31bd3b32f80801b79",
    "livecodebench/test4.jsonl": "d711138ddaebfcf5f8ec6a4283ee677298c0f5c5d374a235af92aaf0584510da",
    "livecodebench/test5.jsonl": "7f77571c2a6df0c2a72a3277650309f67e01e0008e18117e624633df53f81214",
    "livecodebench/test6.jsonl": "bb4c364f71921c4495a6ad15abe1a927350b720009f4933e2e71f8af0f6fd1f5",
}


class ResourceError(RuntimeError):
    """A resource that could not be fetched; the message says where to place it by hand."""


def resource_urls() -> dict[str, str]:
    """File name under resources/ -> the URL it is fetched from."""
    urls = {f"{name}-{version}.jsonl.gz": EVALPLUS_URL.format(lower=name.lower(), version=version, name=name)
            for name, version in EVALPLUS_RELEASES.items()}
    for file in livecodebench_files(max(LCB_RELEASES, key=LCB_RELEASES.get)):
        urls[file] = LCB_URL.format(file.removeprefix("livecodebench/"))
    for name, (repo, commit, path) in GITHUB_FILES.items():
        urls[name] = GITHUB_URL.format(repo=repo, commit=commit, path=path)
    return urls


def livecodebench_files(version: str = "release_v6") -> list[str]:
    """The code_generation_lite files that make up a LiveCodeBench release (each adds one)."""
    if version not in LCB_RELEASES:
        raise unknown_name_error("LiveCodeBench version", version, LCB_RELEASES)
    return [f"livecodebench/{'test.jsonl' if i == 1 else f'test{i}.jsonl'}" for i in range(1, LCB_RELEASES[version] + 1)]


def resource_pattern() -> str:
    """The regular expression of every fetchable resource name (the fetch rule's wildcard)."""
    return "|".join(re.escape(name) for name in resource_urls())


def resources_of(data_settings: dict[str, Any]) -> list[str]:
    """The resources/ files a task's data settings read (its train split and benchmarks), a hub
    dataset's by the record of its fetch: what ``make_data`` waits for."""
    from opdbench.data.catalog import data_sources, expand
    from opdbench.data.hub import dataset_of, record_of

    specs = [expand(spec) for _, spec in data_sources(data_settings)]
    files: list[str] = []
    for spec in specs:
        path = str(spec.get("path", ""))
        if not path.startswith(f"{RESOURCES_DIR}/"):
            continue  # a generator, a package source, or a file the user keeps elsewhere
        if dataset_of(path):  # a file of a hub dataset: its fetch's record (opdbench.data.hub)
            files.append(record_of(dataset_of(path), "dataset"))
            continue
        name = path[len(RESOURCES_DIR) + 1:].rstrip("/")
        if name == "livecodebench":  # a directory: the release's files
            files += [f"{RESOURCES_DIR}/{f}" for f in livecodebench_files(spec.get("version", "release_v6"))]
        else:
            files.append(path)
    return sorted(set(files))


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(name: str, path: str | Path, shown_as: str | Path | None = None) -> None:
    """Raise ResourceError unless ``path`` has the pinned sha256 of resource ``name``
    (for a file placed by hand, too); the message names ``shown_as`` (default ``path``)."""
    expected, got = RESOURCE_SHA256[name], sha256_of(path)
    if got != expected:
        raise ResourceError(f"{name} ({shown_as or path}): sha256 mismatch, expected {expected}, got {got} "
                            f"(the upstream file changed, or the download is truncated or wrong)")


def fetch(name: str, dest: str | Path, url: str | None = None, timeout_s: float = 60.0) -> Path:
    """Download resource ``name`` to ``dest`` and check its sha256 (atomically: nothing is left
    at ``dest`` on failure)."""
    urls = resource_urls()
    if name not in urls:
        raise unknown_name_error("resource", name, urls)
    url = url or urls[name]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as f:
                for block in iter(lambda: response.read(1 << 20), b""):
                    f.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise ResourceError(
                f"could not fetch {name} from {url} ({e}); where the network is closed, download that URL on a "
                f"connected machine and place the file at {dest} (its sha256 must be {RESOURCE_SHA256[name]})") from e
        check_sha256(name, part, shown_as=f"{url} -> {dest}")
    except ResourceError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest
