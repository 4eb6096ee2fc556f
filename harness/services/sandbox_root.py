"""What the minimal root of a sandboxed program holds (mode isolated; built by
harness/services/sandbox_child.py `_new_root`): the Python runtime's standard library and lib-dynload,
read-only, without site-packages; the directories of the shared libraries that the interpreter and
its extension modules load, read-only; /dev/null, zero, random, urandom; a private /tmp holding the
program's empty working folder. Nothing else: no /proc, /etc, /home, repository, data or results.
Computed once per harness process from the interpreter the children run.
"""
from __future__ import annotations

import glob
import os
import platform
import subprocess
import sys

DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers: glibc has no pivot_root() wrapper
SITE = ("site-packages", "dist-packages")


def spec() -> dict:
    """binds (real paths), links (symlinks to repeat, so the interpreter's paths resolve), hide
    (site-packages inside a bind), devices, and the pivot_root syscall number. OSError when the
    new root cannot be built on this machine."""
    if platform.machine() not in PIVOT_ROOT:
        raise OSError(f"no pivot_root syscall number known for {platform.machine()}")
    stdlib = [p for p in sys.path if os.path.isdir(p) and _under(p, (sys.base_prefix, sys.base_exec_prefix))
              and not any(part in SITE for part in p.split(os.sep))]
    libs = _libraries([os.path.realpath(sys.executable)] + [so for d in stdlib for so in glob.glob(f"{d}/*.so")])
    wanted = stdlib + sorted({os.path.dirname(lib) for lib in libs})
    binds = _outermost({os.path.realpath(p) for p in wanted})
    if any(_under(b, ("/tmp",)) for b in binds):
        raise OSError(f"the Python runtime lies under /tmp ({', '.join(binds)}), where the new root is built")
    links = {}
    for path in wanted:
        links.update(_symlinks(path))
    links = {k: v for k, v in links.items() if not _under(k, tuple(binds))}  # a bind brings its own
    hide = sorted({os.path.realpath(os.path.join(d, s)) for d in binds + stdlib for s in SITE
                   if os.path.isdir(os.path.join(d, s))})
    return {"binds": binds, "links": sorted(links.items()), "hide": hide, "devices": list(DEVICES),
            "pivot_root": PIVOT_ROOT[platform.machine()]}


def _libraries(files: list[str]) -> list[str]:
    """The shared libraries these ELF files load, as `ldd` resolves them (with the libraries the
    harness process itself has mapped when `ldd` is missing)."""
    try:
        out = subprocess.run(["ldd", *files], capture_output=True, text=True, timeout=60).stdout
        found = [line.split("=>", 1)[1].split("(")[0].strip() for line in out.splitlines() if "=>" in line]
    except (OSError, subprocess.SubprocessError):
        with open("/proc/self/maps") as maps:
            found = [line.split()[-1] for line in maps if ".so" in line and line.split()[-1].startswith("/")]
        found = [f for f in found if not any(part in SITE for part in f.split(os.sep))]
    return [f for f in found if f.startswith("/") and os.path.exists(f)]


def _outermost(paths: set[str]) -> list[str]:
    """Each path once, those inside another path left out (the outer bind holds them)."""
    return sorted(p for p in paths if not any(q != p and _under(p, (q,)) for q in paths))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _symlinks(path: str, depth: int = 0) -> dict[str, str]:
    """The symlinks met on the way to `path` (e.g. /lib -> usr/lib), each with its target."""
    here = ""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        here += "/" + part
        if os.path.islink(here) and depth < 20:
            target = os.readlink(here)
            rest = os.path.normpath(os.path.join(os.path.dirname(here), target, *parts[i + 1:]))
            return {here: target, **_symlinks(rest, depth + 1)}
    return {}
