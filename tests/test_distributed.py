"""Sharded (2 processes under accelerate launch) and single-process RandOpt agree exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from harness import distributed as dist
from methods.randopt import sample_members
from tests.helpers import make_context
ctx = make_context({model!r}, Path({out!r}))
members = sample_members(0, 6, (0.01, 0.02), "iid")
scores = ctx.score_population(members, "members")
if dist.is_main():
    Path({out!r}, "scores.json").write_text(json.dumps({{"world": dist.world(), "scores": scores,
                                                         "flops": ctx.ledger.train}}))
"""


def _run(tmp_path: Path, model: str, name: str, launcher: list[str]) -> dict:
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / f"{name}.py"
    root = str(Path(__file__).resolve().parents[1])
    script.write_text(SCRIPT.format(root=root, model=model, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(launcher + [str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "scores.json").read_text()) | {"files": sorted(p.name for p in out.glob("members*"))}


def test_two_processes_match_one(tiny_model_dir, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate launcher not installed")
    single = _run(tmp_path, tiny_model_dir, "single", [sys.executable])
    sharded = _run(tmp_path, tiny_model_dir, "sharded",
                   [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29533"])
    assert single["world"] == 1 and sharded["world"] == 2
    assert sharded["files"] == ["members.rank0.jsonl", "members.rank1.jsonl"]  # both processes worked
    assert sharded["scores"] == single["scores"]
    assert sharded["flops"] == single["flops"]
