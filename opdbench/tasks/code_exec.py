"""Running untrusted, model-generated Python: the code runs in a sandboxed process, the
verdict is decided outside it. ``docs/sandbox.md`` has the threat model.

Two sides:

- The *trusted side* is the process that calls ``check_function`` / ``check_problem``. It
  alone holds the expected outputs. It sends the code and the test inputs (never the
  expected outputs) to a runner, reads the sandboxed process's outputs from a pipe, one
  message per input, each within its input's time limit after the previous one (plus one
  start-up allowance), parses them with a parser of plain literal data (``_decode``) and
  compares them with the expected outputs as EvalPlus 0.3.1 does (``_compare``, ported from
  ``evalplus/eval/__init__.py:unsafe_execute``, with EvalPlus's special oracles). When a
  deadline passes, the runner kills the sandbox's whole process tree and the remaining
  inputs count as timeouts. The sandbox never sends a verdict and shares no memory, lock or
  timer with the trusted side.
- The *runner* is a bare interpreter that forks the sandboxed child and, when the trusted
  side says so, kills and reaps it and removes its cgroup. It never runs untrusted code and
  never sees expected outputs (the child is a copy of it). By default it is a *zygote*,
  started once per checking thread and reused: fork() copies the forking process's page
  tables, so forking from a training process that holds torch and two models costs several
  times as much (``benchmarks/sandbox_overhead.py``). Where no zygote can start, or one
  dies, the caller forks and execs a fresh runner for each check: a plain fork of the
  caller would put the caller's memory (the data set, its expected outputs) into the
  untrusted process.

The sandboxed child, before any model code runs (each layer the kernel or the user's
privileges refuse is skipped, and the layers that applied are logged once per process):

- its own session (the runner kills the group), PID 1 of a new PID namespace (whatever it
  spawns dies with it), a memory + pids cgroup of its own (cgroup v1 or v2) that caps all its
  processes, shared memory and kernel buffers together at ``memory_bytes``;
- new network, IPC and UTS namespaces (no network at all, abstract unix sockets included);
- a private mount namespace with a new, minimal root (``pivot_root``): a tmpfs holding
  read-only binds of the interpreter, its standard library, the system libraries it loads
  and numpy; a private /proc, /dev/null|zero|random|urandom, a size-capped tmpfs /tmp;
- inherited descriptors closed but the result pipe, stdio on /dev/null, an empty
  environment (the initial block /proc/self/environ shows too);
- uid/gid ``nobody``, ``no_new_privs``, RLIMIT_NPROC/NOFILE/FSIZE/CORE/AS, and a seccomp
  filter that fails with EPERM the calls that create namespaces, mount, trace other
  processes or reach kernel interfaces it has no use for (x86_64 only);
- EvalPlus's ``reliability_guard`` and ``swallow_io`` around the code, as in EvalPlus.

The child serializes each output by exact type (``_encode``); anything that is not plain
data (an object with a custom ``__eq__``, an ``int`` subclass) arrives as an opaque value
that equals nothing.

Statuses: ``pass`` (every test passed), ``fail`` (some output was wrong, or the code raised,
exited or did not define the entry point), ``timeout`` (an input ran past its limit, or the
code did not load in time), ``no_code`` (the response had no code block).
"""
from __future__ import annotations

import atexit
import ctypes
import io
import json
import os
import pickle
import platform
import queue
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

NOBODY = 65534
# Imported by each runner before it forks: a forked child has them at no cost, and before its
# root changes (or where there is no new root, before it drops to ``nobody``, who cannot
# read a Python installed under /root). The standard modules benchmark solutions import.
PRELOADED = ("math", "cmath", "heapq", "bisect", "itertools", "functools", "collections", "re", "string",
             "random", "statistics", "fractions", "decimal", "datetime", "hashlib", "typing", "copy",
             "operator", "array", "struct", "queue", "json", "time", "calendar", "textwrap", "unicodedata",
             "numbers", "enum", "dataclasses", "contextlib", "sys", "io", "numpy", "evalplus.eval.utils")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
STARTUP_S = 2.0  # allowance before the first result: sandbox set-up and the code's module-level statements
MAX_MESSAGE = 16 << 20  # bytes of one serialized output; a longer one fails the rest
SANDBOX_DIR_BYTES = 64 << 20  # the tmpfs /tmp the code may write to
SANDBOX_PIDS = 64  # processes and threads per check (pids cgroup), and nobody's RLIMIT_NPROC
SANDBOX_FILES = 64  # RLIMIT_NOFILE: open descriptors per process (pipes, sockets, memfds)


@dataclass
class CheckResult:
    passed: bool
    status: str  # pass | fail | timeout | no_code
    details: list[bool] = field(default_factory=list)  # one per test input


def extract_code(response: str) -> str | None:
    """The last fenced code block (```python ...``` preferred over other languages), or None."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(response or "")]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    plain = [body for lang, body in blocks if lang == ""]
    chosen = python or plain
    return chosen[-1] if chosen else None


# -- outputs as plain data ------------------------------------------------------------------
# JSON with one-key objects as tags: {"t": [..]} tuple, {"s": [..]} set, {"f": [..]}
# frozenset, {"d": [[k, v], ..]} dict, {"b": hex} bytes, {"i": hex} int beyond 2**53,
# {"o": 0} a value of any other type. Floats keep nan and inf (NaN, Infinity).
_NUMPY_SCALARS: dict = {}  # exact numpy scalar types -> converted with .item() (np.float64(1.0) == 1.0)


def _encode(x: Any) -> Any:
    """In the sandbox: the output as JSON-ready data, by exact type (no subclass gets in)."""
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -(1 << 53) < x < (1 << 53) else {"i": format(x, "x")}
    if t is list:
        return [_encode(v) for v in x]
    if t is tuple:
        return {"t": [_encode(v) for v in x]}
    if t is dict:
        return {"d": [[_encode(k), _encode(v)] for k, v in x.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "f": [_encode(v) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    if t in _NUMPY_SCALARS:
        return _encode(x.item())
    return {"o": 0}


class _Opaque:
    """A sandbox output that was not plain data: equal to nothing but itself, not None."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque output>"


def _tagged(obj: dict) -> Any:
    if len(obj) != 1:
        raise ValueError("not a tagged value")
    ((tag, v),) = obj.items()
    if tag == "o":
        return _Opaque()
    if tag == "b" and type(v) is str:
        return bytes.fromhex(v)
    if tag == "i" and type(v) is str and re.fullmatch(r"-?[0-9a-f]+", v):
        return int(v, 16)
    if type(v) is not list:
        raise ValueError("not a tagged value")
    if tag == "t":
        return tuple(v)
    if tag == "s":
        return set(v)
    if tag == "f":
        return frozenset(v)
    if tag == "d" and all(type(kv) is list and len(kv) == 2 for kv in v):
        return {k: value for k, value in v}
    raise ValueError("not a tagged value")


def _decode(data: bytes) -> Any:
    """On the trusted side: a message of the sandbox as plain data (lists, tuples, dicts,
    sets, str, bytes, int, float, bool, None, opaque). ``json`` builds nothing else; nesting
    is bounded by the interpreter's recursion limit (RecursionError), size by MAX_MESSAGE."""
    return json.loads(data, object_hook=_tagged)


# -- the comparison: on the trusted side -----------------------------------------------------
def _compare(dataset: str, entry_point: str, inputs: list, outputs: list, expected: list, atol: float
             ) -> list[bool]:
    """EvalPlus 0.3.1's verdict per input, ported from ``evalplus/eval/__init__.py``
    (``unsafe_execute``'s loop: exact match, the special oracles of HumanEval+ / MBPP+, then
    ``np.allclose`` with ``atol``, which becomes 1e-6 from the first float output on, as
    there), using EvalPlus's own ``is_floats`` and oracle functions. ``outputs[i]`` is None
    where input i raised or sent nothing, else ``("r", value)``. Two differences, both on the
    safe side: the oracles see the inputs as given, not as the code may have mutated them,
    and a passing find_zero input counts as passed (0.3.1 ``continue``s before counting it)."""
    import numpy as np
    from evalplus.eval import is_floats
    from evalplus.eval._special_oracle import (MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS,
                                               _digit_distance_nums, _poly, _surface_Area)

    details = []
    for inp, got, exp in zip(inputs, outputs, expected):
        if got is None:
            details.append(False)
            continue
        out = got[1]
        try:
            exact_match = out == exp
            if dataset == "mbpp":
                if "are_equivalent" == entry_point:  # Mbpp/164 special oracle
                    exact_match = exact_match or True
                elif "sum_div" == entry_point:  # Mbpp/295 special oracle
                    exact_match = exact_match or out == 0
                elif "surface_Area" == entry_point:  # Mbpp/581 special oracle
                    exact_match = exact_match or abs(out - _surface_Area(*inp)) <= atol
                elif "digit_distance_nums" == entry_point:  # Mbpp/558 special oracle
                    exact_match = exact_match or out == _digit_distance_nums(*inp)
                elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
                    exact_match = set(out) == set(exp)
                elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
                    if isinstance(out, bool):
                        exact_match = out == exp
                    else:
                        exact_match = exp == (out is not None)
            if dataset == "humaneval" and "find_zero" == entry_point:
                assert abs(_poly(*inp, out)) <= atol
                details.append(True)
                continue
            if atol == 0 and is_floats(exp):
                atol = 1e-6  # enforce atol for float comparison
            if not exact_match and atol != 0:
                assert type(out) == type(exp)  # noqa: E721
                if isinstance(exp, (list, tuple)):
                    assert len(out) == len(exp)
                assert np.allclose(out, exp, rtol=1e-07, atol=atol)
            else:
                assert exact_match
        except Exception:
            details.append(False)
            continue
        details.append(True)
    return details


def _same_stdout(got: str, want: str) -> bool:
    """LiveCodeBench's rule: lines compared with surrounding whitespace stripped."""
    return [line.strip() for line in got.strip().splitlines()] == [line.strip() for line in want.strip().splitlines()]


# -- the sandboxed child ---------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, AT_RECURSIVE, SYS_MOUNT_SETATTR = 1, 2, 0x8000, 442  # Linux >= 5.12
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda x: None if x is None else os.fsencode(x)  # noqa: E731
    _ok(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _mount_setattr(path: str, recursive: bool, set_: int, clear: int = 0) -> None:
    attr = (ctypes.c_uint64 * 4)(set_, clear, 0, 0)  # struct mount_attr
    _ok(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(-100), ctypes.c_char_p(os.fsencode(path)),
                      ctypes.c_uint(AT_RECURSIVE if recursive else 0), attr, ctypes.c_size_t(32)), "mount_setattr")


# The seccomp filter: x86_64 system calls that fail with EPERM in the sandbox.
_AUDIT_ARCH_X86_64, _X32_SYSCALL_BIT = 0xC000003E, 0x40000000
_DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "personality": 135, "vhangup": 153, "pivot_root": 155, "chroot": 161,
    "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "kexec_load": 246, "add_key": 248, "request_key": 249,
    "keyctl": 250, "unshare": 272, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442,
    "quotactl_fd": 443, "memfd_secret": 447,
}
_SYS_CLONE, _SYS_CLONE3 = 56, 435
_CLONE_NS_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET


def _seccomp_program() -> bytes:
    """A classic-BPF seccomp filter: another architecture (or the x32 ABI) is killed; the
    calls above and clone() with namespace flags fail with EPERM; clone3 fails with ENOSYS
    (its flags sit in memory a filter cannot read; glibc then falls back to clone)."""
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, kill, errno = 0x7FFF0000, 0x80000000, 0x00050000
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH_X86_64), (ret, 0, 0, kill),  # seccomp_data.arch
            (ld, 0, 0, 0), (jset, 0, 1, _X32_SYSCALL_BIT), (ret, 0, 0, errno | 1)]  # seccomp_data.nr
    for nr in sorted(_DENIED_X86_64.values()):
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, errno | 1)]
    prog += [(jeq, 0, 1, _SYS_CLONE3), (ret, 0, 0, errno | 38),
             (jeq, 0, 4, _SYS_CLONE), (ld, 0, 0, 16), (jset, 0, 1, _CLONE_NS_FLAGS),  # args[0], low half
             (ret, 0, 0, errno | 1), (ret, 0, 0, allow),
             (ret, 0, 0, allow)]
    return b"".join(struct.pack("<HBBI", *insn) for insn in prog)


def _install_seccomp() -> bool:
    """After no_new_privs. False (and nothing installed) on another architecture."""
    if platform.machine() != "x86_64":
        return False
    code = _seccomp_program()
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(code) // 8, ctypes.addressof(buf))
    ul = ctypes.c_ulong
    return _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ul(SECCOMP_MODE_FILTER), ctypes.byref(fprog), ul(0), ul(0)) == 0


def _visible_paths() -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """What the new root shows (computed once per runner): read-only binds of the interpreter,
    its standard library, the shared libraries they load and numpy; the top-level symlinks
    that lead there; directories hidden again under a bind (the stdlib's site-packages)."""
    import sysconfig

    prefix = os.path.realpath(sys.base_prefix)
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    binds = [os.path.realpath(sys.executable), stdlib, os.path.realpath(sysconfig.get_paths()["platstdlib"])]
    libdir = sysconfig.get_config_var("LIBDIR") or os.path.join(prefix, "lib")
    ldlib = sysconfig.get_config_var("INSTSONAME")
    if ldlib and os.path.exists(os.path.join(libdir, ldlib)):
        binds.append(os.path.realpath(os.path.join(libdir, ldlib)))
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for d in (f"/lib/{multiarch}", f"/usr/lib/{multiarch}", "/lib64", "/usr/lib64", "/etc/ld.so.cache"):
        if multiarch or not d.endswith("/"):  # the dynamic loader and the libraries the interpreter loads
            binds.append(os.path.realpath(d))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        package = os.path.dirname(os.path.realpath(numpy.__file__))
        binds += [package, package + ".libs"]
    binds = sorted({b for b in binds if os.path.exists(b)})
    binds = [b for b in binds if not any(b != o and b.startswith(o + "/") for o in binds)]  # outermost only
    links = [(p, os.readlink(p)) for p in ("/lib", "/lib64", "/lib32", "/libx32") if os.path.islink(p)]
    hidden = [p for p in (os.path.join(stdlib, "site-packages"), os.path.join(stdlib, "dist-packages"))
              if os.path.isdir(p)]
    return binds, links, hidden


def _remove_dead_runners_dirs(base: str, pattern: str) -> None:
    """Remove the empty directories in ``base`` whose name (``pattern``, the first group a
    pid) belongs to a runner that no longer runs."""
    for entry in os.listdir(base):
        m = re.fullmatch(pattern, entry)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            try:
                os.rmdir(os.path.join(base, entry))
            except OSError:
                pass


def _template_root(visible: tuple) -> str | None:
    """Once per runner (root only): move the runner into a private mount namespace and build
    there, on a tmpfs, the sandbox's root: read-only binds of ``visible``, /dev's harmless
    devices, empty /tmp and /proc to mount on. The host sees none of it; each child copies
    it with its own mount namespace (``_enter_root``), which costs a few system calls
    instead of a dozen mounts per check. None where it is refused."""
    if os.getuid() != 0:
        return None
    _remove_dead_runners_dirs(tempfile.gettempdir(), r"opdbench-root-(\d+)-\w+")  # mount points of killed runners
    mnt = tempfile.mkdtemp(prefix=f"opdbench-root-{os.getpid()}-")
    if _libc.unshare(CLONE_NEWNS) != 0:
        os.rmdir(mnt)
        return None
    binds, links, hidden = visible
    global _TMP_BINDS  # inherited by the children, which cover /tmp with a fresh tmpfs
    _TMP_BINDS = [b for b in binds if b.startswith("/tmp/")]
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # first: nothing below may reach the host
        _mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path, target in links:
            os.symlink(target, mnt + path)
        for path in binds + ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"]:
            dest = mnt + path
            if os.path.isdir(path):
                os.makedirs(dest, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                open(dest, "w").close()
            _mount(path, dest, None, MS_BIND | MS_REC)
        for path in hidden:
            _mount("tmpfs", mnt + path, "tmpfs", MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
        os.makedirs(mnt + "/tmp", 0o755, exist_ok=True)  # exists when the interpreter or numpy lies under /tmp
        os.mkdir(mnt + "/proc", 0o555)
        _mount_setattr(mnt, True, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
    except OSError:
        _libc.umount2(os.fsencode(mnt), MNT_DETACH)
        return None
    return mnt


_TMP_BINDS: list[str] = []  # visible paths under /tmp (a virtual environment there): bound again over the fresh /tmp


def _enter_root(mnt: str, own_proc: bool) -> None:
    """In the child: a mount namespace of its own (a copy of the runner's), a fresh
    size-capped /tmp, a /proc of its PID namespace, and the template as its root."""
    _ok(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    kept = [(path, os.open(mnt + path, os.O_PATH)) for path in _TMP_BINDS]  # before /tmp is covered
    _mount("tmpfs", mnt + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={SANDBOX_DIR_BYTES},mode=1777")
    for path, fd in kept:  # read-only like their source in the template
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(mnt + path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(mnt + path), exist_ok=True)
            open(mnt + path, "w").close()
        _mount(f"/proc/self/fd/{fd}", mnt + path, None, MS_BIND | MS_REC)
        os.close(fd)
    if own_proc:
        _mount("proc", mnt + "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(mnt)
    if _SYS_PIVOT_ROOT is not None and _libc.syscall(ctypes.c_long(_SYS_PIVOT_ROOT), b".", b".") == 0:
        _ok(_libc.umount2(b".", MNT_DETACH), "umount the old root")  # the old root, stacked under the new
    else:
        os.chroot(".")
    os.chdir("/")


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _close_fds(keep: int) -> None:
    """stdin/stdout/stderr on /dev/null; every other inherited descriptor closed but ``keep``."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def _scrub_environment() -> None:
    """Empty os.environ, the C environment and the block the process started with: clearing
    os.environ leaves that block, which /proc/self/environ shows, in place."""
    import posix

    os.environ.clear()  # unsetenv() each
    posix.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    with open("/proc/self/stat") as f:
        start, end = map(int, f.read().rsplit(")", 1)[1].split()[47:49])  # env_start, env_end (proc(5))
    with open("/proc/self/maps") as f:  # zeroed only if it lies on the stack, where exec put it
        stacks = [line.split()[0].split("-") for line in f if line.rstrip().endswith("[stack]")]
    if any(int(lo, 16) <= start < end <= int(hi, 16) for lo, hi in stacks):
        ctypes.memset(start, 0, end - start)


def _harden(workdir: str | None, memory_bytes: int, keep_fd: int, cgroups: list[str], template: str | None) -> tuple:
    """The sandbox's layers, in the child before any model code (see the module's docstring).
    Returns the address-space limit for EvalPlus's guard and the layers that applied."""
    import builtins
    import resource

    layers = []
    os.setsid()  # own process group: the runner kills it whole
    as_root = os.getuid() == 0
    pid_ns = os.getpid() == 1  # started in a PID namespace of its own (_fork_child)
    if pid_ns:
        layers.append("pid-namespace")
    joined = []
    for path in cgroups:  # before anything is allocated; the runner made and limited them
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write("0")
            joined.append(path)
        except OSError:
            pass
    if cgroups:
        kinds = [p.split("/")[4] if p.split("/")[4] in ("memory", "pids") else "v2" for p in joined]
        layers.append(f"cgroup({'+'.join(kinds)})" if len(joined) == len(cgroups) else "cgroup-refused")
    _close_fds(keep_fd)
    limit = _address_space() + memory_bytes  # what the fork inherited, plus the budget
    _scrub_environment()
    if _libc.unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) == 0:
        layers.append("net+ipc+uts-namespaces")
    elif _libc.unshare(CLONE_NEWNET) == 0:
        layers.append("net-namespace")
    else:  # needs CAP_SYS_ADMIN; otherwise disable sockets at the Python level
        def no_network(*args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")
        socket.socket = socket.create_connection = socket.socketpair = no_network  # type: ignore[assignment]
    root = workdir
    if template is not None:
        try:
            _enter_root(template, pid_ns)
            layers.append("new-root")
            root = "/tmp"
        except OSError as e:  # no model code runs without it: the check fails
            raise RuntimeError(f"the sandbox's root could not be entered: {e}") from e
    else:
        layers.append("no-new-root")
    # RLIMIT_FSIZE also caps each memfd; with RLIMIT_NOFILE and RLIMIT_NPROC it bounds what the
    # processes can hold in files and kernel buffers where no cgroup counts it.
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (SANDBOX_FILES, SANDBOX_FILES))
    tempfile.tempdir = root
    os.chdir(root)
    if as_root:
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (SANDBOX_PIDS, SANDBOX_PIDS))  # every nobody process
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            layers.append("uid-nobody")
        except OSError:  # e.g. root without CAP_SETUID in a container
            pass
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # exec of a setuid binary gains nothing
    if pid_ns:  # after setuid, which clears it: should the runner die, so does PID 1, and all it spawned
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    layers.append("seccomp" if _install_seccomp() else f"no-seccomp({platform.machine()})")

    # EvalPlus's guard later removes open() (hence the copies), not io.open or os.open; these
    # guard writes wherever the new root was refused.
    real_open, real_os_open, root_real, getcwd = io.open, os.open, os.path.realpath(root), os.getcwd

    def refuse_outside(file) -> None:
        path = os.path.realpath(os.path.join(getcwd(), os.fsdecode(file)))
        if not (path == root_real or path.startswith(root_real + os.sep) or path == os.devnull):
            raise PermissionError(f"writing outside the sandbox is disabled: {path}")

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            refuse_outside(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            refuse_outside(path if dir_fd is None else os.path.join(f"/proc/self/fd/{dir_fd}", path))
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    builtins.open = io.open = guarded_open  # type: ignore[assignment]
    os.open = guarded_os_open  # type: ignore[assignment]
    return limit, layers


class _Out:
    """The child's end of the result pipe: one length-prefixed JSON message per input."""

    def __init__(self, fd: int) -> None:
        self.fd, self.write, self.pack = fd, os.write, struct.Struct(">I").pack

    def send(self, message: list) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        view = memoryview(self.pack(len(data)) + data)
        while view:
            view = view[self.write(self.fd, view):]

    def result(self, value: Any) -> None:
        try:
            message = ["r", _encode(value)]
        except (RecursionError, ValueError):
            message = ["r", {"o": 0}]
        self.send(message)


def _child(request: tuple, result_fd: int, workdir: str | None, cgroups: list[str], template: str | None) -> None:
    kind, memory_bytes, code, entry_point, args = request
    from evalplus.eval.utils import reliability_guard, swallow_io

    limit, layers = _harden(workdir, memory_bytes, result_fd, cgroups, template)
    out = _Out(result_fd)
    out.send(["h", layers])  # before any model code: the trusted side logs it
    reliability_guard(maximum_memory_bytes=limit)
    if kind == "function":
        namespace: dict[str, Any] = {}
        try:
            with swallow_io():
                exec(code, namespace)
                fn = namespace[entry_point]
        except BaseException:
            return out.send(["x"])
        for inp in args:
            try:
                with swallow_io():
                    value = fn(*inp)
            except BaseException:
                out.send(["e"])
                continue
            out.result(value)
    else:  # stdin/stdout programs (LiveCodeBench)
        import contextlib

        try:
            compiled = compile(code, "<solution>", "exec")
        except BaseException:
            return out.send(["x"])
        for stdin in args:
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured):
                    sys.stdin = io.StringIO(stdin)
                    try:
                        exec(compiled, {"__name__": "__main__"})
                    except SystemExit:  # a script may end with sys.exit()
                        pass
            except BaseException:
                out.send(["e"])
                continue
            out.result(captured.getvalue())


# -- the runner: forks the child, kills and reaps it, never runs model code ------------------
class _Cgroups:
    """One memory + pids cgroup per check, below the runner's own (v1: memory and pids
    hierarchies; v2: one directory), removed after the check."""

    def __init__(self) -> None:
        self.v1: dict[str, str] = {}
        self.v2: str | None = None
        self.count = 0
        try:
            with open("/proc/self/cgroup") as f:
                entries = [line.rstrip("\n").split(":", 2) for line in f]
        except OSError:
            return
        for _, controllers, path in entries:
            for c in controllers.split(","):
                if c in ("memory", "pids") and os.access(f"/sys/fs/cgroup/{c}{path}", os.W_OK):
                    self.v1[c] = f"/sys/fs/cgroup/{c}{path}".rstrip("/")
        if "memory" not in self.v1:
            self.v1 = {}
            v2 = [path for _, controllers, path in entries if controllers == ""]
            base = f"/sys/fs/cgroup{v2[0]}".rstrip("/") if v2 else ""
            if base and os.path.exists(f"{base}/cgroup.controllers") and os.access(base, os.W_OK):
                try:
                    with open(f"{base}/cgroup.subtree_control", "w") as f:
                        f.write("+memory +pids")
                except OSError:  # e.g. processes in a non-root cgroup: children get no controllers
                    pass
                with open(f"{base}/cgroup.subtree_control") as f:
                    if "memory" in f.read().split():
                        self.v2 = base
        for base in [*self.v1.values(), *([self.v2] if self.v2 else [])]:
            self._remove_stale(base)

    @property
    def available(self) -> bool:
        return bool(self.v1 or self.v2)

    @staticmethod
    def _remove_stale(base: str) -> None:
        """Groups left by runners killed mid-check."""
        _remove_dead_runners_dirs(base, r"opdbench-(\d+)-\d+")

    @staticmethod
    def _write(path: str, value: Any, required: bool = True) -> None:
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError:
            if required:
                raise

    def create(self, memory_bytes: int) -> list[str]:
        self.count += 1
        name = f"opdbench-{os.getpid()}-{self.count}"
        made: list[str] = []
        try:
            if self.v2:
                path = os.path.join(self.v2, name)
                os.mkdir(path)
                made.append(path)
                self._write(f"{path}/memory.max", memory_bytes)
                self._write(f"{path}/memory.swap.max", 0, required=False)
                self._write(f"{path}/pids.max", SANDBOX_PIDS, required=False)
            for controller, base in self.v1.items():
                path = os.path.join(base, name)
                os.mkdir(path)
                made.append(path)
                if controller == "memory":
                    self._write(f"{path}/memory.limit_in_bytes", memory_bytes)
                    self._write(f"{path}/memory.memsw.limit_in_bytes", memory_bytes, required=False)  # no swap
                else:
                    self._write(f"{path}/pids.max", SANDBOX_PIDS)
        except OSError:
            self.remove(made)
            return []
        return made

    @staticmethod
    def remove(paths: list[str]) -> None:
        """Kill what is left in the groups, then remove them (a group with tasks cannot be)."""
        deadline = time.monotonic() + 5
        for path in paths:
            if os.path.exists(f"{path}/cgroup.kill"):
                _Cgroups._write(f"{path}/cgroup.kill", 1, required=False)
            while True:
                try:
                    with open(f"{path}/cgroup.procs") as f:
                        pids = [int(p) for p in f.read().split()]
                except OSError:
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.001)


def _fork_child(request: tuple, result_fd: int, workdir: str | None, cgroups: list[str], template: str | None) -> int:
    """Fork the sandboxed child, as PID 1 of a new PID namespace where permitted (root)."""
    own = None
    try:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY)
        if _libc.unshare(CLONE_NEWPID) != 0:
            os.close(own)
            own = None
    except OSError:
        pass
    try:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(request, result_fd, workdir, cgroups, template)
            except BaseException:
                code = 1
            finally:
                os._exit(code)  # never back into the runner's loop
        return pid
    finally:
        if own is not None:
            _ok(_libc.setns(own, CLONE_NEWPID), "setns")
            os.close(own)


_HEADER = struct.Struct("<Q")


def _send_message(sock: socket.socket, obj: Any, fd: int | None = None) -> None:
    data = pickle.dumps(obj)
    header = _HEADER.pack(len(data))
    if fd is None:
        sock.sendall(header + data)
    else:
        socket.send_fds(sock, [header], [fd])
        sock.sendall(data)


def _recv_exactly(sock: socket.socket, n: int, first: bytes = b"") -> bytes:
    data = bytearray(first)
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the other end closed the socket")
        data += chunk
    return bytes(data)


def _recv_message(sock: socket.socket, with_fd: bool = False) -> Any:
    """A message of the other side (the trusted caller, or the runner); with its descriptor."""
    fd = None
    if with_fd:
        first, fds, _, _ = socket.recv_fds(sock, _HEADER.size, 1)
        if not first:
            raise EOFError("the other end closed the socket")
        fd = fds[0] if fds else None
        header = _recv_exactly(sock, _HEADER.size, first)
    else:
        header = _recv_exactly(sock, _HEADER.size)
    obj = pickle.loads(_recv_exactly(sock, _HEADER.unpack(header)[0]))
    return (obj, fd) if with_fd else obj


def _serve(fd: int, once: bool = False) -> None:
    """The runner's loop: a request (with the write end of the trusted side's result pipe)
    in; fork the child; on "finish" (or the caller's end closing) kill its process group, PID
    namespace and cgroup, reap it, acknowledge. Its own stdio go to /dev/null."""
    for name in PRELOADED:
        try:
            import_module(name)
        except ImportError:
            pass
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        _NUMPY_SCALARS.update(dict.fromkeys((numpy.float64, numpy.float32, numpy.float16, numpy.int64, numpy.int32,
                                             numpy.int16, numpy.int8, numpy.uint64, numpy.uint32, numpy.uint16,
                                             numpy.uint8, numpy.bool_, numpy.str_, numpy.bytes_)))
    sock = socket.socket(fileno=fd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    cgroups, template = _Cgroups(), _template_root(_visible_paths())
    _send_message(sock, "ready")
    try:
        _serve_checks(sock, cgroups, template, once)
    finally:
        if template is not None:
            _libc.umount2(os.fsencode(template), MNT_DETACH)
            os.rmdir(template)


def _serve_checks(sock: socket.socket, cgroups: _Cgroups, template: str | None, once: bool) -> None:
    while True:
        try:
            request, result_fd = _recv_message(sock, with_fd=True)
        except (EOFError, OSError):
            return
        workdir = None
        if template is None:  # the code's directory where there is no new root
            workdir = tempfile.mkdtemp(prefix="opdbench-sandbox-")
            os.chmod(workdir, 0o777)
        groups = cgroups.create(request[1]) if cgroups.available else []
        pid = None
        try:
            pid = _fork_child(request, result_fd, workdir, groups, template)
        except OSError:  # e.g. no process could be made: the trusted side reads EOF, the check fails
            pass
        finally:
            os.close(result_fd)
            try:
                _recv_message(sock)  # "finish": the trusted side has what it waits for, or gave up
            except (EOFError, OSError):
                once = True
            if pid is not None:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                os.waitpid(pid, 0)
            _Cgroups.remove(groups)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        try:
            _send_message(sock, "done")
        except OSError:
            return
        if once:
            return


# -- the trusted side ------------------------------------------------------------------------
class _Zygote:
    """A runner: a bare interpreter that forks the sandboxed children for one thread at a
    time; the idle ones wait in ``idle`` for the next check. ``once``: it serves one check
    (the fallback). It exits when its socket closes, which happens when this process exits,
    however it exits."""

    idle: queue.SimpleQueue = queue.SimpleQueue()
    started: list = []
    failed = False  # one died: no more are started

    def __init__(self, once: bool = False) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", f"from opdbench.tasks.code_exec import _serve; _serve({theirs.fileno()}, {once})"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
                pass_fds=(theirs.fileno(),), env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": package_root})
        finally:
            theirs.close()
        self.sock = ours
        if not once:
            _Zygote.started.append(self)
        self.sock.settimeout(60)
        try:
            if _recv_message(self.sock) != "ready":
                raise OSError("the runner did not start")
        except (OSError, EOFError, pickle.UnpicklingError) as e:
            self.close()
            raise OSError(f"the runner did not start: {e}") from e

    @classmethod
    def take(cls) -> "_Zygote | None":
        if cls.failed:
            return None
        try:
            return cls.idle.get_nowait()
        except queue.Empty:
            try:
                return cls()
            except OSError:
                cls.failed = True
                return None

    def start(self, request: tuple, result_w: int) -> None:
        self.sock.settimeout(10)
        _send_message(self.sock, request, fd=result_w)

    def finish(self) -> None:
        """Have the runner kill, reap and clean up the check's processes; wait until it has."""
        self.sock.settimeout(30)
        _send_message(self.sock, "finish")
        if _recv_message(self.sock) != "done":
            raise OSError("the runner did not finish the check")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@atexit.register
def _close_zygotes() -> None:
    for zygote in _Zygote.started:
        zygote.close()


USE_ZYGOTE = True  # False: every check forks and execs a runner of its own (benchmarks/sandbox_overhead.py)
_logged = False
# What this process's checks went through, for the evaluation record (checker_report):
# "path:zygote" / "path:fallback" (which runner forked the child), "ending:<how it ended>".
_CHECKS: Counter = Counter()
_CHECKS_LOCK = threading.Lock()
_LAYERS: list = []


def checker_report() -> dict[str, Any]:
    """Cumulative counts of this process's checks by runner path and ending, and the sandbox
    layers that applied: two evaluations that differ can be told apart by how they were checked."""
    with _CHECKS_LOCK:
        counts = dict(_CHECKS)
    return {"checks": counts, "layers": list(_LAYERS)}


def _count(*keys: str) -> None:
    with _CHECKS_LOCK:
        _CHECKS.update(keys)


def _log_layers(layers: list) -> None:
    global _logged
    if _logged or type(layers) is not list:
        return
    _logged = True
    _LAYERS[:] = [str(layer) for layer in layers]
    memory = ("the cgroup (all its processes, shared memory and kernel buffers together)"
              if any(str(layer).startswith("cgroup(") for layer in layers) else
              f"rlimits only: at most {SANDBOX_PIDS} processes (as nobody) x (RLIMIT_AS: size at fork + memory_mb), "
              f"{SANDBOX_FILES} descriptors each, files and memfds <= 16 MiB each")
    print(f"[sandbox] layers: {' '.join(map(str, layers))}; memory bounded by {memory}", file=sys.stderr)


class _Results:
    """Reads the child's messages from the pipe with deadlines; never blocks without one."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, bytearray()
        os.set_blocking(fd, False)
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def _fill(self, n: int, deadline: float) -> str | None:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            if not self.poller.poll(max(1, int(remaining * 1000 + 0.999))):
                continue
            try:
                chunk = os.read(self.fd, max(n - len(self.buf), 1 << 16))
            except BlockingIOError:
                continue
            if not chunk:
                return "closed"
            self.buf += chunk
        return None

    def next(self, deadline: float) -> tuple[str | None, Any]:
        """(None, message), or (why not: timeout | closed | bad, None)."""
        failure = self._fill(4, deadline)
        if failure:
            return failure, None
        size = int.from_bytes(self.buf[:4], "big")
        if size > MAX_MESSAGE:
            return "bad", None
        failure = self._fill(4 + size, deadline)
        if failure:
            return failure, None
        data = bytes(self.buf[4:4 + size])
        del self.buf[:4 + size]
        try:
            return None, _decode(data)
        except (ValueError, TypeError, RecursionError, MemoryError):
            return "bad", None


def _collect(fd: int, n: int, limits: Sequence[float]) -> tuple[list, str]:
    """One entry per input: ("r", output), or None where it raised; fewer than n where the
    child stopped. The ending: done | timeout | closed | bad (an unreadable message) | error
    (the code did not load)."""
    reader = _Results(fd)
    outputs: list = []
    deadline = time.monotonic() + STARTUP_S + (limits[0] if n else 0)
    hello = True
    while len(outputs) < n:
        failure, message = reader.next(deadline)
        if failure:
            return outputs, failure
        if type(message) is not list or not message or type(message[0]) is not str:
            return outputs, "bad"
        tag = message[0]
        if hello:
            hello = False
            if tag == "h" and len(message) == 2:
                _log_layers(message[1])
                continue
            return outputs, "bad"
        if tag == "x":
            return outputs, "error"
        if tag == "e" and len(message) == 1:
            outputs.append(None)
        elif tag == "r" and len(message) == 2:
            outputs.append(("r", message[1]))
        else:
            return outputs, "bad"
        if len(outputs) < n:
            deadline = time.monotonic() + limits[len(outputs)]
    return outputs, "done"


def _run(zygote: _Zygote, request: tuple, n: int, limits: Sequence[float]) -> tuple[list, str]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            zygote.start(request, write_end)
        finally:
            os.close(write_end)  # the child holds the only write end: EOF when it is gone
        outputs, ending = _collect(read_end, n, limits)
        zygote.finish()
    finally:
        os.close(read_end)
    return outputs, ending


def _fork_and_check(request: tuple, n: int, limits: Sequence[float]) -> tuple[list, str]:
    """The fallback: a runner of this check's own, forked and exec'ed from this process."""
    try:
        runner = _Zygote(once=True)
    except OSError as e:
        print(f"[sandbox] no runner could start ({e}); the check fails", file=sys.stderr)
        return [], "error"
    try:
        return _run(runner, request, n, limits)
    except (OSError, EOFError, pickle.UnpicklingError):
        return [], "error"
    finally:
        runner.close()


def _execute(request: tuple, n: int, limits: Sequence[float]) -> tuple[list, str]:
    """Run one check in a sandboxed child forked by a zygote (see the module's docstring),
    or by a runner of its own where no zygote is available."""
    zygote = _Zygote.take() if USE_ZYGOTE else None
    if zygote is not None:
        try:
            result = _run(zygote, request, n, limits)
        except (OSError, EOFError, pickle.UnpicklingError):  # it died: this and later checks fork their own
            zygote.close()
            _Zygote.failed = True
            print(f"[sandbox] the zygote exited ({zygote.proc.returncode}); checks now fork from this process",
                  file=sys.stderr)
        else:
            _Zygote.idle.put(zygote)
            _count("path:zygote", f"ending:{result[1]}")
            return result
    result = _fork_and_check(request, n, limits)
    _count("path:fallback", f"ending:{result[1]}")
    return result


def _verdict(details: list[bool], n: int, ending: str) -> CheckResult:
    details = details + [False] * (n - len(details))
    if ending == "done" and all(details):
        return CheckResult(True, "pass", details)
    return CheckResult(False, "timeout" if ending == "timeout" else "fail", details)


def _limits(n: int, time_limit_s: float, time_limits: Sequence[float] | None) -> list[float]:
    return list(time_limits) if time_limits is not None else [time_limit_s] * n


def check_function(code: str | None, entry_point: str, inputs: list, expected: list, *, atol: float = 0.0,
                   time_limit_s: float = 2.0, time_limits: Sequence[float] | None = None,
                   memory_bytes: int = 1 << 30, dataset: str = "humaneval") -> CheckResult:
    """Call ``entry_point(*inputs[i])`` for every i in the sandbox and compare the outputs here
    with ``expected[i]`` as EvalPlus does (``dataset`` selects EvalPlus's special oracles for
    HumanEval+ / MBPP+). ``expected`` never leaves this process."""
    if code is None:
        return CheckResult(False, "no_code", [False] * len(inputs))
    limits = _limits(len(inputs), time_limit_s, time_limits)
    outputs, ending = _execute(("function", memory_bytes, code, entry_point, list(inputs)), len(inputs), limits)
    return _verdict(_compare(dataset, entry_point, inputs, outputs, expected, atol), len(inputs), ending)


def check_stdio(code: str | None, cases: list[tuple[str, str]], *, time_limit_s: float = 2.0,
                time_limits: Sequence[float] | None = None, memory_bytes: int = 1 << 30) -> CheckResult:
    """Run the program once per (stdin, expected stdout) case; only the stdin is sent."""
    if code is None:
        return CheckResult(False, "no_code", [False] * len(cases))
    limits = _limits(len(cases), time_limit_s, time_limits)
    outputs, ending = _execute(("stdio", memory_bytes, code, None, [str(c[0]) for c in cases]), len(cases), limits)
    details = [got is not None and type(got[1]) is str and _same_stdout(got[1], want)
               for got, (_, want) in zip(outputs, cases)]
    return _verdict(details, len(cases), ending)


def check_problem(code: str | None, problem: dict[str, Any], time_limit_s: float = 2.0,
                  memory_bytes: int = 1 << 30) -> CheckResult:
    """Check code against a problem's ``tests`` (see ``opdbench.tasks.code``): function tests
    (base inputs, then EvalPlus "plus" inputs where present) or stdin/stdout cases."""
    tests = problem["tests"]
    if code is not None and problem.get("wrap"):
        code += problem["wrap"]  # e.g. LiveCodeBench's functional tests call Solution().<name>
    if tests["kind"] == "stdio":
        return check_stdio(code, tests["cases"], time_limit_s=time_limit_s, memory_bytes=memory_bytes)
    inputs = tests["inputs"] + tests.get("plus_inputs", [])
    expected = tests["expected"] + tests.get("plus_expected", [])
    return check_function(code, problem["entry_point"], inputs, expected, atol=tests.get("atol", 0.0),
                          time_limit_s=time_limit_s, memory_bytes=memory_bytes,
                          dataset=tests.get("dataset", "humaneval"))


def check_problems(codes: list[str | None], problems: list[dict[str, Any]], time_limit_s: float = 2.0,
                   memory_mb: int = 1024, workers: int = 2, progress: bool = False) -> list[CheckResult]:
    """Check many (code, problem) pairs in parallel, order preserved. Threads suffice: each
    check is its own process."""
    def one(pair):
        return check_problem(pair[0], pair[1], time_limit_s, memory_mb << 20)

    pairs = list(zip(codes, problems))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(one, pairs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(pairs), desc="sandbox", mininterval=5)
        return list(results)


def reference_outputs(code: str, entry_point: str, inputs: list) -> list[Any]:
    """Outputs of a trusted reference solution (generated by the task, or shipped with the
    benchmark), in-process, as EvalPlus's get_groundtruth computes them. Each call gets a
    copy of its arguments, so a solution that mutates them cannot change later inputs."""
    import copy

    namespace: dict[str, Any] = {}
    exec(code, namespace)
    fn = namespace[entry_point]
    return [fn(*copy.deepcopy(args)) for args in inputs]
