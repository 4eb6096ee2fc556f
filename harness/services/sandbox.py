"""Run model-written programs: each in its own child process, never exec()'d in the harness.

`run_all(programs)` runs a batch in parallel (up to os.cpu_count() at once) and returns one
`Outcome` per program. A program is its code and its checks (assert statements). The child
(harness/services/sandbox_child.py) runs the code, then evaluates only the parts of each assert that
involve the program and reports their values as plain data; harness/services/sandbox_check.py evaluates
the rest of the assert, expected values included, here, on what harness/services/sandbox_records.py
decodes. A program passes when every assert has
its record and holds on those values; each step (the code, each assert) within `Limits.seconds`
(the authors' 5 s per assert, docs/paper.md section 5). Exit codes, exceptions, signals, output
and files never count as a pass; a failure carries its reason. A crash, hang, fork or memory
bomb, flood of output or forbidden access only makes that program fail: nothing a program does
raises in the harness.

Each child, on Linux as root (mode "isolated", the default here):
- new network, PID, mount, IPC and UTS namespaces (`unshare`): no network at all (not even
  loopback), no other process visible, and when the program's first process ends the kernel
  kills and reaps everything it started; on a timeout the harness kills that process;
- a new root (pivot_root, the old root detached; harness/services/sandbox_root.py): the Python runtime
  and the system libraries it loads, read-only, four devices, and a private size-capped /tmp
  whose /tmp/work, empty, is the working folder; no repository, data, results, homes, /proc,
  /etc or harness files exist there, and everything written vanishes with the namespace;
- an unprivileged uid of its own (no passwd entry), so it can write nothing but /tmp, read
  nothing of root's, signal no other process;
- resource limits: CPU time, address space, file size (stdout and stderr go to a file, so this
  also caps output), open files, and one process (no child processes, no threads);
- `python -I -S -B` with an environment of PATH and LANG only: no site-packages, no tokens.

Not root (mode "userns"): the same namespaces and root inside a user namespace (`unshare --user
--map-root-user`); instead of its own uid the program keeps the user's, as root of that namespace
with every capability dropped (so it cannot undo a mount) and no_new_privs.

Not guaranteed: the program spends its limits of CPU and memory; kernel bugs are out of scope.
Where the new root or namespaces are unavailable, mode "uid" (root, no `unshare`) keeps the
checker, the uid and the limits but the program sees the machine's world-readable files (the
repository and data included) and the network, and may leave files in world-writable
directories (the harness deletes the ones it finds at their top level and kills the uid's
processes); mode "plain" (not root) keeps the checker and the limits only. The harness says
which, once, on stderr.
"""
from __future__ import annotations

import marshal
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.services import sandbox_root
from harness.errors import UserError
from harness.services.sandbox_check import Check, compile_check
from harness.services.sandbox_records import RESULT_BYTES, verdict

WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
CHILD = str(Path(__file__).with_name("sandbox_child.py"))
UID_BASE = 1_000_000_000  # + pid * 256 + slot: a uid per live harness process and parallel slot
START_SLACK_S = 2.0       # interpreter start-up on a loaded machine, on top of the steps' time
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
NAMESPACES = ("--net", "--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts")
USERNS = ("--user", "--map-root-user")  # not root: a user namespace makes the mounts possible
NAMESPACED = ("isolated", "userns")
PROBE_CODE = "import re, math, heapq, collections, itertools\nx = 1"
OUTPUT_TAIL = 2048


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0
    """Wall clock of each step: the program's code, then each check (the authors: 5 s per assert)."""
    memory_mb: int = 1024
    """Address space of the program (RLIMIT_AS)."""
    output_kb: int = 1024
    """Largest file the program may write, its stdout + stderr and its results included (RLIMIT_FSIZE)."""
    disk_mb: int = 16
    """Size of its private /tmp (isolated mode)."""
    processes: int = 1
    """Processes and threads of the program's uid (RLIMIT_NPROC); 1: neither children nor threads."""
    open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""


@dataclass(frozen=True)
class Program:
    code: str
    """Run first, as one unit (setup + solution)."""
    checks: tuple[str, ...] = ()
    """Then each of these assert statements, in order, in the same namespace; a program without
    checks never passes (a pass is what its asserts show)."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str
    """passed, failed, timeout, or error (the sandbox itself failed)."""
    reason: str
    """Why it did not pass ("" when it did): the code's exception, a wrong or non-plain value in
    assert i, a timeout, a limit, an early exit."""
    output: str
    """The last 2 KiB of the program's stdout and stderr."""
    seconds: float


_STATE: dict = {}  # the probed mode and the new root's contents, once per process
_LOCK = threading.Lock()
_ROOT_LOCK = threading.Lock()


def run_all(programs: list[Program], limits: Limits = Limits(), workers: int | None = None) -> list[Outcome]:
    """Outcomes of all programs, in order; at most `workers` (default os.cpu_count()) at once."""
    if not programs:
        return []
    how = mode()
    workers = max(1, min(workers or os.cpu_count() or 1, len(programs), 128))
    slots = queue.SimpleQueue()
    for slot in range(workers):
        slots.put(slot)

    def one(program: Program) -> Outcome:
        slot = slots.get()  # a slot is one uid: a slot's programs never overlap in time
        try:
            return run_one(program, limits, how, slot)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, programs))


def mode() -> str:
    """isolated, userns, uid or plain: the strongest mode in which a trivial program passes, probed once."""
    with _LOCK:
        if "mode" not in _STATE:
            _STATE["mode"] = _probe()
    return _STATE["mode"]


def _probe() -> str:
    root = os.geteuid() == 0
    spaces = ["isolated" if root else "userns"] if shutil.which("unshare") else []
    tried = spaces + (["uid"] if root else ["plain"])
    failures = []
    for how in tried:
        try:
            out = run_one(Program(PROBE_CODE, ("assert x == 1",)), Limits(), how, 0)
        except OSError as exc:  # the new root cannot be described here (sandbox_root.spec)
            failures.append(f"{how}: {exc}")
            continue
        if out.passed:
            if how not in NAMESPACED:
                print(f"sandbox: no namespace isolation and no minimal root here "
                      f"({'; '.join(failures) or 'not root or no unshare'}); programs "
                      + ("run as an unprivileged uid with CPU, memory, file and process limits, but can read "
                         "every world-readable file (the repository and data included) and reach the network"
                         if how == "uid" else "run as this user with CPU, memory, file and process limits only: "
                         "they can read and write what this user can and reach the network")
                      + "; the checker still keeps expected values out of their process",
                      file=sys.stderr, flush=True)
            return how
        failures.append(f"{how}: {out.status} {out.reason} {out.output.strip()[-160:]!r}")
    if root:
        raise UserError("cannot run model-written code safely: as root, neither namespaces (`unshare`) nor an "
                        f"unprivileged uid worked ({'; '.join(failures)}); run as a non-root user")
    raise UserError(f"cannot run model-written code here: {'; '.join(failures)}")


def _root_spec() -> dict:
    with _ROOT_LOCK:  # not _LOCK: the probe holds that one while it runs its program
        if "root" not in _STATE:
            _STATE["root"] = sandbox_root.spec()
        return _STATE["root"]


def run_one(program: Program, limits: Limits, how: str, slot: int) -> Outcome:
    """One program in one child, in mode `how`; never raises for what the program does."""
    checks: list[Check] = [compile_check(c) for c in program.checks]  # ValueError: a check we cannot judge
    isolated = how in NAMESPACED
    uid = None if how in ("plain", "userns") else UID_BASE + (os.getpid() % 4_000_000) * 256 + slot
    deadline = limits.seconds * (1 + len(checks)) + START_SLACK_S
    workdir = "/tmp/work" if isolated else tempfile.mkdtemp(prefix="thicket-sandbox-")
    cmd = [sys.executable, "-I", "-S", "-B", CHILD]
    if isolated:
        cmd = [shutil.which("unshare") or "unshare", *(USERNS if how == "userns" else ()), *NAMESPACES, *cmd]
    start, killed, returncode = time.monotonic(), False, None
    try:
        config = {"root": _root_spec() if isolated else None, "uid": uid, "userns": how == "userns", "workdir": workdir,
                  "limits": limits.__dict__, "cpu": deadline}
        if uid is not None and not isolated:
            os.chown(workdir, uid, uid)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as results:
            config["result_fd"] = results.fileno()
            payload = marshal.dumps({"config": config, "code": program.code, "checks": [c.holes for c in checks]})
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=out, env=ENV, cwd="/",
                                    pass_fds=(results.fileno(),), start_new_session=True)
            try:
                proc.communicate(payload, timeout=deadline)
            except subprocess.TimeoutExpired:
                killed = True
                _kill(proc, isolated)
            returncode = proc.returncode
            out.seek(max(0, out.seek(0, os.SEEK_END) - OUTPUT_TAIL))
            tail = out.read()
            results.seek(0)
            data = results.read(RESULT_BYTES)
        status, reason = verdict(checks, data, returncode, killed) if checks else ("failed", "no assert to check")
    except OSError as exc:  # the sandbox could not start (fds, memory): this program fails, the run goes on
        if isolated and "root" not in _STATE:
            raise  # the probe: no new root on this machine
        status, reason, tail = "error", f"the sandbox failed: {type(exc).__name__}: {exc}", b""
    finally:
        if not isolated:
            shutil.rmtree(workdir, ignore_errors=True)
            if uid is not None:
                _sweep(uid)
    return Outcome(status == "passed", status, reason, tail.decode("utf-8", "replace"), time.monotonic() - start)


def _kill(proc, isolated: bool) -> None:
    """Kill a timed-out child so that nothing is left running and every process is reaped.

    Isolated: kill the namespace's first process (the child of `unshare`), which makes the kernel
    kill and reap the rest, and let `unshare` reap it; killing `unshare` instead would orphan that
    process (and, had it left the process group, leave it running: `--kill-child` is the backstop)."""
    if isolated:
        for pid in [pid for pid, ppid, _ in _processes() if ppid == proc.pid]:
            _sigkill(pid)
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, real uid) of every process."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            found.append((int(name), int(fields["PPid"]), int(fields["Uid"].split()[0])))
        except (OSError, ValueError, KeyError):
            continue  # not a process, or it ended while we read
    return found


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _sweep(uid: int) -> None:
    """Mode uid: kill what the uid left running and delete what it left in world-writable places."""
    for pid, _, owner in _processes():
        if owner == uid:
            _sigkill(pid)
    for folder in WORLD_WRITABLE:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
