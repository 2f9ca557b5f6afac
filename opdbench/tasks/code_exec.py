"""Running untrusted, model-generated Python: EvalPlus's checker inside extra OS layers.

The inner executor is EvalPlus's own ``unsafe_execute`` (evalplus 0.3.1): a temporary
working directory, ``reliability_guard`` (memory limit, destructive ``os``/``shutil``/
``subprocess`` functions disabled), swallowed I/O, a per-input time limit and EvalPlus's
output comparison (exact, or ``atol`` for floats). Like EvalPlus's ``untrusted_check`` it
runs in a child process that the parent kills after a wall-clock budget. EvalPlus itself
says its guard is not a sandbox, so the child first adds what it lacks:

- a fresh session, so the parent kills the child's whole process group (fork bombs);
- where permitted (root), a new PID namespace: the child is its PID 1, so whatever it
  spawns, even detached, dies with it (and it dies with the thread that started it);
- inherited file descriptors closed, stdin/stdout/stderr on /dev/null;
- an empty environment, including the initial block that /proc/self/environ shows;
- a new, empty network namespace (``unshare(CLONE_NEWNET)``); where that is not
  permitted, ``socket`` is disabled instead;
- where permitted, a private mount namespace: the whole tree read-only, the check's
  directory a fresh size-capped tmpfs (the only writable place), /root hidden except the
  interpreter's directories, a /proc that shows only the sandbox's processes;
- when run as root, the uid/gid of ``nobody`` with ``no_new_privs``: the code cannot signal
  other processes or regain privileges, and RLIMIT_NPROC caps its processes;
- RLIMIT_FSIZE (SIGXFSZ ignored: an oversized write fails), RLIMIT_CORE, and ``open`` /
  ``os.open`` guards that refuse writes outside the sandbox directory.

Each layer the kernel or the user's privileges refuse is skipped; the others still apply.

The child is forked (as EvalPlus does) from a *zygote*: a bare interpreter with only this
module and the preloaded modules, started once per checking thread with an empty
environment and reused. fork() copies the forking process's page tables, so a child forked
straight from a training process that holds torch and two models costs four to five times
as much (``benchmarks/sandbox_overhead.py``). Where the zygote cannot start, the caller forks
the child itself. Either way the child's address-space limit is its size at fork plus
``memory_bytes``.

Statuses: ``pass`` (every test passed; with EvalPlus 0.3.1's find_zero oracle, which never
counts a passing input, no input failed), ``fail`` (some test failed or the code raised,
exited or did not define the entry point), ``timeout`` (killed after the wall-clock
budget), ``no_code`` (the response had no code block).
"""
from __future__ import annotations

import atexit
import ctypes
import io
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

NOBODY = 65534
# Imported here, before any child drops to ``nobody``: a forked child inherits them, and a
# Python installed under a root-only home (/root/.pyenv) cannot be read once it is nobody.
# These are the standard modules benchmark solutions import (HumanEval, MBPP, LiveCodeBench).
PRELOADED = ("math", "cmath", "heapq", "bisect", "itertools", "functools", "collections", "re", "string",
             "random", "statistics", "fractions", "decimal", "datetime", "hashlib", "typing", "copy",
             "operator", "array", "struct", "queue", "json", "time", "calendar", "textwrap", "unicodedata",
             "numbers", "enum", "dataclasses", "contextlib", "sys", "io", "numpy", "evalplus.eval",
             "evalplus.eval.utils")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)
_SUCCESS, _FAILED, _UNKNOWN = 0, 1, 3  # evalplus.eval's status codes


for _name in PRELOADED:
    import_module(_name)


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


# -- the child process ---------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, AT_RECURSIVE, SYS_MOUNT_SETATTR = 1, 2, 0x8000, 442  # Linux >= 5.12
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SANDBOX_DIR_BYTES = 64 << 20  # the tmpfs the code may write to
# What the code's user must still reach under the hidden /root: the interpreter's directories.
_UNDER_ROOT = sorted({p.split(os.sep)[2] for p in map(os.path.realpath, (sys.prefix, sys.base_prefix, *sys.path))
                      if p.startswith("/root/")})


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


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _close_fds(keep: int) -> None:
    """stdin/stdout/stderr on /dev/null; every other inherited descriptor (the parent's files,
    sockets, pipes) closed, except ``keep``."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)


def _scrub_environment(limit: int) -> None:
    """Empty os.environ, the C environment and the block the process started with: clearing
    os.environ leaves that block, which /proc/self/environ shows, in place."""
    import posix

    os.environ.clear()  # unsetenv() each
    posix.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "EVALPLUS_MAX_MEMORY_BYTES": str(limit)})
    with open("/proc/self/stat") as f:
        start, end = map(int, f.read().rsplit(")", 1)[1].split()[47:49])  # env_start, env_end (proc(5))
    with open("/proc/self/maps") as f:  # zeroed only if it lies on the stack, where exec put it
        stacks = [line.split()[0].split("-") for line in f if line.rstrip().endswith("[stack]")]
    if any(int(lo, 16) <= start < end <= int(hi, 16) for lo, hi in stacks):
        ctypes.memset(start, 0, end - start)


def _isolate_filesystem(root: str, uid: int, own_proc: bool) -> bool:
    """A private mount namespace (see the module's docstring). False, and nothing changed
    outside the namespace, where it is refused; partial where a later step is refused."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return False
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # first: nothing below may reach the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={SANDBOX_DIR_BYTES},mode=0700,uid={uid},gid={uid}")
    if own_proc:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if os.path.isdir("/root") and not root.startswith("/root/"):
        kept = [os.open(f"/root/{name}", os.O_PATH) for name in _UNDER_ROOT]
        _mount("tmpfs", "/root", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        try:  # bound back from descriptors opened before /root was covered
            for name, fd in zip(_UNDER_ROOT, kept):
                os.mkdir(f"/root/{name}")
                _mount(f"/proc/self/fd/{fd}", f"/root/{name}", None, MS_BIND | MS_REC)
        except OSError:
            _libc.umount2(b"/root", 2)  # MNT_DETACH: /root as it was, rather than no interpreter
            raise
    _mount_setattr("/", True, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
    _mount_setattr(root, False, 0, MOUNT_ATTR_RDONLY)
    return True


def _harden(root: str, memory_bytes: int, keep_fd: int) -> int:
    """The layers EvalPlus's reliability_guard lacks; runs in the child before any model code.
    Returns the address-space limit to hand to EvalPlus's guard."""
    import builtins
    import resource
    import socket

    os.setsid()  # own process group: the parent kills it whole
    _close_fds(keep_fd)
    limit = _address_space() + memory_bytes  # what the fork inherited, plus the budget
    _scrub_environment(limit)
    as_root = os.getuid() == 0
    pid_ns = os.getpid() == 1  # started in a PID namespace of its own (_start)
    if _libc.unshare(CLONE_NEWNET) != 0:  # needs CAP_SYS_ADMIN; otherwise disable sockets
        def no_network(*args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")
        socket.socket = socket.create_connection = socket.socketpair = no_network  # type: ignore[assignment]
    if as_root:
        try:
            _isolate_filesystem(root, NOBODY, pid_ns)
        except OSError:  # what was set up stays; the guards below still apply
            pass
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    tempfile.tempdir = root  # EvalPlus's create_tempdir lands inside the sandbox directory
    os.chdir(root)
    if as_root:
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))  # counts every nobody process
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        except OSError:  # e.g. root without CAP_SETUID in a container
            pass
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # exec of a setuid binary gains nothing
    if pid_ns:  # after setuid, which clears it: should the parent die, so does PID 1, and all it spawned
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    # EvalPlus's guard later removes open() and os.getcwd (hence the copy), not io.open or
    # os.open, for function checks; these cover stdio programs, and the filesystem wherever the
    # mount namespace was refused.
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
    return limit


def _run_function(root, keep_fd, memory_bytes, dataset, entry_point, code, inputs, expected, time_limits, atol,
                  stat, details, progress) -> None:
    _harden(root, memory_bytes, keep_fd)  # EvalPlus reads its limit from EVALPLUS_MAX_MEMORY_BYTES
    from evalplus.eval import unsafe_execute

    unsafe_execute(dataset, entry_point, code, inputs, expected, time_limits, atol, False, stat, details, progress)


def _run_stdio(root, keep_fd, memory_bytes, code, cases, time_limits, stat, details, progress) -> None:
    """stdin/stdout programs (LiveCodeBench): the same guards; output compared line by line
    with surrounding whitespace stripped, as LiveCodeBench's grader does."""
    limit = _harden(root, memory_bytes, keep_fd)
    import contextlib
    import sys

    from evalplus.eval.utils import create_tempdir, reliability_guard, time_limit

    with create_tempdir():
        reliability_guard(maximum_memory_bytes=limit)
        try:
            compiled = compile(code, "<solution>", "exec")
            for i, (stdin, stdout) in enumerate(cases):
                out = io.StringIO()
                try:
                    with time_limit(time_limits[i]), contextlib.redirect_stdout(out):
                        sys.stdin = io.StringIO(stdin)
                        try:
                            exec(compiled, {"__name__": "__main__"})
                        except SystemExit:  # a script may end with sys.exit()
                            pass
                    got = [line.strip() for line in out.getvalue().strip().splitlines()]
                    want = [line.strip() for line in stdout.strip().splitlines()]
                    details[i] = got == want
                except BaseException:
                    details[i] = False
                progress.value += 1
            stat.value = _SUCCESS
        except BaseException:
            stat.value = _FAILED


def _execute(target: str, args: tuple, n_tests: int, time_limits: Sequence[float], uncounted: bool = False
             ) -> CheckResult:
    """Run one check in a sandboxed child forked by a zygote (see the module's docstring),
    or by this process where no zygote is available."""
    request = (target, args, n_tests, list(time_limits), uncounted)
    zygote = _Zygote.take() if USE_ZYGOTE else None
    if zygote is not None:
        try:
            result = zygote.execute(request)
        except (OSError, EOFError, pickle.UnpicklingError):  # it died: this and later checks run here
            zygote.close()
            _Zygote.failed = True
            print(f"[sandbox] the zygote exited ({zygote.proc.returncode}); checks now fork from this process",
                  file=sys.stderr)
        else:
            _Zygote.idle.put(zygote)
            return result
    return _fork_and_check(*request)


def _fork_and_check(target: str, args: tuple, n_tests: int, time_limits: Sequence[float], uncounted: bool = False
                    ) -> CheckResult:
    target = _TARGETS[target]
    ctx = multiprocessing.get_context("fork")
    stat, progress = ctx.Value("i", _UNKNOWN), ctx.Value("i", 0)
    details = ctx.Array("b", [False] * max(n_tests, 1))
    root = tempfile.mkdtemp(prefix="opdbench-sandbox-")
    os.chmod(root, 0o777)  # the child writes here after dropping to nobody (without its own tmpfs)
    done_r, done_w = os.pipe()  # held by the child alone: EOF when it is gone
    proc = ctx.Process(target=target, args=(root, done_w, *args, stat, details, progress), daemon=True)
    try:
        try:
            _start(proc)
        finally:
            os.close(done_w)
        # EvalPlus's budget: the sum of per-input limits, plus slack for start-up and exec.
        timed_out = not _wait(proc, done_r, sum(time_limits) + 2.0)
        _kill_group(proc)
    finally:
        os.close(done_r)
        shutil.rmtree(root, ignore_errors=True)
    ok = [bool(d) for d in details[:n_tests]]
    if uncounted and stat.value == _SUCCESS and not timed_out:
        # EvalPlus 0.3.1's find_zero oracle `continue`s before it counts an input that passes;
        # one that fails is counted (progress) as not passed. So: pass iff none failed.
        failed = progress.value - sum(ok)
        return CheckResult(failed == 0, "pass" if failed == 0 else "fail", [failed == 0] * n_tests)
    if stat.value == _SUCCESS and not timed_out and all(ok):
        return CheckResult(True, "pass", ok)
    return CheckResult(False, "timeout" if timed_out and stat.value == _UNKNOWN else "fail", ok)


_TARGETS = {"function": _run_function, "stdio": _run_stdio}
USE_ZYGOTE = True  # False: every check forks from the calling process (benchmarks/sandbox_overhead.py)
_FRAME = struct.Struct("<Q")  # a pickled message's length, before it


def _send(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _receive(stream) -> Any:
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        raise EOFError("the other end closed the pipe")
    return pickle.loads(stream.read(_FRAME.unpack(header)[0]))


class _Zygote:
    """A bare interpreter that forks the sandboxed children for one thread at a time; the
    idle ones wait in ``idle`` for the next check. It exits when its request pipe closes,
    which happens when this process exits, however it exits."""

    idle: queue.SimpleQueue = queue.SimpleQueue()
    started: list = []
    failed = False  # one died: no more are started

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from opdbench.tasks.code_exec import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": package_root})
        _Zygote.started.append(self)

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

    def execute(self, request: tuple) -> CheckResult:
        _send(self.proc.stdin, request)
        return _receive(self.proc.stdout)

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@atexit.register
def _close_zygotes() -> None:
    for zygote in _Zygote.started:
        zygote.close()


def _serve() -> None:
    """The zygote's loop: a check request in, its result out, until the pipe closes. Its own
    stdin/stdout go to /dev/null, so nothing but results reaches the pipe."""
    requests, results = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    while True:
        try:
            request = _receive(requests)
        except EOFError:
            return
        _send(results, _fork_and_check(*request))


def _start(proc) -> None:
    """Start the child as PID 1 of a new PID namespace where permitted (root): whatever it
    spawns dies with it. unshare(CLONE_NEWPID) moves only this thread's next fork; setns
    puts the thread back at once."""
    try:
        own = os.open("/proc/thread-self/ns/pid", os.O_RDONLY)
    except OSError:
        return proc.start()
    try:
        if _libc.unshare(CLONE_NEWPID) != 0:
            return proc.start()
        try:
            proc.start()
        finally:
            _ok(_libc.setns(own, CLONE_NEWPID), "setns")
    finally:
        os.close(own)


def _wait(proc, done_fd: int, timeout: float) -> bool:
    """Whether the child exited within ``timeout``. The child has closed multiprocessing's own
    sentinel (join() would then block in waitpid), so: its pipe, then non-blocking polls."""
    deadline = time.monotonic() + timeout
    multiprocessing.connection.wait([done_fd], timeout)
    while proc.is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def _kill_group(proc) -> None:
    """Kill the child and everything it forked (it leads its own process group; its PID 1,
    where there is one, takes its PID namespace down with it)."""
    if proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()  # should killpg have missed it; once SIGKILLed, the join below is short
    proc.join(timeout=5)


def _limits(n: int, time_limit_s: float, time_limits: Sequence[float] | None) -> list[float]:
    return list(time_limits) if time_limits is not None else [time_limit_s] * n


def check_function(code: str | None, entry_point: str, inputs: list, expected: list, *, atol: float = 0.0,
                   time_limit_s: float = 2.0, time_limits: Sequence[float] | None = None,
                   memory_bytes: int = 1 << 30, dataset: str = "humaneval") -> CheckResult:
    """Call ``entry_point(*inputs[i])`` for every i and compare with ``expected[i]`` as EvalPlus
    does (``dataset`` selects EvalPlus's special oracles for HumanEval+ / MBPP+)."""
    if code is None:
        return CheckResult(False, "no_code", [False] * len(inputs))
    limits = _limits(len(inputs), time_limit_s, time_limits)
    return _execute("function", (memory_bytes, dataset, entry_point, code, inputs, expected, limits, atol),
                    len(inputs), limits, uncounted=(dataset, entry_point) == ("humaneval", "find_zero"))


def check_stdio(code: str | None, cases: list[tuple[str, str]], *, time_limit_s: float = 2.0,
                time_limits: Sequence[float] | None = None, memory_bytes: int = 1 << 30) -> CheckResult:
    """Run the program once per (stdin, expected stdout) case."""
    if code is None:
        return CheckResult(False, "no_code", [False] * len(cases))
    limits = _limits(len(cases), time_limit_s, time_limits)
    return _execute("stdio", (memory_bytes, code, [tuple(c) for c in cases], limits), len(cases), limits)


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
