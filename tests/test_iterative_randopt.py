"""iterative_randopt on the tiny random model: the trace rule, the budget, the rounds, the
ledger, the adapter merge and resume after a kill in every stage.

A random model never adds numbers, so the arith task's correctness is replaced by one that
some sampled answers satisfy (the digit sum of the answer divisible by 3): rollouts then keep
traces, the LoRA trains, and the rounds move the weights.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.budget.compute import Ledger
from harness.services.distil import Sample, merge_traces, select_traces, sft_examples
from harness.errors import UserError
from harness.evaluate import Evaluator, Row
from harness.method import Voter
from harness.task import get_task
from methods.iterative_randopt import Config, IterativeRandOpt, guaranteed_rounds, stages
from tests.helpers import make_context

SIZES = dict(rounds=2, population=2, top_k=2, samples=2, max_traces=2, lora_rank=2, lora_alpha=4, batch_size=4,
             micro_batch=2, save_every=1, learning_rate=1e-2)
PROTOCOL = dict(n_train=4, max_new_tokens=4)


def sometimes_correct(key: str, item) -> bool:
    return bool(key) and sum(int(c) for c in key.lstrip("-")) % 3 == 0


@pytest.fixture(scope="module", autouse=True)
def _reward_that_moves():
    patch = pytest.MonkeyPatch()
    patch.setattr(get_task("arith"), "is_correct", sometimes_correct)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest and keeps runs bit-identical
    yield
    torch.set_num_threads(threads)
    patch.undo()


class Killed(Exception):
    pass


def run(model_dir, out: Path, budget=None, **sizes):
    """One train() call: (ensembles, ctx, the perturber's base at each search, engine tokens seen)."""
    ctx = make_context(model_dir, out, budget, **PROTOCOL)
    centres, seen = {}, {"tokens": 0, "calls": 0}
    score_population, generate = ctx.score_population, ctx.engine.generate

    def spy_search(members, tag):
        centres[tag] = [b.clone() for b in ctx.perturber.base]
        return score_population(members, tag)

    def spy_generate(*args, **kwargs):  # every prompt + new token processed, from the engine's outputs
        outs = generate(*args, **kwargs)
        seen["tokens"] += sum(o.prompt_tokens + o.new_tokens for o in outs)
        seen["calls"] += 1
        return outs
    ctx.score_population, ctx.engine.generate = spy_search, spy_generate
    return IterativeRandOpt(Config(**{**SIZES, **sizes})).train(ctx), ctx, centres, seen


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """Two rounds, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    base = [p.detach().clone() for _, p in make_context(tiny_model_dir, out, None, **PROTOCOL).perturber.params]
    ensembles, ctx, centres, seen = run(tiny_model_dir, out)
    return {"ensembles": ensembles, "ctx": ctx, "base": base, "seen": seen, "centres": centres, "out": out}


def adapter_weights(ensembles) -> list[dict]:
    return [load_file(str(Path(e.voters[0].adapter) / "adapter_model.safetensors")) for e in ensembles]


def merged(model_dir, adapter: str) -> list[torch.Tensor]:
    ctx = make_context(model_dir, Path(adapter).parent / "scratch", None, **PROTOCOL)
    ctx.perturber.add_adapter(adapter)
    return [p.detach().clone() for _, p in ctx.perturber.params]


# ---------------------------------------------------------------- the trace rule

def s(text, key, correct=True, tokens=None, item=0):
    return Sample(item, text, key, correct, len(text) if tokens is None else tokens)


def test_traces_majority_first_then_shorter_duplicates_dropped_incorrect_never_kept():
    samples = [s("a long way to 12", "12"), s("wrong 7", "7", correct=False), s("7", "7"), s("sum is 7", "7"),
               s("7", "7"), s("x 7", "7", correct=False), s("12", "12"), s("also 12 here", "12")]
    # votes (every sample, duplicates too): 7 x5, 12 x3 -> majority 7
    kept = select_traces(samples, max_traces=8)
    assert [t.text for t in kept] == ["7", "sum is 7", "12", "also 12 here", "a long way to 12"]
    assert [t.text for t in select_traces(samples, max_traces=2)] == ["7", "sum is 7"]
    assert select_traces([s("9", "9", correct=False), s("3", "3", correct=False)], 8) == []
    # equal length and key: sampling order decides; a tie in the vote goes to the first seen key
    tie = [s("b 4", "4", tokens=3), s("a 5", "5", tokens=3), s("c 5", "5", tokens=3), s("d 4", "4", tokens=3)]
    assert [t.text for t in select_traces(tie, 8)] == ["b 4", "d 4", "a 5", "c 5"]


def test_union_of_rounds_deduplicates_per_question():
    r1 = [s("7", "7", item=0), s("12", "12", item=1)]
    r2 = [s("7", "7", item=0), s("7", "7", item=1), s("sum 7", "7", item=0)]
    assert [(t.item, t.text) for t in merge_traces(r1, r2)] == [(0, "7"), (1, "12"), (1, "7"), (0, "sum 7")]


# ---------------------------------------------------------------- budget

def test_sizes_from_a_budget_never_overspend(tiny_model_dir, tmp_path):
    ctx = make_context(tiny_model_dir, tmp_path / "plan", None, **PROTOCOL)
    cfg = Config(**SIZES)
    plan = stages(ctx.sizing, cfg)
    one = plan.search + plan.rollouts + cfg.max_traces * plan.slot
    assert guaranteed_rounds(cfg, plan, one) == 1 and guaranteed_rounds(cfg, plan, 0.99 * one) == 0
    assert guaranteed_rounds(cfg, plan, None) == cfg.rounds
    with pytest.raises(UserError, match="affords no round"):
        run(tiny_model_dir, tmp_path / "poor", budget=0.99 * one)
    for factor in (1.0, 1.6):
        budget = factor * one
        ensembles, ctx, _, _ = run(tiny_model_dir, tmp_path / f"budget{factor}", budget=budget)
        assert 1 <= len(ensembles) <= 2 and 0 < ctx.ledger.train <= budget
        flops = [e.info["train_flops_at_row"] for e in ensembles]
        assert flops == sorted(flops) and flops[-1] == ctx.ledger.train


# ---------------------------------------------------------------- two rounds

def test_two_rounds_change_the_weights_and_the_second_search_centres_on_the_first_model(reference, tiny_model_dir):
    ensembles, ctx, base = reference["ensembles"], reference["ctx"], reference["base"]
    assert [e.name for e in ensembles] == ["iterative_randopt r1", "iterative_randopt r2"]
    assert [e.info["final"] for e in ensembles] == [False, True]
    assert all(e.ks == (1,) and len(e.voters) == 1 and e.voters[0].seed is None for e in ensembles)
    r1, r2 = (merged(tiny_model_dir, e.voters[0].adapter) for e in ensembles)
    assert any(not torch.equal(a, b) for a, b in zip(r1, base)), "round 1 left the weights unchanged"
    assert any(not torch.equal(a, b) for a, b in zip(r2, r1)), "round 2 gave round 1's model again"
    centres = reference["centres"]
    assert all(torch.equal(a, b) for a, b in zip(centres["r1-members"], base))
    assert all(torch.equal(a, b) for a, b in zip(centres["r2-members"], r1))
    # train() hands the model back at its original weights
    assert all(torch.equal(p, b) for (_, p), b in zip(ctx.perturber.params, base))
    assert all(torch.equal(p, b) for p, b in zip(ctx.perturber.base, base))


def test_the_ledger_charges_the_tokens_processed(reference):
    ensembles, ctx, out = reference["ensembles"], reference["ctx"], reference["out"]
    cfg = Config(**SIZES)
    plan = stages(ctx.sizing, cfg)
    generated = reference["seen"]["tokens"]
    assert reference["seen"]["calls"] == cfg.rounds * (cfg.population + 1 + cfg.top_k * cfg.samples)
    # SFT: the trainer's own count of non-padding tokens is every example token, every epoch
    last = ensembles[-1].info
    traces = [json.loads((out / f"r{r}-traces.json").read_text()) for r in (1, 2)]
    ids = {it.id: i for i, it in enumerate(plan.items)}
    union = merge_traces(*[[Sample(ids[t["item"]], t["text"], t["key"], True, t["tokens"]) for t in rt]
                           for rt in traces])
    assert last["traces"] == len(union)
    example_tokens = sum(map(len, sft_examples(ctx.tokenizer, plan.prompt_ids, union)["input_ids"]))
    assert last["sft_tokens"] == cfg.epochs * example_tokens
    sft = sum(e.info["sft_tokens"] for e in ensembles)
    P, T = ctx.ledger.n_params, plan.passes[1].trainable
    assert ctx.ledger.tokens == {"train_forward": generated + sft, "train_backward": sft, "test_forward": 0}
    assert ctx.ledger.train == 2 * P * generated + sft * (2 * (P + T) + 2 * (P + T) + 2 * T)
    assert last["train_flops_at_row"] == ctx.ledger.train > ensembles[0].info["train_flops_at_row"]
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [1, 2] and curve[-1]["train_flops"] == ctx.ledger.train


def test_a_row_carries_the_training_flops_of_its_own_round():
    from harness.compare import row_dict

    row = Row("iterative_randopt", "iterative_randopt r1", 1, 0.5, 2, [True, False], ["1", "2"], 10.0,
              "iterative_randopt r1", {"train_flops_at_row": 3.0})
    ledger = Ledger(1, 100.0)
    ledger.train = 7.0
    assert row_dict(row, ledger, 0, 1.0, 2.0)["train_flops"] == 3.0
    row.info = {}
    assert row_dict(row, ledger, 0, 1.0, 2.0)["train_flops"] == 7.0


# ---------------------------------------------------------------- the adapter

def test_evaluating_through_the_adapter_equals_peft_merge_and_unload(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    ctx = make_context(tiny_model_dir, tmp_path / "ctx", None, **PROTOCOL)
    base = [p.detach().clone() for _, p in ctx.perturber.params]
    torch.manual_seed(3)
    lora = get_peft_model(copy.deepcopy(ctx.model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                               init_lora_weights=False, task_type="CAUSAL_LM"))
    lora.save_pretrained(str(tmp_path / "adapter"))
    peft_merged = lora.merge_and_unload()
    ctx.perturber.add_adapter(str(tmp_path / "adapter"))
    assert all(torch.equal(p, dict(peft_merged.named_parameters())[n]) for n, p in ctx.perturber.params)
    assert any(not torch.equal(p, b) for (_, p), b in zip(ctx.perturber.params, base))
    ctx.perturber.restore()

    evaluator = Evaluator(ctx.task, ctx.protocol, ctx.engine, ctx.train_items)
    texts = evaluator.voter_record(Voter("lora", adapter=str(tmp_path / "adapter")))["texts"]
    assert all(torch.equal(p, b) for (_, p), b in zip(ctx.perturber.params, base)), "not restored"
    ctx.engine.model = peft_merged.eval()
    expected = [o.text for o in ctx.engine.generate(evaluator.batches, evaluator.max_new_tokens)]
    ctx.engine.model = ctx.model
    assert texts == expected
    assert texts != evaluator.voter_record(Voter("base"))["texts"], "the adapter changed no answer"


# ---------------------------------------------------------------- resume

def kill_generation_at(ctx, n: int) -> None:
    generate, calls = ctx.engine.generate, [0]

    def killing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Killed
        return generate(*args, **kwargs)
    ctx.engine.generate = killing


@pytest.mark.parametrize("stage", ["search", "rollouts", "sft"])
def test_a_run_killed_in_any_stage_resumes_to_the_same_result(stage, reference, tiny_model_dir, tmp_path,
                                                               monkeypatch):
    import trl

    cfg = Config(**SIZES)
    per_round = cfg.population + 1 + cfg.top_k * cfg.samples
    out = tmp_path / stage
    ctx = make_context(tiny_model_dir, out, None, **PROTOCOL)
    if stage == "search":  # mid-way through round 2's search
        kill_generation_at(ctx, per_round + 2)
    elif stage == "rollouts":  # mid-way through round 1's rollouts
        kill_generation_at(ctx, cfg.population + 1 + 3)
    else:  # round 2's SFT, after its first checkpoint
        step = trl.SFTTrainer.training_step

        def killing(self, *args, **kwargs):
            if self.state.global_step >= 2 and "r2-" in self.args.output_dir:
                raise Killed
            return step(self, *args, **kwargs)
        monkeypatch.setattr(trl.SFTTrainer, "training_step", killing)
    with pytest.raises(Killed):
        IterativeRandOpt(cfg).train(ctx)
    if stage == "sft":
        assert list((out / "r2-checkpoints").glob("checkpoint-*")), "no checkpoint to resume from"
        monkeypatch.undo()
    ensembles, ctx, _, _ = run(tiny_model_dir, out)
    expected = reference["ensembles"]
    for got, want in zip(adapter_weights(ensembles), adapter_weights(expected), strict=True):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert ctx.ledger.as_dict() == reference["ctx"].ledger.as_dict()
    assert [e.info for e in ensembles] == [e.info for e in expected]
