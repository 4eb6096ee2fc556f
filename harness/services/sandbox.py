"""Run model-written programs: each in its own child process, never exec()'d in the harness.

`run_all(programs)` runs a batch in parallel (up to os.cpu_count() at once) and returns one
`Outcome` per program; a program passes when its code and then every check (an assert) ran
without an exception, each step within `Limits.seconds` (the authors' 5 s per assert, docs/paper.md
section 5). A crash, hang, fork or memory bomb, flood of output or forbidden access only makes
that program fail: nothing a program does raises in the harness.

Each child, on Linux as root (mode "isolated", the default here):
- new network, PID, mount, IPC and UTS namespaces (`unshare`): no network at all (not even
  loopback), no other process visible, and when the program's first process ends the kernel
  kills and reaps everything it started; on a timeout the harness kills that process;
- private size-capped tmpfs over /tmp, /var/tmp, /dev/shm and /run/lock, and an empty tmpfs
  over the home directories (/root and $HOME; the interpreter's own tree is bound back
  read-only): the working directory is an empty /tmp/work, and everything written anywhere
  vanishes with the namespace;
- an unprivileged uid of its own (no passwd entry), so it cannot write any file of the machine,
  read root's files or /proc/<pid>/environ of the harness, or signal other processes;
- resource limits: CPU time, address space, file size (stdout and stderr go to a file, so this
  also caps output), open files, and one process (no child processes, no threads);
- `python -I -S -B` with an environment of PATH and LANG only: no site-packages, no tokens.

Not guaranteed: the program still reads every world-readable file (the repository, /etc) and
spends its limits of CPU and memory; it runs in the same interpreter as the small checker loop
below, so a program written to defeat the checker (by inspecting the caller's frame for the
pass token) could fake a pass; kernel bugs are out of scope. Where namespaces are unavailable,
mode "uid" (root, no `unshare`) keeps the uid and the limits but has network access and may leave
files in world-writable directories (the harness deletes the ones it finds at their top level
and kills the uid's processes), and mode "plain" (not root) keeps only the limits, the temporary
directory and the empty environment; the harness says which, once, on stderr.
"""
from __future__ import annotations

# The child runs this very file as a script (`python -I -S -B harness/services/sandbox.py`). What it needs
# comes first and imports only built-in modules (no dataclasses, json or enum: each costs a child
# 5-50 ms); the harness side, below the `__main__` block, never runs in a child.
import marshal
import os
import resource
import sys

import _signal  # `signal` without its enum wrappers

WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


# ---------------------------------------------------------------- the child side

class StepTimeout(BaseException):
    """A step ran past Limits.seconds (BaseException: a bare `except Exception` cannot swallow it)."""


def _child(payload: dict) -> None:
    config = payload["config"]
    if config["isolated"]:
        _private_mounts(config)
    _set_limits(config)
    if config["uid"] is not None:
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
    os.chdir(config["workdir"])
    _signal.signal(_signal.SIGALRM, _raise_timeout)
    namespace: dict = {}  # the authors' exec(code, {}): `__name__ == "__main__"` blocks do not run
    for step in [payload["code"], *payload["checks"]]:
        _signal.setitimer(_signal.ITIMER_REAL, config["limits"]["seconds"])
        exec(compile(step, "<program>", "exec"), namespace)  # in this child only, never the harness
        _signal.setitimer(_signal.ITIMER_REAL, 0)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, payload["nonce"].encode())  # the pass token: an exit code alone is forged by sys.exit(0)
    os._exit(0)


def _raise_timeout(signum, frame):
    raise StepTimeout("step ran past its time limit")


def _set_limits(config: dict) -> None:
    lim, cpu = config["limits"], int(config["cpu"]) + 1
    for which, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, lim["memory_mb"] << 20),
                         (resource.RLIMIT_FSIZE, lim["output_kb"] << 10), (resource.RLIMIT_NOFILE, lim["open_files"]),
                         (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))


def _private_mounts(config: dict) -> None:
    """As root inside the new mount namespace: private tmpfs over the writable places and the
    homes, the interpreter's tree bound back read-only, and the empty working directory."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    nosuid_nodev, rdonly, remount, bind, move, rec = 2 | 4, 1, 32, 4096, 8192, 16384

    def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        if libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags,
                      data and data.encode()) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")

    size = f"size={config['limits']['disk_mb']}m,mode=1777"
    for folder in WORLD_WRITABLE:  # /tmp always: the staging place below must not be the host's
        if folder == "/tmp" or (os.path.isdir(folder) and os.stat(folder).st_mode & 0o002):
            mount("tmpfs", folder, "tmpfs", nosuid_nodev, size)
    keep = config["keep"]
    for home in config["hide"]:
        if not os.path.isdir(home):
            continue
        inside = keep == home or keep.startswith(home.rstrip("/") + "/")
        if inside:  # stage the interpreter's tree before the home disappears under the empty tmpfs
            os.mkdir("/tmp/.keep")
            mount(keep, "/tmp/.keep", None, bind | rec)
        mount("tmpfs", home, "tmpfs", nosuid_nodev, "size=1m,mode=755")
        if inside:
            os.makedirs(keep)
            mount("/tmp/.keep", keep, None, move)
            mount("none", keep, None, remount | bind | rdonly)
            os.rmdir("/tmp/.keep")
    os.mkdir(config["workdir"], 0o700)
    os.chown(config["workdir"], config["uid"], config["uid"])


if __name__ == "__main__":
    _child(marshal.loads(sys.stdin.buffer.read()))


# ---------------------------------------------------------------- the harness side

import queue  # noqa: E402  (below the child's exit on purpose, see the top)
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from harness.errors import UserError  # noqa: E402

UID_BASE = 1_000_000_000  # + pid * 256 + slot: a uid per live harness process and parallel slot
START_SLACK_S = 2.0       # interpreter start-up on a loaded machine, on top of the steps' time
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
NAMESPACES = ("--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--ipc", "--uts")
PROBE_CODE = "import re, math, heapq, collections, itertools\nx = 1"


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0
    """Wall clock of each step: the program's code, then each check (the authors: 5 s per assert)."""
    memory_mb: int = 1024
    """Address space of the program (RLIMIT_AS)."""
    output_kb: int = 1024
    """Largest file the program may write, its stdout + stderr included (RLIMIT_FSIZE)."""
    disk_mb: int = 16
    """Size of each private tmpfs (isolated mode)."""
    processes: int = 1
    """Processes and threads of the program's uid (RLIMIT_NPROC); 1: neither children nor threads."""
    open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""


@dataclass(frozen=True)
class Program:
    code: str
    """Run first, as one unit (setup + solution)."""
    checks: tuple[str, ...] = ()
    """Then each of these, in order, in the same namespace (asserts)."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str
    """passed, failed (an exception or exit), timeout or error (the sandbox itself failed)."""
    output: str
    """The last 2 KiB of the program's stdout and stderr."""
    seconds: float


_STATE: dict = {}  # the probed mode, once per process
_LOCK = threading.Lock()


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
    """isolated, uid or plain: the strongest mode in which a trivial program passes, probed once."""
    with _LOCK:
        if "mode" not in _STATE:
            _STATE["mode"] = _probe()
    return _STATE["mode"]


def _probe() -> str:
    root = os.geteuid() == 0
    tried = (["isolated"] if root and shutil.which("unshare") else []) + (["uid"] if root else ["plain"])
    failures = []
    for how in tried:
        out = run_one(Program(PROBE_CODE, ("assert x == 1",)), Limits(), how, 0)
        if out.passed:
            if how != "isolated":
                print(f"sandbox: no namespace isolation here ({'; '.join(failures) or 'not root or no unshare'}); "
                      + ("programs run as an unprivileged uid with CPU, memory, file and process limits, but can "
                         "reach the network" if how == "uid" else "programs run as this user with CPU, memory, "
                         "file and process limits only: they can read and write what this user can and reach "
                         "the network"), file=sys.stderr, flush=True)
            return how
        failures.append(f"{how}: {out.status} {out.output.strip()[-160:]!r}")
    if root:
        raise UserError("cannot run model-written code safely: as root, neither namespaces (`unshare`) nor an "
                        f"unprivileged uid worked ({'; '.join(failures)}); run as a non-root user")
    raise UserError(f"cannot run model-written code here: {'; '.join(failures)}")


def run_one(program: Program, limits: Limits, how: str, slot: int) -> Outcome:
    """One program in one child, in mode `how`; never raises for what the program does."""
    isolated = how == "isolated"
    uid = None if how == "plain" else UID_BASE + (os.getpid() % 4_000_000) * 256 + slot
    steps = 1 + len(program.checks)
    deadline = limits.seconds * steps + START_SLACK_S
    nonce = secrets.token_hex(16)
    workdir = "/tmp/work" if isolated else tempfile.mkdtemp(prefix="thicket-sandbox-")
    config = {"isolated": isolated, "uid": uid, "workdir": workdir, "limits": limits.__dict__, "cpu": deadline,
              "hide": sorted({p for p in ("/root", os.path.expanduser("~")) if p not in ("/", "~")}),
              "keep": sys.base_prefix}
    cmd = [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__)]
    if isolated:
        cmd = [shutil.which("unshare") or "unshare", *NAMESPACES, *cmd]
    payload = marshal.dumps({"config": config, "nonce": nonce, "code": program.code, "checks": list(program.checks)})
    start, status = time.monotonic(), "failed"
    try:
        if uid is not None and not isolated:
            os.chown(workdir, uid, uid)
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=out, env=ENV, cwd="/",
                                    start_new_session=True)
            try:
                proc.communicate(payload, timeout=deadline)
            except subprocess.TimeoutExpired:
                status = "timeout"
                _kill(proc, isolated)
            out.seek(max(0, out.seek(0, os.SEEK_END) - 2048))
            tail = out.read()
        if status != "timeout" and proc.returncode == 0 and tail.endswith(nonce.encode()):
            status, tail = "passed", tail[:-len(nonce)]
    except OSError as exc:  # the sandbox could not start (fds, memory): this program fails, the run goes on
        status, tail = "error", f"{type(exc).__name__}: {exc}".encode()
    finally:
        if not isolated:
            shutil.rmtree(workdir, ignore_errors=True)
            if uid is not None:
                _sweep(uid)
    return Outcome(status == "passed", status, tail.decode("utf-8", "replace"), time.monotonic() - start)


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
