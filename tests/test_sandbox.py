"""The sandbox for model-written code, run for real (no mocks): hostile programs score 0 within
their limits and leave no process and no file behind; programs written to fake a pass (an
always-equal object, a subclass, reading the caller or the data, exiting early, patching
builtins or the child itself) score 0 with their reason; the program sees only its minimal root;
the harness process is never touched."""
from __future__ import annotations

import builtins
import os
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from harness.services import sandbox, sandbox_root
from harness.errors import UserError
from harness.services.sandbox import Limits, Program, run_all, run_one
from harness.services.sandbox_check import compile_check

LIMITS = Limits(seconds=1.0)  # short steps keep the hanging cases to about a second
SECRET = "THICKET_SANDBOX_TEST_SECRET"
ISOLATED = "isolated"
HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["default", "userns"])
def how(request) -> str:
    """The mode this machine probes, and "userns" (the mode for non-root users) where it works
    too; as root, userns programs keep root's exemption from the process limit, so only tests
    without fork bombs use this fixture."""
    if request.param == "default":
        return sandbox.mode()
    if sandbox.mode() == "userns" or not run_one(Program("x = 1", ("assert x == 1",)), LIMITS, "userns", 0).passed:
        pytest.skip("userns is the default here, or does not work")
    return "userns"


def run_in(how: str, programs: list[Program], limits: Limits = LIMITS) -> list:
    return run_all(programs, limits) if how == sandbox.mode() else [run_one(p, limits, how, 0) for p in programs]


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
        assert not out.passed and out.reason, (name, out)
        assert out.seconds < LIMITS.seconds * steps + sandbox.START_SLACK_S + 3, (name, out.seconds)
    assert (outside["victim"] / "keep.txt").read_text() == "precious" and not outside["marker"].exists()
    assert sandbox_processes() == [] and sandbox_files() == []
    # the run goes on: the sandbox still works, and an honest program passes
    assert run_all([Program("def f():\n    return 1", ("assert f() == 1",))], LIMITS)[0].passed


def test_writes_inside_stay_inside():
    """Isolated: a program writes its folder and /tmp; nothing appears on the machine."""
    if sandbox.mode() != ISOLATED:
        pytest.skip(f"sandbox mode is {sandbox.mode()}, not isolated")
    name = f"thicket-escape-{os.getpid()}"
    code = (f"import os\nopen('here.txt', 'w').write('x')\nopen('/tmp/{name}', 'w').write('x')\n"
            "cwd = os.getcwd()\nlisting = os.listdir('.')")
    out = run_all([Program(code, ("assert cwd == '/tmp/work' and listing == ['here.txt']",))], LIMITS)[0]
    assert out.passed, out
    assert not Path("/tmp", name).exists() and not Path("/tmp/work").exists() and sandbox_files() == []


def test_empty_environment_and_private_working_folder():
    code = ("import os, sys\nenv = dict(os.environ)\ncwd = os.getcwd()\nfiles = os.listdir('.')\n"
            "site = [p for p in sys.path if 'site-packages' in p]")
    check = "assert set(env) <= {'PATH', 'LANG'} and files == [] and not site"
    assert run_all([Program(code, (check,))], LIMITS)[0].passed


def test_output_is_captured_and_capped():
    out = run_all([Program("print('hello from the child')", ("assert True",)),
                   Program("print('y' * 3000)", ("assert True",)),
                   Program("print('z' * 3000)", ("assert True",))], Limits(seconds=1.0, output_kb=2))
    assert out[0].passed and "hello from the child" in out[0].output
    assert [o.passed for o in out[1:]] == [False, False]  # 3000 bytes > a 2 KiB file limit
    assert all(o.reason.startswith("the code: output limit (OSError: [Errno 27] File too large") for o in out[1:]), out


@pytest.mark.parametrize("sleep, passed", [(0.2, True), (1.5, False)])
def test_each_step_has_its_own_time_limit(sleep, passed):
    program = Program("import time\ndef nap(s):\n    time.sleep(s)\n    return 1",
                      (f"assert nap({sleep}) == 1", f"assert nap({sleep}) == 1", "assert True"))
    out = run_all([program], LIMITS)[0]
    assert out.passed is passed
    assert out.status == ("passed" if passed else "timeout")
    assert out.reason == ("" if passed else "assert 1 ran past its time limit")  # its own alarm, not the kill


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
    out = run_one(Program("x = bytearray(10 * 2**30)", ("assert len(x) > 0",)), LIMITS, "plain", 0)
    assert not out.passed and out.reason == "the code: memory limit (MemoryError)"


def test_fallback_is_said_once(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_STATE", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)  # as a normal user without unshare: mode plain
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert sandbox.mode() == "plain" and sandbox.mode() == "plain"
    err = capsys.readouterr().err
    assert err.count("sandbox: no namespace isolation and no minimal root here") == 1 and "network" in err


# ---------------------------------------------------------------- programs written to fake a pass

E = 424242  # the expected value; no program below contains it, so finding it would be a leak
ALWAYS_EQUAL = "class A:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
SEARCH_MEMORY = f"""import gc, sys
def f():
    needle = str(2 * {E // 2})
    seen, frame = list(gc.get_objects()), sys._getframe()
    while frame:  # the caller's frames, their locals and globals, and every tracked object
        seen += [frame.f_locals, frame.f_globals, frame.f_code.co_consts]
        frame = frame.f_back
    for o in seen:
        parts = [o] if isinstance(o, str) else list(o.values()) if isinstance(o, dict) else list(o) \\
            if isinstance(o, (list, tuple)) else []
        for part in parts:
            for text in (part if isinstance(part, (list, tuple)) else [part]):
                if isinstance(text, str) and text is not needle and needle in text:
                    return int(needle)
    return -1
"""


def fakes(data_dir: str) -> dict[str, tuple[Program, str, str | None]]:
    """name -> (program, its reason must contain this, the mode it needs). Each would pass under
    an in-process checker (and most under this sandbox before the checker moved out of the child)."""
    eq = (f"assert f() == {E}",)
    return {
        "always-equal object": (Program(ALWAYS_EQUAL + "def f():\n    return A()", eq), "not plain data (A)", None),
        "always-equal object in a list": (Program(ALWAYS_EQUAL + "def f():\n    return [A()]", ("assert f() == [1]",)),
                                          "not plain data (A)", None),
        "int subclass with __eq__": (Program(
            "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            "def f():\n    return I(0)", eq), "not plain data (I)", None),
        "str subclass with __eq__": (Program(
            "class S(str):\n    def __eq__(self, other):\n        return True\ndef f():\n    return S('x')",
            ("assert f() == 'y'",)), "not plain data (S)", None),
        "dict subclass dressed as Counter": (Program(
            "class Counter(dict):\n    __module__ = 'collections'\n    def __eq__(self, other):\n        return True\n"
            "def f():\n    return Counter()", ("assert f() == {'a': 1}",)), "wrong value: got {}, expected {'a': 1}",
            None),
        "metaclass with a hanging __eq__": (Program(
            "class M(type):\n    def __eq__(cls, other):\n        while True:\n            pass\n"
            "    __hash__ = type.__hash__\nclass B(metaclass=M):\n    pass\ndef f():\n    return B()", eq),
            "not plain data (B)", None),
        "exception with a hanging __str__": (Program(
            "class X(Exception):\n    def __str__(self):\n        while True:\n            pass\n"
            "def f():\n    raise X()", eq), "raised X", None),
        "reads the caller's frames and memory for the assert": (Program(SEARCH_MEMORY, eq),
                                                                "wrong value: got -1", None),
        "reads the dataset from disk": (Program(
            f"import json\ndef f():\n    return json.loads(open({data_dir + '/mbpp/mbpp.jsonl'!r}).readline())"
            "['task_id']",
            ("assert f() == 1",)), "raised FileNotFoundError", ISOLATED),
        "reads the answer from this test file in the repository": (Program(
            f"import re\ndef f():\n    return int(re.search('^E = ([0-9]+)', open({__file__!r}).read(), re.M)[1])",
            eq), "raised FileNotFoundError", ISOLATED),
        "os._exit(0) in the call": (Program("import os\ndef f():\n    os._exit(0)", eq),
                                    "exited (status 0) during assert 1", None),
        "sys.exit(0) in the call": (Program("import sys\ndef f():\n    sys.exit(0)", eq), "raised SystemExit", None),
        "raise SystemExit in the code": (Program("raise SystemExit(0)", eq), "the code: raised SystemExit", None),
        "KeyboardInterrupt in the call": (Program("def f():\n    raise KeyboardInterrupt", eq),
                                          "raised KeyboardInterrupt", None),
        "patches builtins": (Program(
            "import builtins\nbuiltins.type = lambda *a: int\nbuiltins.isinstance = lambda *a: True\n"
            "builtins.repr = lambda o: '1'\nbuiltins.AssertionError = None\n" + ALWAYS_EQUAL
            + "def f():\n    return A()", eq), "not plain data (A)", None),
        "prints a fake pass": (Program(
            "import sys\nprint('passed')\nprint('[\"ok\"]')\nsys.stderr.write('[\"c\",[[\"v\",[\"i\",\"1\"]]]]\\n')\n"
            "def f():\n    return 0", eq), f"wrong value: got 0, expected {E}", None),
        "writes records on every fd": (Program(
            "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'[\"ok\"]\\n')\n    except OSError:\n"
            "        pass\ndef f():\n    return 0", eq), "not the child's", None),
        "rewrites the child's encoder": (Program(
            "import sys\nsys.modules['__main__']._plain = lambda x, out, *a: out.append('[\"equal\"]')\n"
            "def f():\n    return 0", eq), "not the child's", None),
        "catches the alarm and answers late": (Program(
            f"def f():\n    try:\n        while True:\n            pass\n    except BaseException:\n        return {E}",
            eq), "assert 1 ran past its time limit", None),
        "a cyclic list": (Program("def f():\n    x = []\n    x.append(x)\n    return x", ("assert f() == [[]]",)),
                          "nested deeper than", None),
        "a value past the output limit": (Program("def f():\n    return 'x' * (2 << 20)", ("assert f() == 'x'",)),
                                          "larger than the output limit", None),
    }


def test_programs_written_to_fake_a_pass_score_zero_with_their_reason(data_dir, how):
    cases = {name: case for name, case in fakes(data_dir).items() if case[2] is None or how in sandbox.NAMESPACED}
    outcomes = run_in(how, [program for program, _, _ in cases.values()])
    wrong = {name: out.reason for (name, (_, why, _)), out in zip(cases.items(), outcomes)
             if out.passed or why not in out.reason}
    assert wrong == {}
    assert sandbox_processes() == []


def test_the_expected_value_never_enters_the_child():
    """The child's orders hold the program and the holes, not the assert's other side."""
    check = compile_check(f"assert f(1, 'a') == {E}")
    assert check.holes == ("f(1, 'a')",) and str(E) not in repr(check.holes)
    out = run_all([Program(SEARCH_MEMORY, (f"assert f() == {E}",))], LIMITS)[0]
    assert out.reason == f"assert 1: wrong value: got -1, expected {E}"


@pytest.mark.parametrize("code, check, passed, why", [
    ("def f():\n    return 0.1 + 0.2", "assert f() == 0.30000000000000004", True, ""),   # == stays exact
    ("def f():\n    return 0.1 + 0.2", "assert f() == 0.3", False, "wrong value: got 0.30000000000000004"),
    ("def f():\n    return 0.1 + 0.2", "assert math.isclose(f(), 0.3, rel_tol=1e-9)", True, ""),
    ("def f():\n    return 0.31", "assert math.isclose(f(), 0.3, rel_tol=1e-9)", False, "false for the program's"),
    (ALWAYS_EQUAL + "def f():\n    return A()", "assert math.isclose(f(), 0.3)", False, "not plain data (A)"),
    ("def f():\n    return [2, 1, 2]", "assert set(f()) == {1, 2}", True, ""),
    (ALWAYS_EQUAL + "def f():\n    return [A()]", "assert set(f()) == {1, 2}", False, "not plain data (A)"),
    ("def f():\n    return [1]", "assert f()", True, ""),
    ("class T:\n    def __bool__(self):\n        return True\ndef f():\n    return T()", "assert f()", False,
     "not plain data (T)"),
    ("def f():\n    return ''", "assert not f()", True, ""),
    ("def f():\n    return None", "assert f() is None", True, ""),
    ("def f():\n    return 1\ndef g():\n    raise ValueError", "assert f() == 1 or g() == 2", True, ""),  # g not needed
    ("def f():\n    return 0\ndef g():\n    raise ValueError('no')", "assert f() == 1 or g() == 2", False,
     "raised ValueError: no"),
    ("def f():\n    return 3", "assert 1 < f() < 5", True, ""),
    ("def f():\n    return 'a'", "assert f() < 5", False, "the comparison raised TypeError"),
    ("import sys\ndef f(t):\n    return sys.getsizeof(t)", "assert f((1, 2)) == sys.getsizeof((1, 2))", True, ""),
    ("class sys:\n    getsizeof = staticmethod(lambda t: 0)\ndef f(t):\n    return 0",  # its own `sys` is not asked
     "assert f((1, 2)) == sys.getsizeof((1, 2))", False, "wrong value: got 0"),
    ("def f():\n    return 'x'", "assert f() == 'y', 'f() == \"x\" would be right'", False, "wrong value"),
])
def test_other_assert_shapes_compare_in_the_harness(code, check, passed, why):
    out = run_all([Program("import math\n" + code, (check,))], LIMITS)[0]
    assert out.passed is passed and why in out.reason, out


@pytest.mark.parametrize("value, expected, passed", [
    ("collections.Counter('abb')", "{'a': 1, 'b': 2}", True),   # the standard library's dicts: as their items
    ("collections.defaultdict(list, a=[1])", "{'a': [1]}", True),
    ("collections.OrderedDict(b=1, a=2)", "{'a': 2, 'b': 1}", True),
    ("complex(1, -2)", "(1-2j)", True),
    ("frozenset({b'x', (1, None)})", "frozenset({b'x', (1, None)})", True),
    ("map(int, '12')", "[1, 2]", False),                          # honest, but not plain data: a deviation
    ("(i for i in (1, 2))", "(1, 2)", False),
    ("collections.namedtuple('P', 'x y')(1, 2)", "(1, 2)", False),
])
def test_plain_data_is_exact_builtin_types(value, expected, passed):
    out = run_all([Program(f"import collections\ndef f():\n    return {value}", (f"assert f() == {expected}",))],
                  LIMITS)[0]
    assert out.passed is passed and (passed or "not plain data" in out.reason), out


# ---------------------------------------------------------------- the minimal root

FS_PROBE = """import os
def strays(allowed):
    found = []
    for top, dirs, files in os.walk('/'):
        for name in dirs + files:
            path = os.path.join(top, name)
            if not any(path == a or path.startswith(a + '/') or a.startswith(path + '/') for a in allowed):
                found.append(path)
    return sorted(found)[:20]
def readable(paths):
    return [p for p in paths if os.path.exists(p)]
def writable(paths):
    ok = []
    for p in paths:
        try:
            open(p, 'w').close()
            ok.append(p)
        except OSError:
            pass
    return ok
"""


def test_the_program_sees_only_its_minimal_root(data_dir, tmp_path, how):
    """Isolated and userns: walking the whole visible tree finds the runtime, the libraries, four
    devices and /tmp; the repository, data, home, /proc, /etc and the harness's temporary files
    do not exist."""
    if how not in sandbox.NAMESPACED:
        pytest.skip(f"sandbox mode is {how}: no minimal root")
    spec = sandbox_root.spec()
    allowed = [*spec["binds"], *(link for link, _ in spec["links"]), *spec["devices"], "/tmp/work"]
    places = ["/x", spec["binds"][0] + "/x", "/dev/x", "/tmp/x", "/tmp/work/x"]
    hidden = [[]] * len(spec["hide"])
    with tempfile.NamedTemporaryFile(prefix="thicket-harness-") as harness_temp, \
            tempfile.NamedTemporaryFile(prefix=".thicket-sandbox-", dir=Path.home()) as home:  # /root may hold Python
        secrets = [str(HERE / "test_sandbox.py"), data_dir + "/mbpp/mbpp.jsonl", home.name, "/proc/self/status",
                   "/etc/passwd", "/work", harness_temp.name, str(tmp_path), sys.executable,
                   str(HERE.parent / "results")]
        checks = (f"assert strays({allowed!r}) == []", f"assert readable({secrets!r}) == []",
                  f"assert writable({places!r}) == ['/tmp/x', '/tmp/work/x']",
                  f"assert [os.listdir(p) for p in {spec['hide']!r}] == {hidden!r}")
        out = run_in(how, [Program(FS_PROBE, checks)], Limits(seconds=20))[0]
    assert out.passed, out


def test_userns_mode_gives_up_every_capability():
    """Not root: the program is root of its user namespace, but can neither mount nor remount."""
    if not run_one(Program("x = 1", ("assert x == 1",)), LIMITS, "userns", 0).passed:
        pytest.skip("user namespaces do not work here")
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "def mount(*args):\n    return libc.mount(*args), ctypes.get_errno()\n")
    checks = ("assert os.getuid() == 0", "assert mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None) == (-1, 1)",
              "assert mount(b'none', b'/', None, 32, None) == (-1, 1)")  # MS_REMOUNT read-write
    out = run_one(Program(code, checks), LIMITS, "userns", 0)
    assert out.passed, out


def test_not_root_the_probe_tries_a_user_namespace_first(monkeypatch, capsys):
    if not run_one(Program("x = 1", ("assert x == 1",)), LIMITS, "userns", 0).passed:
        pytest.skip("user namespaces do not work here")
    monkeypatch.setattr(sandbox, "_STATE", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    assert sandbox.mode() == "userns" and capsys.readouterr().err == ""  # nothing to warn about


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid mode needs root")
def test_no_minimal_root_is_said_once_and_the_checker_stays(monkeypatch, capsys):
    """Without a minimal root, as root: mode uid, said once on stderr; or, where the Python
    installation is unreadable to an unprivileged uid (here: under /root), a refusal naming both."""
    def refuse():
        raise OSError("no pivot_root syscall number known for this machine")
    monkeypatch.setattr(sandbox, "_STATE", {})
    monkeypatch.setattr(sandbox.sandbox_root, "spec", refuse)
    try:
        assert sandbox.mode() == "uid" and sandbox.mode() == "uid"
    except UserError as exc:
        assert "isolated: no pivot_root syscall number" in str(exc) and "uid: failed" in str(exc)
        return
    err = capsys.readouterr().err
    assert err.count("no minimal root here (isolated: no pivot_root syscall number") == 1
    assert "the repository and data included" in err
    program = Program("class A:\n    def __eq__(s, o):\n        return True\ndef f():\n    return A()", ("assert f() == 1",))
    assert run_all([program], LIMITS)[0].reason == "assert 1: a value that is not plain data (A)"
