"""Atomic writes: every results and state file is written to a temporary file in its own
directory, flushed to disk and renamed over the target (``os.replace``). A reader (a rerun,
Snakemake, the next rule) sees either the old file or the whole new one, never half of one;
a writer that raises leaves the old file as it was and no temporary file behind.

- ``atomic_write_text(path, text)``: a whole text file.
- ``atomic_open(path)``: a file object to write (jsonl writers).
- ``atomic_path(path)``: a temporary path for libraries that write by path (``to_csv``,
  ``savefig``, ``torch.save``). It ends with the target's name, so suffix-driven format or
  compression inference still works.
- ``atomic_dir(path)``: a temporary directory for ``save_pretrained``, renamed into place.

Temporary names start with ``.tmp-``; only a process killed while writing leaves one behind
(``remove_temporaries`` clears them in a directory that one process owns).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator

TEMP_PREFIX = ".tmp-"


class StateFileError(RuntimeError):
    """A results or state file that is unreadable or disagrees with another one; the message
    names the file(s) and what to do."""


def _temp_name(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort (some filesystems cannot fsync a directory)."""
    try:
        _fsync(directory)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, the
    file written there replaces ``path``. On an exception it is removed and ``path`` is
    untouched. The parent directory is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", fsync: bool = True, **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only when the block completes."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole file (mode 'w' or 'wb'), not mode '{mode}'")
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; when the block completes, it
    becomes ``path`` (an existing ``path`` is moved aside and removed). A kill between the two
    renames leaves no ``path`` at all, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        old = None
        if path.exists():
            old = _temp_name(path)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(directory: str | Path) -> None:
    """Remove what killed writers left in ``directory`` (only for a directory that one
    process writes at a time, e.g. a run's checkpoints)."""
    directory = Path(directory)
    if directory.is_dir():
        for f in directory.glob(TEMP_PREFIX + "*"):
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)
