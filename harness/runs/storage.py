"""Writing big files: a full disk is a one-line error that says what to free, never a traceback.

Weights and checkpoints are the only large files a run writes (at 3B parameters, 6 GB of
bf16 weights, 36 GB for a PPO checkpoint with its critic and optimizer). Every such write
goes through `writing(path, need_bytes)`: it refuses to start when the disk clearly lacks
the space, and turns the libraries' own out-of-space errors (OSError ENOSPC from Python,
RuntimeError from torch.save's zip writer, SafetensorError from safetensors) into a
UserError naming the file, the space needed and the fact that rerunning resumes.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from harness.errors import UserError

_NO_SPACE = ("no space left", "file write failed", "disk full", "errno 28", "os error 28")


def free_bytes(path: Path) -> int:
    """Free space on the filesystem that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def size(n: float) -> str:
    """Bytes in a readable unit: 89.1 kB, 538.0 MB, 6.4 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def disk_full(path: Path, need_bytes: int | None) -> UserError:
    need = f"about {size(need_bytes)} needed, " if need_bytes else ""
    return UserError(f"disk full while writing {path} ({need}{size(free_bytes(path))} free); free some space "
                     "and rerun the same command: finished work is kept and the run resumes")


def is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return any(s in text for s in _NO_SPACE)


@contextmanager
def writing(path, need_bytes: int | None = None):
    """Around a large write to `path`: a clear UserError when the disk is (or becomes) full."""
    path = Path(path)
    if need_bytes and free_bytes(path) < need_bytes:
        raise disk_full(path, need_bytes)
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        if is_no_space(exc):
            raise disk_full(path, need_bytes) from None
        raise


def folder_bytes(folder) -> int:
    """Bytes of every file under `folder` (what a run leaves on disk)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
