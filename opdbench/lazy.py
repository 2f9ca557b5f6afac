"""Heavy libraries imported on first use (the standard library's ``importlib.util.LazyLoader``).

Building the DAG (``snakemake -n``) imports the method files, the engines and the tasks to check
the config, but runs none of their model code, so it must not need torch or transformers: a
login node or a CI runner without the training stack can plan a paper-scale experiment. Modules
that Snakemake imports write ``torch = lazy_import("torch")`` instead of ``import torch``; the
library is executed at its first attribute access (``torch.tensor``; ``@no_grad`` below stands for ``@torch.no_grad()``), which
happens only in the jobs.

A plain ``import torch`` anywhere after that also loads it (Python's import reads the module's
``__spec__``), so every module on the DAG's import path uses this function. ``loaded`` tells a
test which libraries were executed.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
import types


def lazy_import(name: str) -> types.ModuleType:
    """The module ``name``, executed at its first attribute access (at once if already imported;
    a stand-in that raises on use if it is not installed)."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        spec = None
    if spec is None:  # not installed (a login node): planning goes on, a use says so
        return _Missing(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class _Missing(types.ModuleType):
    """A library that is not installed here: any use raises ModuleNotFoundError naming it."""

    def __getattr__(self, attr):
        raise ModuleNotFoundError(f"No module named '{self.__name__}' (needed by the jobs, not to plan the DAG: "
                                  "install the lock, make setup)", name=self.__name__)


def loaded(name: str) -> bool:
    """Whether ``name`` has been executed in this process (a lazy module not yet used is not)."""
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, importlib.util._LazyModule)


torch = lazy_import("torch")


def no_grad(fn):
    """``@torch.no_grad()`` that loads torch when the function runs, not when it is defined."""
    @functools.wraps(fn)
    def without_grad(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)

    return without_grad
