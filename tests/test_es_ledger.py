"""ES update against a hand-computed reference, ES resume, and the compute ledger's budget rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.budget.compute import Ledger, paper_grpo_flops, paper_population_flops, paper_ppo_flops
from harness.context import Member
from harness.errors import UserError
from methods import es, randopt
from tests.helpers import make_context


# ---- ES update rule ----

@pytest.mark.parametrize("mode", ["iid", "released"])
def test_es_update_matches_hand_computed_reference(tiny_model_dir, tmp_path, mode):
    ctx = make_context(tiny_model_dir, tmp_path)
    params = ctx.perturber.params
    theta0 = [p.detach().clone() for _, p in params]
    members = [Member(0, 11, 1e-3, mode), Member(1, 22, 1e-3, mode), Member(2, 33, 1e-3, mode)]
    rewards = [0.25, 0.5, 1.0]
    alpha = 5e-4

    es.es_update(ctx.perturber, members, es.z_scores(rewards), alpha)

    # the reference, written out: z = (r - mean) / (std + 1e-8); theta += alpha/N * sum z_i eps_i
    r = np.array(rewards)
    z = (r - r.mean()) / (r.std() + 1e-8)
    for j, ((_, p), t0) in enumerate(zip(params, theta0)):
        total = torch.zeros_like(t0)
        for m, zi in zip(members, z):
            gen = torch.Generator().manual_seed(m.seed)
            if mode == "iid":  # one generator advanced over the parameters before this one
                for _, q in params[:j]:
                    torch.randn(q.shape, generator=gen)
            total += float(zi) * torch.randn(p.shape, generator=gen)
        expected = t0 + (total * (alpha / len(members)))
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


def test_z_scores_are_standardised():
    z = es.z_scores([1.0, 2.0, 3.0, 4.0])
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-6
    assert np.all(es.z_scores([0.5, 0.5, 0.5]) == 0)  # equal rewards: no update


def _es_run(ctx, monkeypatch=None, kill_after=None):
    calls = {"n": 0}
    if kill_after is not None:
        original = type(ctx).score_member

        def dying(self, member):
            calls["n"] += 1
            if calls["n"] > kill_after:
                raise KeyboardInterrupt("simulated kill")
            return original(self, member)
        monkeypatch.setattr(type(ctx), "score_member", dying)
    cfg = es.Config(population=3, iterations=3, sigma=0.05, alpha=0.05)
    return es.ES(cfg).train(ctx)


def test_killed_es_resumes_to_the_same_weights(tiny_model_dir, tmp_path, monkeypatch):
    whole = make_context(tiny_model_dir, tmp_path / "whole")
    _es_run(whole)
    final = [p.detach().clone() for _, p in whole.perturber.params]

    killed = make_context(tiny_model_dir, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        _es_run(killed, monkeypatch, kill_after=5)  # inside the second iteration
    monkeypatch.undo()
    resumed = make_context(tiny_model_dir, tmp_path / "killed")
    scored = {"n": 0}
    original = type(resumed).score_member

    def counting(self, member):
        scored["n"] += 1
        return original(self, member)
    monkeypatch.setattr(type(resumed), "score_member", counting)
    ensembles = _es_run(resumed)
    assert scored["n"] == 9 - 5  # only the members not finished before the kill
    for (_, p), f in zip(resumed.perturber.params, final):
        assert torch.equal(p, f)
    assert [e.name for e in ensembles] == ["es", "es+vote"]
    assert resumed.ledger.train == whole.ledger.train  # resumed work is charged once, in full


# ---- ledger ----

def test_ledger_arithmetic():
    ledger = Ledger(n_params=10, budget=1000)
    ledger.forward(5)  # 2 * 10 * 5
    ledger.backward(5)  # 4 * 10 * 5
    ledger.forward(3, "test")
    ledger.forward(2, n_params=7)  # another model (critic)
    assert ledger.train == 100 + 200 + 28
    assert ledger.test == 60
    assert ledger.remaining() == 1000 - 328
    assert ledger.affords(672) and not ledger.affords(673)
    assert ledger.tokens == {"train_forward": 7, "train_backward": 5, "test_forward": 3}
    ledger.backward(2, trainable=3)  # LoRA-like: 2 * 10 through every weight + 2 * 3 for the trained ones
    assert ledger.train == 328 + 2 * (20 + 6)


def test_paper_formulas():
    assert paper_population_flops(1, 5000, 200, 1, 1) == 2 * 5000 * 200
    assert paper_grpo_flops(2, 3, 4, 5, 6) == 8 * 2 * 3 * 4 * 5 * 6
    assert paper_ppo_flops(2, 3, 4, 5, 6) == 14 * 2 * 3 * 4 * 5 * 6


@pytest.mark.parametrize("units", [1, 2, 3])
def test_randopt_stops_within_one_member_of_budget(tiny_model_dir, tmp_path, units):
    ctx = make_context(tiny_model_dir, tmp_path, k=(1,))
    ctx.ledger.budget = ctx.worst_pass_flops() * (units + 0.5)
    randopt.RandOpt(randopt.Config(population=100)).train(ctx)
    scored = len(list((tmp_path / "members.rank0.jsonl").read_text().splitlines()))
    assert scored == units
    assert ctx.ledger.train <= ctx.ledger.budget


@pytest.mark.parametrize("iterations", [1, 2])
def test_es_stops_within_one_iteration_of_budget(tiny_model_dir, tmp_path, iterations):
    ctx = make_context(tiny_model_dir, tmp_path, k=(1,))
    cfg = es.Config(population=2, iterations=50)
    ctx.ledger.budget = 2 * ctx.worst_pass_flops() * (iterations + 0.9)
    es.ES(cfg).train(ctx)
    assert len((tmp_path / "curve.jsonl").read_text().splitlines()) == iterations
    assert ctx.ledger.train <= ctx.ledger.budget


def test_budget_too_small_is_a_user_error(tiny_model_dir, tmp_path):
    ctx = make_context(tiny_model_dir, tmp_path, k=(1,))
    ctx.ledger.budget = ctx.worst_pass_flops() * 0.5
    with pytest.raises(UserError, match="budget"):
        es.ES(es.Config(population=2)).train(ctx)
    with pytest.raises(UserError, match="randopt: .*affords no member"):
        randopt.RandOpt(randopt.Config(population=4)).train(ctx)
