"""The sandbox for model-written code: hostile programs score 0 within their limits and leave
no process and no file behind; the harness process is never touched."""
from __future__ import annotations

import builtins
import os
import socket
import tempfile
from pathlib import Path

import pytest

from harness.services import sandbox
from harness.services.sandbox import Limits, Program, run_all, run_one

LIMITS = Limits(seconds=1.0)  # short steps keep the hanging cases to about a second
SECRET = "THICKET_SANDBOX_TEST_SECRET"
ISOLATED = "isolated"
HERE = Path(__file__).resolve().parent


def ours(uid: int) -> bool:
    """A sandbox uid of this test process (other runs on the machine have their own)."""
    first = sandbox.UID_BASE + (os.getpid() % 4_000_000) * 256
    return first <= uid < first + 256


def sandbox_processes() -> list[int]:
    """Processes that run as one of our sandbox uids, and zombies left to this process."""
    found = [pid for pid, _, uid in sandbox._processes() if ours(uid)]
    for pid, ppid, _ in sandbox._processes():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" and ppid == os.getpid():
            found.append(pid)
    return found


def sandbox_files() -> list[str]:
    """Entries in world-writable places that belong to one of our sandbox uids."""
    found = []
    for folder in sandbox.WORLD_WRITABLE:
        try:
            found += [e.path for e in os.scandir(folder) if ours(e.stat(follow_symlinks=False).st_uid)]
        except OSError:
            continue
    return found


@pytest.fixture
def outside(tmp_path_factory):
    """Paths a program must not touch: a folder of the repository's own (visible to the program)
    holding a file, a marker to create there, and a listening socket of this process."""
    victim = Path(tempfile.mkdtemp(prefix=".sandbox-victim-", dir=HERE))
    (victim / "keep.txt").write_text("precious")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield {"victim": victim, "marker": victim / "pwned", "port": server.getsockname()[1]}
    finally:
        server.close()
        for path in sorted(victim.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        victim.rmdir()


def hostile(victim: Path, marker: Path, port: int) -> dict[str, tuple[Program, str | None]]:
    """name -> (program, the mode it needs to fail safely; None: every mode). Each would pass
    its checks if its attack worked."""
    ok = ("assert f() == 1",)
    f = "def f():\n    return 1\n"
    return {
        "crash": (Program("raise RuntimeError('boom')\n" + f, ok), None),
        "segfault": (Program("import ctypes\nctypes.string_at(0)\n" + f, ok), None),
        "hang": (Program("while True:\n    pass\n" + f, ok), None),
        "hang swallowing the timeout": (Program(
            "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
            + f, ok), None),
        "while True in an assert": (Program(f, ("assert all(True for _ in iter(int, 1))",)), None),
        "ignore SIGALRM and sleep": (Program(
            "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(60)\n" + f, ok), None),
        "fork bomb": (Program("import os\nwhile True:\n    os.fork()\n" + f, ok), None),
        "thread": (Program("import threading\nthreading.Thread(target=print).start()\n" + f, ok), None),
        "memory bomb": (Program("x = []\nwhile True:\n    x.append(bytearray(10**7))\n" + f, ok), None),
        "10 GB allocation": (Program("x = bytearray(10 * 2**30)\n" + f, ok), None),
        "infinite output": (Program("while True:\n    print('x' * 1000)\n" + f, ok), None),
        "1 GB print": (Program("print('x' * 10**9)\n" + f, ok), None),
        "write outside its folder": (Program(f"open({str(marker)!r}, 'w').write('pwned')\n" + f, ok), None),
        "rmtree outside": (Program(f"import shutil\nshutil.rmtree({str(victim)!r})\n" + f, ok), None),
        "os.system": (Program(f"import os\nassert os.system('touch {marker}') == 0\n" + f, ok), None),
        "subprocess": (Program("import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)\n"
                               + f, ok), None),
        "sys.exit(0)": (Program("import sys\nsys.exit(0)\n" + f, ok), None),
        "os._exit(0)": (Program(f + "import os\nos._exit(0)", ok), None),
        "read a parent env var": (Program(f"import os\nassert os.environ[{SECRET!r}] == 'hunter2'\n" + f, ok), None),
        "read the parent's /proc environ": (Program(
            f"assert b'hunter2' in open('/proc/{os.getpid()}/environ', 'rb').read()\n" + f, ok), ISOLATED),
        "kill the harness": (Program(f"import os\nos.kill({os.getpid()}, 9)\n" + f, ok), ISOLATED),
        "kill every process": (Program("import os\nos.kill(-1, 9)\n" + f, ok), ISOLATED),
        "socket to this machine": (Program(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n" + f, ok), ISOLATED),
        "socket to the internet": (Program(
            "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n" + f, ok), ISOLATED),
        "read HOME": (Program(f"assert open({str(Path.home() / '.thicket-sandbox-secret')!r}).read()\n" + f, ok),
                      ISOLATED),
    }


def test_hostile_programs_score_zero_and_leave_nothing(outside, monkeypatch):
    monkeypatch.setenv(SECRET, "hunter2")
    home_secret = Path.home() / ".thicket-sandbox-secret"
    home_secret.write_text("hunter2")
    try:
        cases = {name: program for name, (program, needs) in hostile(**outside).items()
                 if needs is None or sandbox.mode() == needs}
        assert len(cases) >= 15
        outcomes = dict(zip(cases, run_all(list(cases.values()), LIMITS)))
    finally:
        home_secret.unlink()
    for name, out in outcomes.items():
        steps = 1 + len(cases[name].checks)
        assert not out.passed, (name, out)
        assert out.seconds < LIMITS.seconds * steps + sandbox.START_SLACK_S + 3, (name, out.seconds)
    assert (outside["victim"] / "keep.txt").read_text() == "precious" and not outside["marker"].exists()
    assert sandbox_processes() == [] and sandbox_files() == []
    # the run goes on: the sandbox still works, and an honest program passes
    assert run_all([Program("def f():\n    return 1", ("assert f() == 1",))], LIMITS)[0].passed


def test_writes_inside_stay_inside():
    """Isolated: a program writes its folder, /tmp and /dev/shm; nothing appears on the machine."""
    if sandbox.mode() != ISOLATED:
        pytest.skip(f"sandbox mode is {sandbox.mode()}, not isolated")
    name = f"thicket-escape-{os.getpid()}"
    code = (f"import os\nopen('here.txt', 'w').write('x')\nopen('/tmp/{name}', 'w').write('x')\n"
            f"open('/dev/shm/{name}', 'w').write('x')\ncwd = os.getcwd()\nlisting = os.listdir('.')")
    out = run_all([Program(code, ("assert cwd == '/tmp/work' and listing == ['here.txt']",))], LIMITS)[0]
    assert out.passed, out
    assert not Path("/tmp", name).exists() and not Path("/dev/shm", name).exists()
    assert not Path("/tmp/work").exists() and sandbox_files() == []


def test_empty_environment_and_private_working_folder():
    code = "import os, sys\nenv = dict(os.environ)\ncwd = os.getcwd()\nfiles = os.listdir('.')\npath = sys.path"
    check = "assert set(env) <= {'PATH', 'LANG'} and files == [] and not any('site-packages' in p for p in path)"
    assert run_all([Program(code, (check,))], LIMITS)[0].passed


def test_output_is_captured_and_capped():
    out = run_all([Program("print('hello from the child')", ()),
                   Program("print('y' * 3000)", ()),
                   Program("print('z' * 3000)", ())], Limits(seconds=1.0, output_kb=2))
    assert out[0].passed and "hello from the child" in out[0].output
    assert [o.passed for o in out[1:]] == [False, False]  # 3000 bytes > a 2 KiB file limit


@pytest.mark.parametrize("sleep, passed", [(0.2, True), (1.5, False)])
def test_each_step_has_its_own_time_limit(sleep, passed):
    program = Program("import time", (f"time.sleep({sleep})", f"time.sleep({sleep})", "assert True"))
    out = run_all([program], LIMITS)[0]
    assert out.passed is passed
    assert out.status == ("passed" if passed else "failed")  # the step's own alarm, not the outer kill


def test_no_exec_in_the_harness(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("exec/eval in the harness process")
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "eval", refuse)
    assert run_all([Program("x = eval('1 + 1')\nexec('y = x')", ("assert y == 2",))], LIMITS)[0].passed


def test_parallel_batch_keeps_order():
    programs = [Program(f"v = {i}", (f"assert v == {i}",)) for i in range(6)]
    programs[3] = Program("v = -1", ("assert v == 3",))
    assert [o.passed for o in run_all(programs, LIMITS, workers=3)] == [True, True, True, False, True, True]


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid mode needs root")
def test_uid_mode_sweeps_what_a_program_leaves():
    """Without namespaces (mode uid), what the program's uid left in /tmp is deleted after it."""
    name = f"thicket-uid-{os.getpid()}"
    out = run_one(Program(f"open('/tmp/{name}', 'w').write('x')\nimport os\nuid = os.getuid()",
                          (f"assert uid >= {sandbox.UID_BASE}",)), LIMITS, "uid", 7)
    assert out.passed, out
    assert not Path("/tmp", name).exists() and sandbox_processes() == []


def test_plain_mode_runs_with_limits():
    out = run_one(Program("x = bytearray(10 * 2**30)"), LIMITS, "plain", 0)
    assert not out.passed and "MemoryError" in out.output


def test_fallback_is_said_once(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_STATE", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)  # as a normal user: mode plain
    assert sandbox.mode() == "plain" and sandbox.mode() == "plain"
    err = capsys.readouterr().err
    assert err.count("sandbox: no namespace isolation here") == 1 and "network" in err
