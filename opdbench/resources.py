"""Paper-scale benchmark files, fetched into ``resources/`` where GitHub or the Hugging Face
hub is reachable (the ``fetch_resource`` rule), or placed there by hand where they are not.

A config names them by path (``{source: evalplus, path: resources/HumanEvalPlus-v0.1.10.jsonl.gz}``);
``make_data`` depends on every ``resources/`` path of its task, so Snakemake fetches what is
missing first. EvalPlus's release URLs are those evalplus itself downloads, and
LiveCodeBench's code_generation_lite files from the hub (``release_v6`` = test.jsonl ... test6.jsonl).
"""
from __future__ import annotations

import os
import shutil
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
LCB_URL = "https://huggingface.co/datasets/livecodebench/code_generation_lite/resolve/main/{}"
LCB_RELEASES = {"release_v1": 1, "release_v2": 2, "release_v3": 3, "release_v4": 4, "release_v5": 5, "release_v6": 6}


class ResourceError(RuntimeError):
    """A resource that could not be fetched; the message says where to place it by hand."""


def resource_urls() -> dict[str, str]:
    """File name under resources/ -> the URL it is fetched from."""
    urls = {f"{name}-{version}.jsonl.gz": EVALPLUS_URL.format(lower=name.lower(), version=version, name=name)
            for name, version in EVALPLUS_RELEASES.items()}
    for file in livecodebench_files(max(LCB_RELEASES, key=LCB_RELEASES.get)):
        urls[file] = LCB_URL.format(file.removeprefix("livecodebench/"))
    return urls


def livecodebench_files(version: str = "release_v6") -> list[str]:
    """The code_generation_lite files that make up a LiveCodeBench release (each adds one)."""
    if version not in LCB_RELEASES:
        raise unknown_name_error("LiveCodeBench version", version, LCB_RELEASES)
    return [f"livecodebench/{'test.jsonl' if i == 1 else f'test{i}.jsonl'}" for i in range(1, LCB_RELEASES[version] + 1)]


def resources_of(data_settings: dict[str, Any]) -> list[str]:
    """The resources/ files a task's data settings read (its train split and benchmarks):
    what ``make_data`` waits for."""
    specs = [data_settings["train"], *data_settings["benchmarks"].values()]
    files: list[str] = []
    for spec in specs:
        path = str(spec.get("path", ""))
        if not path.startswith(f"{RESOURCES_DIR}/"):
            continue  # a generator, a package source, or a file the user keeps elsewhere
        name = path[len(RESOURCES_DIR) + 1:].rstrip("/")
        if name == "livecodebench":  # a directory: the release's files
            files += [f"{RESOURCES_DIR}/{f}" for f in livecodebench_files(spec.get("version", "release_v6"))]
        else:
            files.append(path)
    return sorted(set(files))


def fetch(name: str, dest: str | Path, url: str | None = None, timeout_s: float = 60.0) -> Path:
    """Download resource ``name`` to ``dest`` (atomically: nothing is left at ``dest`` on failure)."""
    urls = resource_urls()
    if url is None:
        if name not in urls:
            raise unknown_name_error("resource", name, urls)
        url = urls[name]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        raise ResourceError(f"could not fetch {name} from {url} ({e}); where the network is closed, download it "
                            f"on a connected machine and place it at {dest}") from e
    os.replace(part, dest)
    return dest
