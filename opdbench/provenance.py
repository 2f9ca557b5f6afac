"""Provenance stamped on every results file: config hash, method diff, code and data versions."""
from __future__ import annotations

import json
import os
import re
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

    import tokenizers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "opdbench": opdbench.__version__}


# Environment variables that choose which kernels torch, MKL and oneDNN run (and so the last
# bits of every result), and the thread counts.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
              "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
_ISA_FLAGS = re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx512\w*|amx\w*|avx_vnni\w*)$")


def _cpuinfo() -> dict[str, Any]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "vendor_id", "cpu family", "model", "stepping", "flags") and key not in info:
                    info[key] = value.strip()
                if not line.strip() and info:
                    break
    except OSError:
        return {"cpu": platform.processor() or platform.machine()}
    flags = [f for f in info.pop("flags", "").split() if _ISA_FLAGS.match(f)]
    return {"cpu": info.get("model name", platform.machine()), "cpu_vendor": info.get("vendor_id"),
            "cpu_family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "isa_flags": sorted(flags)}


def machine() -> dict[str, Any]:
    """What selects the numerical kernels a result was computed with: the CPU, its
    instruction-set flags, the kernel level torch chose, threads, the BLAS and oneDNN
    builds, the GPU, and the environment variables that override any of these. Two
    leaderboards that differ can be told apart by this block."""
    import torch

    config = torch.__config__.show()
    blas = next((line.strip(" -") for line in config.splitlines() if "Math Kernel Library" in line or "OpenBLAS" in line),
                None)
    onednn = next((line.strip(" -") for line in config.splitlines() if "MKL-DNN" in line or "oneDNN" in line), None)
    out = {**_cpuinfo(), "logical_cpus": os.cpu_count(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
           "blas": blas, "onednn": onednn, "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
    return out


def stamp(**fields: Any) -> dict[str, Any]:
    return {"code_version": code_version(), "libraries": library_versions(), "machine": machine(), **fields}


def write_json(path: str | Path, obj: Any) -> None:
    """A JSON results file, written atomically (the old file or the whole new one)."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
