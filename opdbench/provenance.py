"""Provenance stamped on every results file: config hash, method diff, code and data versions."""
from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import opdbench
from opdbench.atomic import atomic_write_text

REPO = Path(opdbench.__file__).resolve().parent.parent


@lru_cache(maxsize=None)
def code_version(repo: Path = REPO) -> str:
    """``<commit>[-dirty]`` of the checkout, or the package version outside git. Dirty
    includes untracked files that git does not ignore: a new method file changes results."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=normal"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"opdbench-{opdbench.__version__}"


def library_versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "opdbench": opdbench.__version__}


def stamp(**fields: Any) -> dict[str, Any]:
    return {"code_version": code_version(), "libraries": library_versions(), **fields}


def write_json(path: str | Path, obj: Any) -> None:
    """A JSON results file, written atomically (the old file or the whole new one)."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
