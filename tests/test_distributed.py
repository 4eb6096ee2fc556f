"""Under accelerate launch with 2 processes: sharded and single-process RandOpt agree exactly,
and GRPO/PPO keep their batch sizes and charge every process's rollouts to the ledger."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from harness.runs import distributed as dist
from methods.randopt import sample_members
from tests.helpers import make_context
ctx = make_context({model!r}, Path({out!r}))
members = sample_members(0, 6, (0.01, 0.02), "iid")
scores = ctx.score_population(members, "members")
if dist.is_main():
    Path({out!r}, "scores.json").write_text(json.dumps({{"world": dist.world(), "scores": scores,
                                                         "flops": ctx.ledger.train}}))
"""


# Two steps of a TRL method; the task's reward is swapped for one that counts its calls per
# process and varies with the text (a random model never answers right: GRPO would get no gradient).
TRL_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import torch
from harness.runs import distributed as dist
from harness.method import get_method
from harness.task import get_task
from tests.helpers import make_context
torch.set_num_threads(1)
calls = []
def reward(response, item):
    calls.append(item.id)
    return (sum(map(ord, response)) % 5) / 4
get_task("arith").reward = reward
ctx = make_context({model!r}, Path({out!r}), budget=1e15, n_train=4, max_new_tokens=8)
cls = get_method({method!r})
[ensemble] = cls(cls.Config(**{sizes!r})).train(ctx)
prompt_lengths = [int(b.attention_mask[i].sum()) for b in ctx.train_batches for i in range(len(b.order))]
Path({out!r}, f"rank{{dist.rank()}}.json").write_text(json.dumps({{
    "world": dist.world(), "rewards": len(calls), "tokens": ctx.ledger.tokens["train_forward"],
    "passes_forward": sum(p.startswith("forward") for p in ensemble.info["passes"]),
    "steps": ensemble.info["steps"], "min_prompt": min(prompt_lengths), "weights": ensemble.voters[0].weights}}))
"""
TRL_SIZES = {"grpo": dict(batch_prompts=2, num_generations=4, mini_batch=1, micro_batch=4, max_steps=2,
                          learning_rate=1e-3),
             "ppo": dict(batch_prompts=4, mini_batch=2, micro_batch=2, max_steps=2, learning_rate=1e-3)}
TRL_ROLLOUTS = {"grpo": 2 * 4, "ppo": 4}  # completions per step, whatever the process count


def _accelerate() -> list[str]:
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate launcher not installed")
    with socket.socket() as s:  # a port free now: fixed ports collide with leftovers of earlier runs
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(port)]


def _launch(tmp_path: Path, name: str, template: str, launcher: list[str], **fields) -> Path:
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / f"{name}.py"
    script.write_text(template.format(root=str(Path(__file__).resolve().parents[1]), out=str(out), **fields))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(launcher + [str(script)], capture_output=True, text=True, env=env, timeout=300)
    first_error = proc.stderr.find("Traceback")  # the first process's error; else the end of the log
    assert proc.returncode == 0, proc.stderr[first_error:][:3000] if first_error >= 0 else proc.stderr[-3000:]
    return out


def _run(tmp_path: Path, model: str, name: str, launcher: list[str]) -> dict:
    out = _launch(tmp_path, name, SCRIPT, launcher, model=model)
    return json.loads((out / "scores.json").read_text()) | {"files": sorted(p.name for p in out.glob("members*"))}


@pytest.mark.parametrize("name", ["grpo", "ppo"])
def test_trl_methods_on_two_processes_keep_the_batch_and_charge_every_rollout(name, tiny_model_dir, tmp_path):
    out = _launch(tmp_path, name, TRL_SCRIPT, _accelerate(), model=tiny_model_dir, method=name,
                  sizes=TRL_SIZES[name])
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and all(r["steps"] == 2 for r in ranks)
    # the two processes together draw one step's rollouts, not one each
    assert sum(r["rewards"] for r in ranks) == 2 * TRL_ROLLOUTS[name]
    assert all(r["rewards"] > 0 for r in ranks)
    # both ledgers charge every process's tokens: at least every rollout's prompt, per forward pass
    assert ranks[0]["tokens"] == ranks[1]["tokens"]
    floor = 2 * TRL_ROLLOUTS[name] * ranks[0]["min_prompt"] * ranks[0]["passes_forward"]
    assert ranks[0]["tokens"] >= floor
    assert Path(ranks[0]["weights"]).is_file() and (out / "result.json").is_file()


def test_two_processes_match_one(tiny_model_dir, tmp_path):
    single = _run(tmp_path, tiny_model_dir, "single", [sys.executable])
    sharded = _run(tmp_path, tiny_model_dir, "sharded", _accelerate())
    assert single["world"] == 1 and sharded["world"] == 2
    assert sharded["files"] == ["members.rank0.jsonl", "members.rank1.jsonl"]  # both processes worked
    assert sharded["scores"] == single["scores"]
    assert sharded["flops"] == single["flops"]
