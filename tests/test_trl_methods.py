"""Smoke runs of the TRL methods (grpo, ppo) on a tiny random model: two steps each.

They check behaviour, not numbers: the saved weights differ from the starting ones and load
back into the harness's own model; the reward that trained them is the task's reward; the
ledger is charged and never exceeds the budget; a budget too small for one step is a
UserError; a killed run resumes from its checkpoint and charges finished work once.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.compute import Ledger
from harness.config import protocol_from
from harness.context import TrainContext
from harness.errors import UserError
from harness.generate import Engine, render
from harness.model import load_model
from harness.perturb import Perturber
from harness.task import get_task

N_TRAIN, MAX_NEW = 4, 8


def make_ctx(model_dir: str, out_dir: Path, budget: float | None) -> TrainContext:
    model, tokenizer = load_model(model_dir)
    task = get_task("arith")
    protocol = protocol_from("arith", "smoke", model=model_dir, n_train=N_TRAIN, max_new_tokens=MAX_NEW)
    engine = Engine(model, tokenizer, protocol.batch_size)
    items = task.load("train", None)[:N_TRAIN]
    batches = engine.prepare([render(tokenizer, it.messages) for it in items])
    n_params = sum(p.numel() for _, p in model.named_parameters())
    out_dir.mkdir(parents=True, exist_ok=True)
    return TrainContext(protocol, task, model, tokenizer, engine, Perturber(model), Ledger(n_params, budget),
                        items, batches, out_dir)


def configs(method: str, **overrides):
    from harness.method import get_method

    sizes = {"grpo": dict(batch_prompts=2, num_generations=4, mini_batch=1, micro_batch=4, max_steps=2,
                          learning_rate=1e-3),
             "ppo": dict(batch_prompts=4, mini_batch=2, micro_batch=2, max_steps=2, learning_rate=1e-3)}
    cls = get_method(method)
    return cls(cls.Config(**{**sizes[method], **overrides}))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls on a shared 2-CPU machine: one thread avoids OpenMP contention (100x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def counted_reward(monkeypatch):
    """Replace the arith task's reward by one that records its calls and varies with the text.

    A random model almost never answers right, so the real reward would be all zeros and
    GRPO's group advantages (hence its gradient) would vanish.
    """
    task = get_task("arith")
    calls: list[tuple[str, str]] = []

    def reward(response, item):
        calls.append((response, item.id))
        return (sum(map(ord, response)) % 5) / 4
    monkeypatch.setattr(task, "reward", reward)
    return calls


@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_two_steps_train_with_the_task_reward(method, tiny_model_dir, tmp_path, counted_reward):
    ctx = make_ctx(tiny_model_dir, tmp_path / method, budget=1e15)
    before = {n: p.detach().clone() for n, p in ctx.perturber.params}
    [ensemble] = configs(method).train(ctx)

    info = ensemble.info
    assert ensemble.name == method and info["steps"] == 2
    assert ensemble.ks == (1,) and len(ensemble.voters) == 1
    trained = load_file(ensemble.voters[0].weights)
    assert sorted(trained) == sorted(before)
    assert any(not torch.equal(trained[n], before[n]) for n in before), "training changed no parameter"
    # the harness's own model is untouched by training, and loads the trained weights by name
    assert all(torch.equal(p, before[n]) for n, p in ctx.perturber.params)
    ctx.perturber.load_file(ensemble.voters[0].weights)
    assert all(torch.equal(p, trained[n]) for n, p in ctx.perturber.params)
    ctx.perturber.restore()

    # every rollout completion was scored by the task's reward, on training items only
    rollouts = 2 * (2 * 4 if method == "grpo" else 4)
    assert len(counted_reward) == rollouts
    assert {i for _, i in counted_reward} <= {it.id for it in ctx.train_items}
    assert 0 < ctx.ledger.train <= ctx.ledger.budget
    assert info["paper_train_flops"] > 0 and info["train_items"] == "selection"


@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_budget_binds_and_is_never_exceeded(method, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="affords 0 steps"):
        configs(method).train(make_ctx(tiny_model_dir, tmp_path / "none", budget=1.0))
    # a budget of one and a half worst-case steps buys exactly one step, within budget
    ctx = make_ctx(tiny_model_dir, tmp_path / "one", budget=None)
    worst = importlib.import_module(f"methods.{method}").plan(ctx, configs(method).config)[-1]
    ctx.ledger.budget = 1.5 * worst
    [ensemble] = configs(method).train(ctx)
    assert ensemble.info["steps"] == 1 and ensemble.info["worst_step_flops"] == worst
    assert 0 < ctx.ledger.train <= ctx.ledger.budget


def test_killed_grpo_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, counted_reward):
    out = tmp_path / "grpo"
    ctx = make_ctx(tiny_model_dir, out, budget=1e15)
    configs("grpo", max_steps=1).train(ctx)
    one_step = ctx.ledger.train
    (out / "result.json").unlink()  # as if killed after the step-1 checkpoint
    counted_reward.clear()

    ctx = make_ctx(tiny_model_dir, out, budget=1e15)
    [ensemble] = configs("grpo", max_steps=2).train(ctx)
    assert ensemble.info["steps"] == 2
    assert len(counted_reward) == 2 * 4  # only the second step's rollouts were generated
    assert one_step < ctx.ledger.train <= 2.5 * one_step  # step 1 charged once, from the checkpoint
