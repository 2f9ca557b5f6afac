"""The code sandbox: every bad input is scored as a failure within its time limit, the test
process carries on, and nothing outside the sandbox changes. Every test runs twice: with the
sandbox's child forked by a zygote (the default) and by the test process itself (the
fallback where no zygote can start)."""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opdbench.tasks import code_exec
from opdbench.tasks.code_exec import check_function, check_problems, check_stdio, extract_code

LIMIT = 1.0


@pytest.fixture(autouse=True, params=[True, False], ids=["zygote", "caller"])
def forked_by(request, monkeypatch):
    monkeypatch.setattr(code_exec, "USE_ZYGOTE", request.param)
    return request.param


def run(body: str, expected=(3,), inputs=((1, 2),)):
    code = "import os, sys, shutil, subprocess, socket\n" + body
    t0 = time.time()
    result = check_function(code, "f", [list(i) for i in inputs], list(expected), time_limit_s=LIMIT,
                            memory_bytes=512 << 20)
    return result, time.time() - t0


@pytest.fixture
def sentinel(tmp_path):
    """A directory with a file outside the sandbox; the test checks it survives unchanged."""
    d = tmp_path / "keep"
    d.mkdir()
    (d / "data.txt").write_text("precious")
    yield d
    assert (d / "data.txt").read_text() == "precious"


def test_correct_and_wrong_solutions():
    good, _ = run("def f(a, b):\n    return a + b")
    assert good.passed and good.status == "pass" and good.details == [True]
    bad = check_function("def f(a, b):\n    return a - b", "f", [[1, 2], [2, 0]], [3, 2])
    assert not bad.passed and bad.status == "fail" and bad.details == [False, True]


def test_floats_compare_with_tolerance():
    assert check_function("def f(x):\n    return x / 3", "f", [[1.0]], [0.3333333], atol=1e-6).passed
    assert not check_function("def f(x):\n    return x / 3", "f", [[1.0]], [0.34], atol=1e-6).passed


@pytest.mark.parametrize("body", [
    pytest.param("while True:\n    pass\ndef f(a, b):\n    return a + b", id="infinite loop at import"),
    pytest.param("def f(a, b):\n    while True:\n        pass", id="infinite loop in the function"),
    pytest.param("def f(a, b):\n    x = bytearray(50 * 2**30)\n    return 3", id="allocating 50 GB at once"),
    pytest.param("def f(a, b):\n    xs = []\n    while True:\n        xs.append(' ' * 10**7)", id="allocating without end"),
    pytest.param("def f(a, b):\n    print('x' * 50_000_000)\n    return 0", id="printing megabytes"),
])
def test_runaway_code_fails_in_time(body):
    result, seconds = run(body)
    assert not result.passed and seconds < LIMIT + 6


@pytest.mark.parametrize("body", [
    "def f(a, b):\n    while True:\n        os.fork()",
    "def f(a, b):\n    while True:\n        subprocess.Popen(['sleep', '100'])",
    "import _posixsubprocess\ndef f(a, b):\n    while True:\n        os.posix_spawn('/bin/sleep', ['sleep', '100'], {})",
    f"def f(a, b):\n    while True:\n        os.posix_spawn({os.path.realpath(sys.executable)!r}, ['python', '-S', '-c', "
    f"'import time; time.sleep(100)'], {{}})",
    "import multiprocessing\ndef f(a, b):\n    ps = [multiprocessing.Process(target=time.sleep, args=(100,)) for _ in range(1000)]\n"
    "    [p.start() for p in ps]\n    return 3",
])
def test_fork_bomb(body):
    result, seconds = run(body)
    assert not result.passed and seconds < LIMIT + 6
    time.sleep(0.5)
    assert not _live_sandbox_processes(), "a sandbox process survived"


def _ours(pid: str) -> bool:
    """Whether a process belongs to this test process's checks (other sessions on the machine
    run sandboxes as nobody too): a descendant of this process, or a member of a cgroup of
    one of its runners (which a process of nobody cannot leave)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            for runner in re.findall(r"opdbench-(\d+)-\d+", fh.read()):
                if not os.path.exists(f"/proc/{runner}") or _parent(runner) == os.getpid():
                    return True
        while pid not in ("0", "1"):
            pid = str(_parent(pid))
            if pid == str(os.getpid()):
                return True
    except (OSError, IndexError, ValueError):
        pass
    return False


def _parent(pid) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _live_sandbox_processes() -> list[str]:
    """Processes of the sandbox's user (nobody) of this test process's checks that are not
    zombies awaiting their reaper."""
    live = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == 65534 and open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z" \
                    and _ours(pid):
                live.append(pid)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return live


@pytest.mark.parametrize("call", [
    "os.system('rm -rf {d}')",
    "subprocess.run(['rm', '-rf', '{d}'])",
    "shutil.rmtree('{d}')",
    "os.remove('{d}/data.txt')",
    "open('{d}/data.txt', 'w').write('pwned')",
])
def test_destroying_files_outside_the_sandbox(sentinel, call):
    result, _ = run(f"def f(a, b):\n    {call.format(d=sentinel)}\n    return a + b")
    assert not result.passed


@pytest.mark.parametrize("target", ["{d}/new.txt", "/tmp/opdbench-pwned.txt"])
def test_writing_a_file_outside_the_temp_dir(sentinel, target):
    path = target.format(d=sentinel)
    result, _ = run(f"def f(a, b):\n    with open('{path}', 'w') as fh:\n        fh.write('x')\n    return a + b")
    assert not result.passed and not os.path.exists(path)


def test_opening_a_network_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    result, _ = run(f"def f(a, b):\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n    return a + b")
    assert not result.passed
    with pytest.raises(socket.timeout):
        server.accept()  # the connection never arrived
    server.close()


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "exit(0)", "raise SystemExit"])
def test_exiting_before_the_tests(exit_call):
    result, _ = run(f"{exit_call}\ndef f(a, b):\n    return a + b")
    assert not result.passed


def test_syntax_error():
    result, _ = run("def f(a, b)\n    return a + b")
    assert not result.passed and result.status == "fail"


def test_response_with_no_code_block():
    assert extract_code("The answer is 3, no code.") is None
    result = check_function(extract_code("just prose"), "f", [[1, 2]], [3])
    assert not result.passed and result.status == "no_code"


def test_reading_environment_variables(monkeypatch):
    monkeypatch.setenv("OPDBENCH_SECRET", "hunter2")
    result = check_function("import os\ndef f():\n    return os.environ.get('OPDBENCH_SECRET')", "f", [[]], ["hunter2"])
    assert not result.passed  # it would pass if the secret leaked into the sandbox


def test_checks_run_in_the_zygote_and_fall_back_when_it_dies(forked_by, monkeypatch, capsys):
    if not forked_by:
        pytest.skip("about the zygote")
    monkeypatch.setattr(code_exec._Zygote, "idle", queue.SimpleQueue())  # zygotes of this test only
    monkeypatch.setattr(code_exec._Zygote, "failed", False)
    problem = {"entry_point": "f", "tests": {"kind": "function", "inputs": [[1]], "expected": [1]}}
    real = code_exec._fork_and_check
    monkeypatch.setattr(code_exec, "_fork_and_check", None)  # this process cannot fork a check now
    assert [r.passed for r in check_problems(["def f(x):\n    return x", "def f(x):\n    return 0"] * 2,
                                             [problem] * 4)] == [True, False] * 2
    zygotes = [code_exec._Zygote.idle.get_nowait() for _ in range(code_exec._Zygote.idle.qsize())]
    assert len(zygotes) == 2  # one per checking thread, reused
    for zygote in zygotes:
        os.kill(zygote.proc.pid, signal.SIGKILL)
        zygote.proc.wait()
        code_exec._Zygote.idle.put(zygote)
    monkeypatch.setattr(code_exec, "_fork_and_check", real)
    assert check_function("def f(x):\n    return x", "f", [[1]], [1]).passed  # same answer, from here
    assert code_exec._Zygote.failed and "the zygote exited (-9)" in capsys.readouterr().err
    assert not check_function("def f(x):\n    return 0", "f", [[1]], [1]).passed


def test_extract_code_takes_the_last_python_block():
    text = "```python\nx = 1\n```\ntext\n```\ny = 2\n```\n```python\nz = 3\n```\n```text\nnot code\n```"
    assert extract_code(text) == "z = 3\n"
    assert extract_code("```\nplain = True\n```") == "plain = True\n"


def test_stdio_programs_can_write_only_inside_the_sandbox(sentinel):
    inside = "open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())"
    assert check_stdio(inside, [("", "ok")]).passed is False  # EvalPlus's guard removes open()
    outside = f"open('{sentinel}/data.txt', 'w').write('pwned')"
    assert not check_stdio(outside, [("", "")]).passed


def test_standard_modules_import_in_the_sandbox():
    code = "import math, heapq, collections, re, hashlib\ndef f(x):\n    return math.isqrt(x) + len(hashlib.md5(b'').hexdigest())"
    assert check_function(code, "f", [[16]], [36]).passed


def test_stdio_programs():
    prog = "n = int(input())\nprint(sum(map(int, input().split())) * n)"
    assert check_stdio(prog, [("2\n1 2 3\n", "12\n"), ("1\n5\n", "5")]).passed
    assert check_stdio(prog, [("2\n1 2 3\n", "13\n")]).details == [False]
    assert not check_stdio("while True: pass", [("", "")], time_limit_s=LIMIT).passed


def test_check_problems_runs_in_parallel_and_keeps_order():
    problem = {"entry_point": "f", "tests": {"kind": "function", "inputs": [[1]], "expected": [1]}}
    codes = ["import time\ndef f(x):\n    time.sleep(0.5)\n    return x" if i % 2 == 0 else "def f(x):\n    return 0"
             for i in range(8)]
    t0 = time.time()
    results = check_problems(codes, [problem] * 8, workers=4)
    assert [r.passed for r in results] == [True, False] * 4
    assert time.time() - t0 < 4 * 0.5 + 3  # 4 sleeping checks would take 2 s one by one


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a PID namespace (root): detached processes outlive the check")
def test_background_processes_die_with_the_check():
    # posix_spawn survives EvalPlus's guard; setsid takes the process out of the check's group.
    # Only the interpreter is visible in the sandbox (no /bin/sleep): it spawns that.
    marker = "import time; time.sleep(31.41592)"
    python = os.path.realpath(sys.executable)
    result, _ = run(f"def f(a, b):\n    os.posix_spawn({python!r}, ['python', '-S', '-c', {marker!r}], {{}}, setsid=True)\n"
                    f"    return a + b")
    survivors = _processes_with(marker)
    for pid in survivors:
        os.kill(int(pid), 9)
    assert result.passed and not survivors  # it did spawn, and the spawned process is gone
    # This thread's own forks are back in its PID namespace (where the child's was made).
    assert os.readlink("/proc/thread-self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
    assert subprocess.run(["true"]).returncode == 0


@pytest.mark.parametrize("call, expected", [("os.pread({fd}, 6, 0)", b"secret"), ("os.pwrite({fd}, b'pwned!', 0)", 6)])
def test_inherited_file_descriptors_are_out_of_reach(tmp_path, call, expected):
    path = tmp_path / "secret.txt"
    path.write_text("secret")
    fd = os.open(path, os.O_RDWR)
    try:
        result = check_function(f"import os\ndef f():\n    return {call.format(fd=fd)}", "f", [[]], [expected])
    finally:
        os.close(fd)
    assert not result.passed and path.read_text() == "secret"


@pytest.mark.parametrize("pid", ['"self"', pytest.param("os.getppid()", marks=pytest.mark.skipif(
    os.geteuid() != 0, reason="as another user the scoring process's own environ is the code's to read"))])
def test_reading_the_initial_environment_block(pid):
    """/proc/<pid>/environ shows the environment a process started with, which clearing
    os.environ leaves in place; the code first makes itself dumpable again."""
    with open("/proc/self/environ", "rb") as fh:
        entries = [e for e in fh.read().split(b"\0") if e and not e.startswith((b"PATH=", b"LANG="))]
    if not entries:
        pytest.skip("the test process has no environment to leak")
    code = (f"import ctypes, io, os\ndef f(needle):\n    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE\n"
            f"    try:\n        with io.open(f'/proc/{{{pid}}}/environ', 'rb') as fh:\n"
            f"            return needle in fh.read()\n    except OSError:\n        return False")
    assert check_function(code, "f", [[entries[0]]], [False]).passed  # the code ran, and did not see it
    assert not check_function(code, "f", [[entries[0]]], [True]).passed


def test_no_new_privileges():
    code = ("import io\ndef f():\n"
            "    return [l.split()[1] for l in io.open('/proc/self/status') if l.startswith('NoNewPrivs')]")
    assert check_function(code, "f", [[]], [["1"]]).passed


def test_oversized_write_fails_the_write_not_the_check():
    import signal

    code = ("import io\ndef f(a, b):\n    try:\n        with io.open('big', 'wb') as fh:\n"
            "            fh.write(b'x' * (17 << 20))\n    except OSError:\n        return a + b\n    return 0")
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # CPython ignores it at start-up; a host may not
    try:
        result, _ = run(code)
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    assert result.passed  # RLIMIT_FSIZE refused the write (EFBIG) rather than killing the check


@pytest.mark.parametrize("opener", ["os.open", pytest.param("posix.open", marks=pytest.mark.skipif(
    os.geteuid() != 0, reason="past the Python guard only the mount namespace (root) refuses it"))])
@pytest.mark.parametrize("directory", ["/tmp", "/var/tmp", "/dev/shm"])
def test_world_writable_directories_are_out_of_reach(directory, opener):
    """As root the sandbox has a /tmp of its own (a tmpfs that goes with it), and no /var/tmp
    or /dev/shm; elsewhere the write is refused. Either way nothing appears outside."""
    path = f"{directory}/opdbench-pwned-{os.getpid()}"
    try:
        result, _ = run(f"import posix\ndef f(a, b):\n    os.close({opener}({path!r}, os.O_WRONLY | os.O_CREAT))\n"
                        f"    return a + b")
        assert not os.path.exists(path)
        assert not result.passed or (directory == "/tmp" and os.geteuid() == 0)
    finally:
        if os.path.exists(path):
            os.unlink(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="hiding /root needs the mount namespace (root)")
def test_root_home_is_hidden_but_the_interpreter_is_not():
    code = "import io\ndef f(path):\n    with io.open(path, 'rb') as fh:\n        return len(fh.read())"
    files = [e.path for e in os.scandir("/root") if e.is_file()]
    if files:
        assert not check_function(code, "f", [[files[0]]], [os.path.getsize(files[0])]).passed
    colorsys = os.path.join(os.path.dirname(os.__file__), "colorsys.py")  # beyond the preloaded modules
    assert check_function(code, "f", [[colorsys]], [os.path.getsize(colorsys)]).passed


# -- reward hacking: the code tries to fake a pass --------------------------------------------
# Each attack is scored wrong, within its time limit, the checker carries on (a correct
# solution still passes afterwards), and no sandbox process or cgroup is left.
def _secret() -> tuple[str, str]:
    """A prefix the attacking code searches for (new for each test, so that secrets of other
    tests left in this process's memory do not match), and an expected output that has it."""
    prefix = f"opdbench-secret-{int.from_bytes(os.urandom(4), 'big')}-"
    return prefix, prefix + str(int.from_bytes(os.urandom(6), "big"))


def _our_cgroups() -> list[str]:
    """Cgroups made by runners of this process (named opdbench-<runner pid>-<n>) or by runners
    that are gone: none may outlive its check."""
    left = []
    for hierarchy in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        try:
            with open("/proc/self/cgroup") as fh:
                paths = [line.strip().split(":", 2)[2] for line in fh]
        except OSError:
            return left
        for rel in set(paths):
            base = hierarchy + rel.rstrip("/")
            if not os.path.isdir(base):
                continue
            for entry in os.listdir(base):
                if entry.startswith("opdbench-"):
                    runner = entry.split("-")[1]
                    try:
                        with open(f"/proc/{runner}/stat") as fh:
                            ours = fh.read().rsplit(")", 1)[1].split()[1] == str(os.getpid())
                    except OSError:
                        ours = True  # its runner is gone
                    if ours:
                        left.append(f"{base}/{entry}")
    return left


def attack(body: str, expected=(3,), inputs=((1, 2),), limit: float = LIMIT, memory_mb: int = 512, **kwargs):
    code = "import os, sys, io, gc, time, signal, socket, struct, json, posix\n" + body
    t0 = time.time()
    result = check_function(code, "f", [list(i) for i in inputs], list(expected), time_limit_s=limit,
                            memory_bytes=memory_mb << 20, **kwargs)
    seconds = time.time() - t0
    assert not result.passed, "the attack passed"
    startup = 0 if code_exec.USE_ZYGOTE else 5  # the fallback's fresh runner starts before the clock does
    assert seconds < len(inputs) * limit + code_exec.STARTUP_S + 3 + startup, f"took {seconds:.1f} s"
    for _ in range(40):  # processes killed with the check may take a moment to be reaped
        if not _live_sandbox_processes():
            break
        time.sleep(0.05)
    assert not _live_sandbox_processes(), "a sandbox process survived"
    assert not _our_cgroups(), "a cgroup was left behind"
    assert check_function("def f(a, b):\n    return a + b", "f", [[1, 2]], [3]).passed  # the checker carries on
    return result, seconds


def test_an_object_equal_to_everything_is_wrong():
    attack("class Always:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n"
           "        return False\n    __hash__ = object.__hash__\ndef f(a, b):\n    return Always()")


@pytest.mark.parametrize("value", ["Int(a + b)", "Str('3')", "[Int(3)]", "{'k': Int(3)}"])
def test_subclasses_of_builtin_types_are_wrong(value):
    """An int subclass with the right value (and its own __eq__/__repr__) is not plain data."""
    expected = {"Int(a + b)": 3, "Str('3')": "3", "[Int(3)]": [3], "{'k': Int(3)}": {"k": 3}}[value]
    attack("class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
           "class Str(str):\n    pass\n"
           f"def f(a, b):\n    return {value}", expected=(expected,))


SEARCH = '''
SECRET = "PREFIX"
def find(obj, depth=0):
    if isinstance(obj, str) and obj.startswith(SECRET) and obj != SECRET:
        return obj
    if depth < 4 and isinstance(obj, (list, tuple, set, dict)):
        for v in (list(obj.values()) + list(obj.keys()) if isinstance(obj, dict) else obj):
            r = find(v, depth + 1)
            if r:
                return r
'''
FRAMES = SEARCH + '''
import inspect
def f(a, b):
    frame = sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            r = find(dict(scope))
            if r:
                return r
        frame = frame.f_back
    for info in inspect.stack():
        r = find(dict(info.frame.f_locals))
        if r:
            return r
'''
GC = SEARCH + '''
def f(a, b):
    for obj in gc.get_objects():
        r = find(obj, 3)
        if r:
            return r
'''


@pytest.mark.parametrize("search", [FRAMES, GC], ids=["frames", "gc"])
def test_expected_outputs_are_not_in_the_sandboxs_memory(search):
    prefix, secret = _secret()
    search = search.replace("PREFIX", prefix)
    namespace = {}
    exec("import sys, gc\n" + search, namespace)

    def caller(expected):  # the attack works where the expected outputs are in memory
        return namespace["f"](1, 2)

    assert caller([secret]) == secret
    attack(search, expected=(secret,))


def test_expected_outputs_are_not_sent_to_the_runner(monkeypatch):
    """Nothing the zygote (whose memory the child copies) receives holds an expected output."""
    _, secret = _secret()
    sent = []
    real = code_exec._send_message
    monkeypatch.setattr(code_exec, "_send_message", lambda sock, obj, fd=None: (sent.append(obj), real(sock, obj, fd)))
    assert check_function("def f(a, b):\n    return 0", "f", [[1, 2]], [secret]).status == "fail"
    assert sent and secret not in repr(sent)
    problem = {"tests": {"kind": "stdio", "cases": [["1\n", secret]]}}
    assert not code_exec.check_problem("print(input())", problem).passed
    assert secret not in repr(sent)


PROC = '''
def grep(data):
    prefix = b"PREFIX"
    i = data.find(prefix)
    while i >= 0:
        tail = data[i + len(prefix):i + len(prefix) + 24]
        digits = tail[:len(tail) - len(tail.lstrip(b"0123456789"))]
        if digits:
            return (prefix + digits).decode()
        i = data.find(prefix, i + 1)
def f(a, b):
    pids = [p for p in os.listdir("/proc") if p.isdigit()] + [str(os.getppid())]
    for pid in pids:
        for name in ("cmdline", "environ"):
            try:
                with io.open(f"/proc/{pid}/{name}", "rb") as fh:
                    r = grep(fh.read())
                    if r:
                        return r
            except OSError:
                pass
        try:
            with io.open(f"/proc/{pid}/maps") as fh, io.open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                for line in fh:
                    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                    if "r" in line.split()[1] and hi - lo < 8 << 20:
                        try:
                            mem.seek(lo)
                            r = grep(mem.read(hi - lo))
                            if r:
                                return r
                        except (OSError, ValueError, OverflowError):
                            pass
        except OSError:
            pass
'''


def test_reading_the_callers_memory_and_proc_files():
    prefix, secret = _secret()
    os.environ["OPDBENCH_LEAK"] = secret  # in this process's memory (its initial environ block is older)
    try:
        attack(PROC.replace("PREFIX", prefix), expected=(secret,), limit=3.0)
    finally:
        del os.environ["OPDBENCH_LEAK"]


FORGE = '''
def frame(message):
    data = json.dumps(message).encode()
    return struct.pack(">I", len(data)) + data
def f(a, b):
    fake = b"".join(frame(m) for m in (["r", "pass"], ["pass"], ["h", ["pass"]], {"status": "pass"}, ["r", True]))
    for fd in range(3, 256):
        try:
            os.write(fd, fake)
        except OSError:
            pass
    for obj in gc.get_objects():  # any shared status value it can find
        if hasattr(obj, "value") and not isinstance(obj, type):
            try:
                obj.value = 0
            except Exception:
                pass
    os._exit(0)
'''


@pytest.mark.parametrize("inputs, expected", [(((1, 2),), (3,)), (((1, 2), (2, 2), (3, 3)), (3, 4, 6))])
def test_forged_messages_and_verdicts_are_wrong(inputs, expected):
    """Whatever the code writes to the result pipe is an output claim, never a verdict."""
    attack(FORGE, expected=expected, inputs=inputs)


def test_garbage_on_the_result_pipe_fails_in_time():
    attack("def f(a, b):\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'\\xff' * 8)\n"
           "        except OSError:\n            pass\n    time.sleep(60)")


def test_holding_the_checkers_locks():
    attack('''
import threading, fcntl
def f(a, b):
    held = []
    for obj in gc.get_objects():
        acquire = getattr(obj, "acquire", None)
        if callable(acquire) and not isinstance(obj, type):
            try:
                if acquire(False):
                    held.append(obj)
            except Exception:
                pass
    for fd in range(64):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
    time.sleep(60)
''')


def test_patching_the_comparison():
    """The comparison runs outside the sandbox: patching numpy, math or the checker inside
    changes nothing."""
    code = '''
import math, numpy
numpy.allclose = numpy.isclose = lambda *a, **k: True
math.isclose = lambda *a, **k: True
for name, module in list(sys.modules.items()):
    if module is not None and name.startswith(("opdbench", "evalplus")):
        for attr in ("_compare", "_same_stdout", "is_floats", "_verdict"):
            if hasattr(module, attr):
                setattr(module, attr, lambda *a, **k: [True] * 10)
def f(a, b):
    return 0.5
'''
    attack(code, expected=(1 / 3,), atol=1e-6)
    assert check_function("def f(a, b):\n    return 0.5", "f", [[1, 2]], [1 / 3], atol=1e-6).status == "fail"


def test_cancelling_the_timer_and_sleeping():
    result, seconds = attack("def f(a, b):\n    signal.setitimer(signal.ITIMER_REAL, 0)\n"
                             "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    time.sleep(30)\n    return a + b")
    assert result.status == "timeout"


def test_each_input_has_its_own_deadline():
    """Quick first inputs do not lend their unused time to a slow later one."""
    code = "def f(a, b):\n    time.sleep(0.8 if a == 3 else 0)\n    return a + b"
    result, _ = attack(code, expected=(3, 3, 7), inputs=((1, 2), (2, 1), (3, 4)), limit=0.5)
    assert result.status == "timeout" and result.details == [True, True, False]


def test_connecting_to_unix_sockets(tmp_path):
    path = str(tmp_path / "listen.sock")
    abstract = f"\0opdbench-test-{os.getpid()}"
    servers = []
    for address in (path, abstract):
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen(1)
        server.settimeout(0.2)
        servers.append(server)
    try:
        attack(f'''
def f(a, b):
    connected = []
    for address in ({path!r}, {abstract!r}):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(address)
            connected.append(address)
        except OSError:
            pass
    return len(connected)
''', expected=(2,))
        for server in servers:
            with pytest.raises(socket.timeout):
                server.accept()
    finally:
        for server in servers:
            server.close()


def test_reading_the_runs_evaluation_data(tmp_path, sentinel):
    _, secret = _secret()
    local = tmp_path / "results" / "run" / "eval.jsonl"
    local.parent.mkdir(parents=True)
    local.write_text(secret)
    shared = f"/tmp/opdbench-data-{os.getpid()}.jsonl"
    with open(shared, "w") as fh:
        fh.write(secret)
    readme = Path(code_exec.__file__).resolve().parents[2] / "README.md"
    try:
        for path, expected in ((local, secret), (shared, secret), (readme, readme.read_text()[:100])):
            attack(f"def f(a, b):\n    with io.open({str(path)!r}) as fh:\n        return fh.read()[:100]",
                   expected=(expected,))
        assert open(shared).read() == secret and local.read_text() == secret
    finally:
        os.unlink(shared)


needs_cgroup = pytest.mark.skipif(not code_exec._Cgroups().available,
                                  reason="the total across processes is bounded only by a cgroup")


@needs_cgroup
def test_children_that_each_allocate():
    """Six processes of 200 MB each: together over the check's 512 MB."""
    attack('''
def f(a, b):
    pids = []
    for _ in range(6):
        pid = posix.fork()
        if pid == 0:
            x = bytearray(200 << 20)
            x[::4096] = b"x" * len(x[::4096])
            time.sleep(1.5)
            posix._exit(0)
        pids.append(pid)
    ok = all(posix.waitpid(pid, 0)[1] == 0 for pid in pids)
    return a + b if ok else -1
''', limit=4.0)


@needs_cgroup
def test_filling_memfds():
    attack('''
def f(a, b):
    filled = 0
    fds = []
    try:
        for _ in range(60):
            fd = os.memfd_create("x")
            fds.append(fd)
            for _ in range(16):
                os.write(fd, b"y" * (1 << 20))
                filled += 1
    except OSError:
        pass
    return a + b if filled >= 600 else -filled
''', limit=4.0)


@needs_cgroup
def test_filling_socket_pair_buffers():
    """Kernel buffers of socket pairs, from 16 processes, count in the check's memory."""
    attack('''
def fill():
    total, pairs = 0, []
    try:
        while True:
            s, t = socket.socketpair()
            pairs.append((s, t))
            s.setblocking(False)
            try:
                while True:
                    total += s.send(b"z" * 65536)
            except BlockingIOError:
                pass
    except OSError:
        pass
    return total, pairs
def f(a, b):
    r, w = os.pipe()
    for _ in range(16):
        if posix.fork() == 0:
            total, pairs = fill()
            os.write(w, struct.pack("<Q", total))
            time.sleep(60)
    got = 0
    for _ in range(16):
        got += struct.unpack("<Q", os.read(r, 8))[0]
    return a + b if got >= 600 << 20 else -got
''', limit=4.0)


@pytest.mark.parametrize("how", [
    "os.unshare(os.CLONE_NEWUSER)",
    "os.unshare(os.CLONE_NEWNS | os.CLONE_NEWNET)",
    "os.posix_spawn('/usr/bin/unshare', ['unshare', '-U', 'true'], {})",
    "import ctypes\n    assert ctypes.CDLL(None).syscall(56, 0x10000000 | 17, 0, 0, 0, 0) >= 0",  # raw clone
])
def test_creating_namespaces(how):
    attack(f"def f(a, b):\n    {how}\n    return a + b")


def test_seccomp_and_no_new_privileges_are_on():
    if os.uname().machine != "x86_64":
        pytest.skip("the seccomp filter is x86_64 only")
    code = ("import io\ndef f():\n    return sorted(l.split()[0] + l.split()[1] for l in io.open('/proc/self/status')"
            " if l.startswith(('NoNewPrivs', 'Seccomp:')))")
    assert check_function(code, "f", [[]], [["NoNewPrivs:1", "Seccomp:2"]]).passed


def test_the_parser_takes_plain_data_only():
    decode = code_exec._decode
    assert decode(b'[1,2.5,"a",true,null,{"t":[1,{"s":[2]}]},{"d":[[{"t":[1]},{"b":"6869"}]]},{"i":"-ff"}]') == \
        [1, 2.5, "a", True, None, (1, {2}), {(1,): b"hi"}, -255]
    assert type(decode(b'{"o":0}')) is code_exec._Opaque and decode(b'{"o":0}') != decode(b'{"o":0}')
    import math
    assert math.isnan(decode(b"NaN")) and decode(b"-Infinity") == float("-inf")
    for bad in (b'{"x":1}', b'{"t":1}', b'{"s":[[1]]}', b'{"d":[[1]]}', b'{"t":[],"s":[]}', b"[" * 100000,
                b"__import__('os')", b'{"i":"1_0"}'):
        with pytest.raises((ValueError, TypeError, RecursionError)):
            decode(bad)
    for value in (3, -(1 << 70), 0.1, float("inf"), "é\ud800", b"\0", (1, [2, {3: (4,)}]), {frozenset({1})}, set(), {}):
        assert decode(json.dumps(code_exec._encode(value)).encode()) == value
    assert code_exec._encode(type("Int", (int,), {})(3)) == {"o": 0}


def test_an_oversized_message_fails_in_time():
    attack("def f(a, b):\n    return 'x' * (code_size + 1)\ncode_size = 16 << 20")
