"""SIGKILL a comparison at named points inside every stage, rerun the same command (killed
again further on, then finished), and get exactly what an uninterrupted run gives: the same
rows, predictions and final weights.

Each kill is real: `THICKET_KILL_AT=point:n` makes the process SIGKILL itself the n-th time
it reaches `harness.runs.faults.point(point)` (inside checkpoint writes, between a file and its
rename, after a unit's record, mid-step after the rewards). The task is a plugin whose
reward varies with the text, so GRPO and PPO really move the weights (a tiny random model
never answers arithmetic right, and a zero reward trains nothing).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TASK = '''
from harness.task import Item
from tasks.arith import Arith


class Varied(Arith):
    """Arithmetic prompts; the reward varies with the response's characters (and is its score)."""

    name = "varied"

    def reward(self, response, item):
        return (sum(map(ord, response)) % 5) / 4


TASK = Varied()
'''
SETTINGS = ["randopt.population=4", "es.population=2", "es.iterations=2",
            "grpo.batch_prompts=2", "grpo.num_generations=2", "grpo.mini_batch=1", "grpo.micro_batch=2",
            "grpo.max_steps=2", "grpo.learning_rate=0.001",
            "ppo.batch_prompts=2", "ppo.mini_batch=1", "ppo.micro_batch=1", "ppo.max_steps=3",
            "ppo.learning_rate=0.001", "self_consistency.temperature=1.0"]
METHODS = ("base", "self_consistency", "randopt", "es", "grpo", "ppo")

# Per method, kills in sequence: each run is killed at its point, the next run resumes what the
# killed one left and is killed again further on, and a last run finishes. Counts restart with
# every process: rewards-scored counts reward calls (the base model's train pass is the first
# of a fresh run, skipped on resume), unit-recorded counts finished units of this process.
CHAINS = {
    "base": ["unit-recorded:1"],                             # the base test voter, before rows.json
    "self_consistency": ["unit-recorded:2"],                 # between sampled test voters
    "randopt": ["unit-recorded:2",                           # mid-population
                "unit-recorded:3",                           # resumed: 2 members, then the first test voter
                "before-rows:1"],                            # ledger written, rows not
    "es": ["rewards-scored:4",                               # mid-iteration 2 (base pass, 2 members, this)
           "es-weights-written:1",                           # resumed: theta written, not renamed into place
           "report-writing:1"],                              # everything done but the report
    "grpo": ["rewards-scored:3",                             # step 2's rewards scored, its update not done
             "trl-checkpoint-half-written:1",                # resumed at step 1: inside step 2's checkpoint
             "policy-written:1"],                            # trained weights written, not renamed
    "ppo": ["rewards-scored:3",                              # mid-step 2
            "ppo-checkpoint-written:1",                      # resumed at step 1: inside step 2's checkpoint
            "result-written:1",                              # finished, checkpoints not yet removed
            "unit-recorded:1"],                              # the trained policy's test voter
}


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "killplugins").mkdir()
    (folder / "killplugins" / "__init__.py").write_text("")
    (folder / "killplugins" / "varied.py").write_text(textwrap.dedent(TASK))
    return folder


def command(model: str, results: Path, methods) -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "compare", "--task", "killplugins.varied", "--model", model,
           "--methods", ",".join(methods), "--budget", "smoke", "--n-train", "4", "--n-test", "4",
           "--max-new-tokens", "6", "--k", "1,2", "--budget-flops", "1e13", "--keep-weights",
           "--results", str(results)]
    for s in SETTINGS:
        if s.partition(".")[0] in methods:
            cmd += ["--set", s]
    return cmd


def run(cmd: list[str], plugins: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)]), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.pop("THICKET_KILL_AT", None)
    if kill_at:
        env["THICKET_KILL_AT"] = kill_at
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def run_dir(results: Path) -> Path:
    (folder,) = (results / "varied").iterdir()
    return folder


def outcome(folder: Path, method: str) -> dict:
    """What must not depend on a kill: rows (timings aside), predictions, trained weights."""
    rows = json.loads((folder / "seed0" / method / "rows.json").read_text())
    for r in rows:
        for key in ("train_wall_s", "wall_s", "peak_rss_gib", "peak_gpu_gib"):
            r.pop(key, None)
        r["info"].pop("wall_s_per_step", None)
    labels = {r["label"] for r in rows}
    predictions = [{k: v for k, v in json.loads(line)["rows"].items() if k in labels}
                   for line in (folder / "seed0" / "predictions.jsonl").read_text().splitlines()]
    weights = {p.name: load_file(p) for p in sorted((folder / "seed0" / method).glob("*.safetensors"))}
    return {"rows": rows, "predictions": predictions, "weights": weights}


def same(a: dict, b: dict) -> bool:
    if a["rows"] != b["rows"] or a["predictions"] != b["predictions"] or a["weights"].keys() != b["weights"].keys():
        return False
    return all(all(x[n].equal(y[n]) for n in x) for x, y in zip(a["weights"].values(), b["weights"].values()))


@pytest.fixture(scope="module")
def reference(tiny_model_dir, plugin_path, tmp_path_factory) -> dict:
    """One uninterrupted run of every method."""
    results = tmp_path_factory.mktemp("reference")
    proc = run(command(tiny_model_dir, results, METHODS), plugin_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = run_dir(results)
    return {m: outcome(folder, m) for m in METHODS}


@pytest.mark.parametrize("method", list(CHAINS))
def test_kills_anywhere_resume_to_the_uninterrupted_result(method, reference, tiny_model_dir, plugin_path, tmp_path):
    cmd = command(tiny_model_dir, tmp_path, (method,))
    for point in CHAINS[method]:
        killed = run(cmd, plugin_path, kill_at=point)
        assert killed.returncode == -9, f"the run was not killed at {point}\n{killed.stderr[-2000:]}"
    resumed = run(cmd, plugin_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    folder = run_dir(tmp_path)
    got = outcome(folder, method)
    assert same(got, reference[method]), (got["rows"], reference[method]["rows"])
    assert (folder / "report.md").is_file()
    if method in ("grpo", "ppo"):  # checkpoints gone when done; one curve point per step, numbered
        assert not (folder / "seed0" / method / "checkpoints").exists()
        steps = reference[method]["rows"][0]["info"]["steps"]
        curve = [json.loads(line)["step"] for line in (folder / "seed0" / method / "curve.jsonl").read_text().splitlines()]
        assert sorted(set(curve)) == list(range(1, steps + 1))
