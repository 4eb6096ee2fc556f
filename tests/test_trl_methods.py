"""Smoke runs of the TRL methods (grpo, ppo) on a tiny random model: two steps each.

They check behaviour, not numbers: the saved weights differ from the starting ones and load
back into the harness's own model by name; the reward that trained them is the task's
reward; the ledger is charged and never exceeds the budget; a budget too small for one step
is a UserError; a killed run resumes from its checkpoint and charges finished work once.
"""
from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from harness.budget.compute import Ledger
from harness.config import protocol_from
from harness.context import TrainContext
from harness.errors import UserError
from harness.engine.native import NativeEngine, render
from harness.method import get_method
from harness.engine.model import load_model
from harness.task import get_task
from methods._trl import LedgerCallback, Pass, training_prompts

METHODS = ["grpo", "ppo"]
N_TRAIN, MAX_NEW = 4, 8
SIZES = {"grpo": dict(batch_prompts=2, num_generations=4, mini_batch=1, micro_batch=4, max_steps=2,
                      learning_rate=1e-3),
         "ppo": dict(batch_prompts=4, mini_batch=2, micro_batch=2, max_steps=2, learning_rate=1e-3)}
ROLLOUTS = {"grpo": 2 * 4, "ppo": 4}  # completions per step: B*G for grpo, B for ppo


class Recorder:
    def __init__(self):
        self.rows: list[tuple[dict, int]] = []

    def log(self, data: dict, step: int | None = None) -> None:
        self.rows.append((data, step))


def make_ctx(model_dir: str, out_dir: Path, budget: float | None) -> TrainContext:
    model, tokenizer = load_model(model_dir)
    task = get_task("arith")
    protocol = protocol_from("arith", "smoke", model=model_dir, n_train=N_TRAIN, max_new_tokens=MAX_NEW)
    engine = NativeEngine(model, tokenizer, protocol.batch_size)
    items = task.load("train", None)[:N_TRAIN]
    batches = engine.prepare([render(tokenizer, it.messages) for it in items])
    n_params = sum(p.numel() for _, p in model.named_parameters())
    out_dir.mkdir(parents=True, exist_ok=True)
    return TrainContext(protocol, task, model, tokenizer, engine, Ledger(n_params, budget),
                        items, batches, out_dir, log=Recorder())


def method(name: str, **overrides):
    cls = get_method(name)
    return cls(cls.Config(**{**SIZES[name], **overrides}))


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


def changed(weights: str, before: dict) -> bool:
    trained = load_file(weights)
    assert sorted(trained) == sorted(before), "saved names differ from the harness model's"
    return any(not torch.equal(trained[n], before[n]) for n in before)


@pytest.mark.parametrize("name", METHODS)
def test_two_steps_train_with_the_task_reward(name, tiny_model_dir, tmp_path, counted_reward):
    ctx = make_ctx(tiny_model_dir, tmp_path / name, budget=1e15)
    before = {n: p.detach().clone() for n, p in ctx.perturber.params}
    [ensemble] = method(name).train(ctx)

    assert ensemble.name == name and ensemble.info["steps"] == 2
    assert ensemble.ks == (1,) and len(ensemble.voters) == 1
    weights = ensemble.voters[0].weights
    assert changed(weights, before), "training changed no parameter"
    # the harness's own model is untouched by training, and loads the trained weights by name
    assert all(torch.equal(p, before[n]) for n, p in ctx.perturber.params)
    ctx.perturber.load_file(weights)
    assert not changed(weights, {n: p.detach() for n, p in ctx.perturber.params})
    ctx.perturber.restore()

    # every rollout completion was scored by the task's reward, on training items only
    assert len(counted_reward) == 2 * ROLLOUTS[name]
    assert all(isinstance(text, str) for text, _ in counted_reward)
    assert {i for _, i in counted_reward} <= {it.id for it in ctx.train_items}
    assert 0 < ctx.ledger.train <= ctx.ledger.budget
    assert ensemble.info["paper_train_flops"] > 0 and ensemble.info["train_items"] == "selection"
    # one learning-curve point per step reaches the logger and curve.jsonl, FLOPs increasing
    points = [row for row, _ in ctx.log.rows]
    assert [p["step"] for p in points] == [1, 2] and all("train_reward" in p for p in points)
    flops = [p["train_flops"] for p in points]
    assert flops == sorted(flops) and flops[-1] == ctx.ledger.train
    curve = [json.loads(line) for line in (tmp_path / name / "curve.jsonl").read_text().splitlines()]
    assert curve == points


@pytest.mark.parametrize("name", METHODS)
def test_lora_is_merged_into_the_harness_names(name, tiny_model_dir, tmp_path, counted_reward):
    ctx = make_ctx(tiny_model_dir, tmp_path / name, budget=None)
    before = {n: p.detach().clone() for n, p in ctx.perturber.params}
    [ensemble] = method(name, lora_rank=2, max_steps=1).train(ctx)
    assert changed(ensemble.voters[0].weights, before)


@pytest.mark.parametrize("name", METHODS)
def test_budget_binds_and_is_never_exceeded(name, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="affords no step"):
        method(name).train(make_ctx(tiny_model_dir, tmp_path / "none", budget=1.0))
    # a budget of one and a half worst-case steps buys exactly one step, within budget
    ctx = make_ctx(tiny_model_dir, tmp_path / "one", budget=None)
    worst = importlib.import_module(f"methods.{name}").step_cost(ctx.sizing, method(name).config)[-1]
    ctx.ledger.budget = 1.5 * worst
    [ensemble] = method(name).train(ctx)
    assert ensemble.info["steps"] == 1 and ensemble.info["worst_step_flops"] == worst
    assert 0 < ctx.ledger.train <= ctx.ledger.budget


def _train_killed_before_finishing(name, ctx, max_steps):
    """Train, dying after the last checkpoint but before the run marks itself finished."""
    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt("simulated kill")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(f"methods.{name}.write_result", killed)
        method(name, max_steps=max_steps).train(ctx)


@pytest.mark.parametrize("name", METHODS)
def test_killed_run_resumes_from_its_checkpoint(name, tiny_model_dir, tmp_path, counted_reward):
    out = tmp_path / name
    ctx = make_ctx(tiny_model_dir, out, budget=1e15)
    _train_killed_before_finishing(name, ctx, max_steps=1)  # killed right after the step-1 checkpoint
    one_step = ctx.ledger.train
    counted_reward.clear()

    ctx = make_ctx(tiny_model_dir, out, budget=1e15)
    [ensemble] = method(name, max_steps=2).train(ctx)
    assert ensemble.info["steps"] == 2
    assert len(counted_reward) == ROLLOUTS[name]  # only step 2 was generated
    # step 1 charged once (from the checkpoint), step 2 at most its worst case
    assert one_step < ctx.ledger.train <= one_step + ensemble.info["worst_step_flops"]
    assert not (out / "checkpoints").exists()  # finished: the checkpoints are gone

    total = ctx.ledger.train
    counted_reward.clear()  # a finished run returns its result without training again
    ctx = make_ctx(tiny_model_dir, out, budget=1e15)
    [again] = method(name, max_steps=2).train(ctx)
    assert counted_reward == [] and again.voters == ensemble.voters and again.info["steps"] == 2
    assert ctx.ledger.train == total


@pytest.mark.parametrize("name", METHODS)
def test_killed_after_last_checkpoint_trains_nothing_more(name, tiny_model_dir, tmp_path, counted_reward):
    out = tmp_path / name
    _train_killed_before_finishing(name, make_ctx(tiny_model_dir, out, budget=1e15), max_steps=2)
    total_rollouts = len(counted_reward)
    counted_reward.clear()
    ctx = make_ctx(tiny_model_dir, out, budget=1e15)
    [again] = method(name, max_steps=2).train(ctx)
    assert total_rollouts == 2 * ROLLOUTS[name] and counted_reward == [] and again.info["steps"] == 2
    assert ctx.ledger.train > 0  # the finished steps are charged from the checkpoint


@pytest.mark.parametrize("name,bad", [
    ("grpo", dict(num_generations=1)), ("grpo", dict(batch_prompts=6, mini_batch=4)),
    ("grpo", dict(train_items="test")), ("grpo", dict(beta=-1.0)), ("grpo", dict(max_steps=0)),
    ("ppo", dict(batch_prompts=6, mini_batch=4)), ("ppo", dict(lam=1.5)), ("ppo", dict(train_items="all")),
    ("ppo", dict(critic_learning_rate=0.0)), ("ppo", dict(num_ppo_epochs=0)),
])
def test_invalid_settings_are_user_errors(name, bad):
    with pytest.raises(UserError):
        method(name, **bad)


def test_micro_batch_splits_a_mini_batch_evenly():
    grpo = method("grpo", batch_prompts=3, num_generations=3, mini_batch=64, micro_batch=8).config
    assert (grpo.mini, grpo.micro_for(1), grpo.updates_per_step) == (3, 3, 1)  # 9 completions: micro 3
    ppo = method("ppo", batch_prompts=128, mini_batch=32, micro_batch=8).config
    assert (ppo.mini, ppo.micro_for(1)) == (32, 8)
    # over processes: each takes its share of an update, the update's size stays the same
    assert (grpo.micro_for(3), ppo.micro_for(2), ppo.micro_for(8)) == (3, 8, 4)
    with pytest.raises(UserError, match="32 sequences cannot be split evenly over 3 processes"):
        ppo.micro_for(3)


@pytest.mark.parametrize("name", METHODS)
def test_lora_backward_is_charged_for_the_adapters_peft_trains(name, tiny_model_dir, tmp_path):
    from peft import get_peft_model
    from methods._trl import lora_config, lora_params

    ctx = make_ctx(tiny_model_dir, tmp_path, budget=None)
    trainable, _ = get_peft_model(copy.deepcopy(ctx.model), lora_config(2)).get_nb_trainable_parameters()
    assert lora_params(ctx.model, 2) == trainable and lora_params(ctx.model, 0) is None
    module, P = importlib.import_module(f"methods.{name}"), ctx.ledger.n_params
    full = module.step_cost(ctx.sizing, method(name).config)[1]
    lora = module.step_cost(ctx.sizing, method(name, lora_rank=2).config)[1]
    T = trainable
    # the policy runs base and adapters unmerged (P + T); its backward computes activation
    # gradients through all of it (2(P + T)) and weight gradients for the adapters only (2T)
    policy_backward = [p for p in lora if p.kind == "backward" and p.n_params == P + T]
    assert [p.flops_per_token for p in policy_backward] == [2 * (P + T) + 2 * T] * len(policy_backward)
    assert policy_backward and all(p.trainable == T for p in policy_backward)
    # pass by pass: the same passes, the policy's through P + T, the frozen reference through P
    assert [(p.kind, p.why) for p in full] == [(p.kind, p.why) for p in lora]
    for f, l in zip(full, lora):
        if "reference" in l.why or f.n_params != P:
            assert l.n_params == f.n_params
        else:
            assert l.n_params == P + T


def test_ledger_callback_charges_once_and_stops_before_overspending():
    ledger = Ledger(n_params=10, budget=1000)
    seen = {"tokens": 0}
    passes = [Pass("forward", 10, "f"), Pass("backward", 10, "b")]  # 60 FLOPs per token
    meter = LedgerCallback("t", ledger, passes, lambda state: seen["tokens"], worst_step_flops=600,
                           updates_per_step=2)
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_training_stop=False)
    meter.on_train_begin(None, state, control)
    seen["tokens"], state.global_step = 5, 1  # a rollout of 5 tokens, first of two updates
    meter.on_step_end(None, state, control)
    meter.on_log(None, state, control, logs={"reward": 0.5})  # charging again changes nothing
    assert ledger.train == 300 and not control.should_training_stop
    state.global_step = 2  # end of the step: 700 left >= 600, go on
    meter.on_step_end(None, state, control)
    assert not control.should_training_stop
    seen["tokens"], state.global_step = 10, 3
    meter.on_step_end(None, state, control)
    assert not control.should_training_stop  # mid-step: the rollout is already paid for
    state.global_step = 4  # 400 left < 600: the next step could overspend
    meter.on_step_end(None, state, control)
    assert ledger.train == 600 and control.should_training_stop


def test_ppo_reward_model_decodes_completions_between_padding(tiny_model_dir, tmp_path, counted_reward):
    from methods.ppo import TaskRewardModel, ppo_tokenizer
    from trl.experimental.utils import get_reward

    ctx = make_ctx(tiny_model_dir, tmp_path, budget=None)
    prompts = training_prompts(ctx.sizing, "selection", 2, "ppo")
    tok = ppo_tokenizer(ctx, prompts)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    completion = tok("42", add_special_tokens=False).input_ids + [eos]
    first, second = prompts.ids[:2]
    # TRL's layout: left padding, prompt, completion cut after EOS, right padding
    rows = [first + completion + [pad, pad], [pad, pad] + second + completion]
    assert len(rows[0]) == len(rows[1])
    model = TaskRewardModel(ctx.task, prompts, tok)
    _, scores, _ = get_reward(model, torch.tensor(rows), pad, len(first) + 2)
    assert [text for text, _ in counted_reward] == ["42", "42"]
    assert [i for _, i in counted_reward] == [prompts.items[0].id, prompts.items[1].id]
    assert scores.tolist() == [(sum(map(ord, "42")) % 5) / 4] * 2
    assert model.backbone.tokens == len(first) + len(second) + 2 * len(completion)


@pytest.mark.parametrize("name", METHODS)
def test_a_finished_trainer_frees_its_models(name, tiny_model_dir, tmp_path, counted_reward, monkeypatch):
    """Nothing keeps the training copy alive once the method returns: at 3B parameters it, its
    optimizer state and (PPO) the critic are tens of GB that the rest of the comparison needs."""
    import gc
    import weakref

    import methods._trl as trl
    module = importlib.import_module(f"methods.{name}")
    copies = []
    real = trl.policy_copy

    def tracked(ctx):
        model = real(ctx)
        copies.append(weakref.ref(model))
        return model
    monkeypatch.setattr(module, "policy_copy", tracked)
    ctx = make_ctx(tiny_model_dir, tmp_path / name, budget=1e15)
    method(name, max_steps=1).train(ctx)
    gc.collect()
    assert copies and all(ref() is None for ref in copies), "the trained policy is still referenced"


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_weights_whatever_ran_before(name, tiny_model_dir, tmp_path, counted_reward):
    """Fresh weights (LoRA adapters, PPO's critic head) come from the run's seed, not from the
    global generator's state, which imports and earlier methods leave different in every process."""
    trained = []
    for before in (1, 2):
        torch.manual_seed(before)
        ctx = make_ctx(tiny_model_dir, tmp_path / f"{name}{before}", budget=1e15)
        [ensemble] = method(name, lora_rank=2, max_steps=1).train(ctx)
        trained.append(load_file(ensemble.voters[0].weights))
    assert all(torch.equal(trained[0][n], trained[1][n]) for n in trained[0])


def test_a_finished_record_found_on_resume_removes_leftover_checkpoints(tmp_path):
    """Killed between writing result.json and deleting the checkpoints (GBs at scale): the rerun
    reuses the record and finishes the clean-up, even though it trains nothing."""
    from methods._trl import load_result, write_result

    (tmp_path / "policy.safetensors").write_bytes(b"w")
    write_result(tmp_path, {"weights": str(tmp_path / "policy.safetensors"), "tokens": 1, "info": {}})
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    assert load_result(tmp_path)["tokens"] == 1
    assert not (tmp_path / "checkpoints").exists()


def test_long_generation_calls_show_item_progress(tiny_model_dir, tmp_path, monkeypatch):
    """A test voter or a member's scoring pass is one unit that can take minutes at scale:
    each reports its items through harness.runs.progress.items, every item exactly once."""
    import contextlib

    from harness.runs import progress
    from harness.evaluate import Evaluator
    from harness.method import Voter

    seen = []

    @contextlib.contextmanager
    def recording(n, desc):
        counts = []
        yield counts.append
        seen.append((desc, n, sum(counts)))

    monkeypatch.setattr(progress, "items", recording)
    ctx = make_ctx(tiny_model_dir, tmp_path, budget=None)
    ctx.score_current()
    evaluator = Evaluator(ctx.task, ctx.protocol, ctx.engine, ctx.train_items)
    evaluator.voter_record(Voter("base"))
    n_test = len(evaluator.items)
    assert seen == [("train items", len(ctx.train_items), len(ctx.train_items)),
                    ("base on test", n_test, n_test)]


def test_member_scoring_with_the_base_drafts_equals_scoring_from_scratch(tiny_model_dir, tmp_path, monkeypatch):
    """The session's base completions are drafts for member scoring: the same scores and token
    counts as decoding from scratch, at sigmas from tiny to large, and they do reach the engine."""
    from harness.context import Member

    ctx = make_ctx(tiny_model_dir, tmp_path, budget=None)
    base = ctx.train_completions()
    members = [Member(i, 100 + i, sigma) for i, sigma in enumerate((1e-3, 1e-2, 5e-2, 0.3))]
    scratch = [ctx.score_member(m) for m in members]
    ctx.drafts = {"train": base}
    given = []
    generate = ctx.engine.generate
    monkeypatch.setattr(ctx.engine, "generate", lambda *a, **kw: given.append(kw.get("draft")) or generate(*a, **kw))
    assert [ctx.score_member(m) for m in members] == scratch
    assert all(d is base for d in given) and len(given) == len(members)
