"""The code sandbox: every bad input is scored as a failure within its time limit, the test
process carries on, and nothing outside the sandbox changes. Every test runs twice: with the
sandbox's child forked by a zygote (the default) and by the test process itself (the
fallback where no zygote can start)."""
import os
import queue
import signal
import socket
import subprocess
import time

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
    "import multiprocessing\ndef f(a, b):\n    ps = [multiprocessing.Process(target=time.sleep, args=(100,)) for _ in range(1000)]\n"
    "    [p.start() for p in ps]\n    return 3",
])
def test_fork_bomb(body):
    result, seconds = run(body)
    assert not result.passed and seconds < LIMIT + 6
    time.sleep(0.5)
    assert not _live_sandbox_processes(), "a sandbox process survived"


def _live_sandbox_processes() -> list[str]:
    """Processes of the sandbox's user (nobody) that are not zombies awaiting their reaper."""
    live = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == 65534 and open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z":
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
    marker = "31.41592"
    result, _ = run(f"def f(a, b):\n    os.posix_spawn('/bin/sleep', ['sleep', '{marker}'], {{}}, setsid=True)\n"
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
    path = f"{directory}/opdbench-pwned-{os.getpid()}"
    try:
        result, _ = run(f"import posix\ndef f(a, b):\n    os.close({opener}({path!r}, os.O_WRONLY | os.O_CREAT))\n"
                        f"    return a + b")
        assert not result.passed and not os.path.exists(path)
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
