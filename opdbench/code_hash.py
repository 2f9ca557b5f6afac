"""Content hashes of the code a result depends on, so that editing it reruns exactly the
jobs it shapes. Snakemake reruns a job whose ``params`` changed; a rule puts these hashes
in its params (training: through the resolved run, see ``config.resolve_run``).

Paths are relative to the package, so a moved or recloned checkout hashes the same.
"""
from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache
from pathlib import Path

from opdbench.data.resources import sha256_of

PACKAGE = Path(__file__).resolve().parent
# What shapes a trained student besides its method file: the method base class and its
# building blocks, scoring, rollouts, the engines, and the tasks (prompts, verifiers).
TRAINING_CODE = ("method.py", "blocks", "train", "models/__init__.py", "tasks")
# Each engine's own code under train/engines/: a run hashes the rest of TRAINING_CODE (the
# engine-neutral code) and its own engine's, so editing one engine reruns only the runs on it.
# Anything else under train/ is engine-neutral.
ENGINE_CODE = {"local": ("train/engines/local.py",), "verl": ("train/engines/verl",)}
# What shapes an evaluation's numbers: sampling (the generation backends), the verifiers
# (tasks) and the metrics.
EVALUATION_CODE = ("evaluate", "train/rollout.py", "models/__init__.py", "tasks")


def _files(parts: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[Path]:
    files = []
    for part in parts:
        path = PACKAGE / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    excluded = set(_files(exclude)) if exclude else set()
    return [f for f in files if f not in excluded]


@lru_cache(maxsize=None)
def package_code_hash(parts: tuple[str, ...], exclude: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) over the package files named by ``parts`` less those named by
    ``exclude``, with their relative names."""
    digest = hashlib.sha256()
    for path in _files(parts, exclude):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def training_code_hash(engine: str) -> str:
    """The training code of a run on ``engine``: TRAINING_CODE without the other engines' own code."""
    others = tuple(part for name, parts in sorted(ENGINE_CODE.items()) if name != engine for part in parts)
    return package_code_hash(TRAINING_CODE, others)


def file_hash(path: str | Path) -> str:
    return sha256_of(path)[:16]


def method_code(cls: type, engine: str) -> dict[str, str]:
    """The code a run of method ``cls`` on ``engine`` depends on: its own file and the training code."""
    return {"method_file": file_hash(inspect.getfile(cls)), "training_code": training_code_hash(engine)}
