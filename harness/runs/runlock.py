"""The run folder: where it may be, and one command at a time in it.

`run_folder` checks the results root and the run name before anything slow: a results
root that is a file or cannot be written, and a run name that would leave the results root
(`--run ../../x`), are one-line errors.

`RunLock` is an exclusive lock on the run folder (`flock` on `<run>/.lock`; `--fresh`
empties the folder around it). The file names the holder's process and
host, so a second command says which process is using the run. The kernel releases a flock
when its process dies (SIGKILL included), so a lock file left by a dead run is taken over,
with a message. Under `accelerate launch` the lock belongs to the launch: the main process
takes it and tells the others whether it could.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from pathlib import Path

from harness.runs import distributed as dist
from harness.errors import UserError

LOCK = ".lock"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def run_folder(results: str, task: str, run: str) -> Path:
    """<results>/<task>/<run>, after checking that it can be created and written."""
    if not _NAME.fullmatch(run) or ".." in run:
        raise UserError(f"--run {run!r} must be a plain folder name (letters, digits, '.', '_', '-', no '/' "
                        "or '..'); the run is written to <results>/<task>/<run>")
    root = Path(results)
    if root.exists() and not root.is_dir():
        raise UserError(f"--results {results!r} is a file, not a folder; pass a folder (default: results)")
    folder = root / task / run
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write results to {folder} ({exc.strerror or exc}); pass --results with a "
                        "writable folder") from None
    return folder


def empty(run_dir: Path) -> None:
    """`--fresh`: remove everything in the run folder but its lock."""
    import shutil

    for path in run_dir.iterdir():
        if path.name != LOCK:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


class RunLock:
    """`with RunLock(run_dir):` holds the run folder exclusively for one launch."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def __enter__(self):
        error = self._acquire() if dist.is_main() else None
        errors = dist.gather([error]) if dist.world() > 1 else [error]
        if errors[0]:
            raise UserError(errors[0])
        return self

    def _acquire(self) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            return (f"the run folder {self.path.parent} is in use by process {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} (lock {self.path}); wait for it to finish, or pass --run NAME "
                    "for a separate run")
        previous = _holder(fd)
        if previous.get("pid"):
            dist.say(f"taking over the lock of process {previous['pid']} on {previous.get('host', '?')}, which "
                     "is no longer running; resuming its work")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self.fd = fd
        return None

    def __exit__(self, *exc):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty file: released normally, nothing to take over
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}
