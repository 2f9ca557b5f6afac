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

from opdbench.resources import sha256_of

PACKAGE = Path(__file__).resolve().parent
# What shapes a trained student besides its method file: the method base class and its
# building blocks, scoring, rollouts, the engines, and the tasks (prompts, verifiers).
TRAINING_CODE = ("method.py", "scoring.py", "rollout.py", "models.py", "blocks", "engines", "tasks")
# What shapes an evaluation's numbers: sampling (the generation backends), the verifiers
# (tasks) and the metrics.
EVALUATION_CODE = ("evaluation.py", "generation.py", "metrics.py", "rollout.py", "models.py", "tasks")


def _files(parts: tuple[str, ...]) -> list[Path]:
    files = []
    for part in parts:
        path = PACKAGE / part
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


@lru_cache(maxsize=None)
def package_code_hash(parts: tuple[str, ...]) -> str:
    """sha256 (16 hex digits) over the package files named by ``parts``, with their relative names."""
    digest = hashlib.sha256()
    for path in _files(parts):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    return sha256_of(path)[:16]


def method_code(cls: type) -> dict[str, str]:
    """The code a run of method ``cls`` depends on: its own file and the training code."""
    return {"method_file": file_hash(inspect.getfile(cls)), "training_code": package_code_hash(TRAINING_CODE)}
