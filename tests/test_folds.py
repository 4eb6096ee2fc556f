"""One-model folds of RandOpt's population (randopt_soup, randopt_fold) and the selection
diagnostics (harness/diagnostics.py), on the tiny random model: real weights, real compare."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.compare import compare
from harness.config import RunOptions, protocol_from
from harness.diagnostics import oracle_gaps, sample, spearman, spearman_interval
from harness.evaluate import Evaluator
from harness.errors import UserError
from harness.method import get_method
from harness.runs.units import append_record
from methods.randopt import sample_members
from tests.helpers import make_context

ROOT = Path(__file__).resolve().parents[1]
STABLE = ("method", "name", "label", "k", "seed", "accuracy", "n_test", "train_flops", "test_flops", "info",
          "correct", "predictions")


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def digest(model) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def built_by_evaluator(ctx, voter) -> dict[str, torch.Tensor]:
    """The weights the Evaluator generates a voter's test answers with (the real path)."""
    ev = Evaluator(ctx.task, ctx.protocol, ctx.engine)
    seen, generate = [], ctx.engine.generate

    def spy(*args, **kwargs):
        seen.append(weights(ctx.model))
        return generate(*args, **kwargs)

    ctx.engine.generate = spy
    try:
        ev.voter_record(voter)
    finally:
        ctx.engine.generate = generate
    return seen[0]


def fake_randopt(ctx, n: int, noise: str, scores: list[float]) -> list:
    """RandOpt's persisted member scores in the sibling folder, as randopt writes them."""
    members = sample_members(ctx.protocol.seed, n, (1e-3, 2e-3, 3e-3), noise)
    for m, s in zip(members, scores):
        append_record(ctx.out_dir.parent / "randopt" / "members.rank0.jsonl",
                      {"index": m.index, "seed": m.seed, "sigma": m.sigma, "noise": m.noise, "score": s, "tokens": 10})
    return members


def method(name: str, **fields):
    cls = get_method(name)
    return cls(cls.Config(**fields))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("noise", ["iid", "released"])
def test_soup_of_one_member_is_that_member_bit_for_bit(tiny_model_dir, tmp_path, noise):
    ctx = make_context(tiny_model_dir, tmp_path / "seed0" / "randopt_soup", k=(1, 2))
    members = fake_randopt(ctx, 4, noise, [0.1, 0.7, 0.3, 0.7])
    base = weights(ctx.model)
    soups = method("randopt_soup", population=4, noise=noise).train(ctx)
    assert [e.label for e in soups] == ["randopt_soup K=1", "randopt_soup K=2"]
    assert soups[0].info["shared_train_flops_with"] == "randopt" and ctx.ledger.train == 0
    ctx.perturber.apply(members[1].seed, members[1].sigma, noise)  # the best (ties: sampling order)
    member = weights(ctx.model)
    ctx.perturber.restore()
    assert_same(built_by_evaluator(ctx, soups[0].voters[0]), member)
    assert_same(weights(ctx.model), base)  # restored exactly after the fold
    soup2 = built_by_evaluator(ctx, soups[1].voters[0])
    ctx.perturber.add_noise_sum([(members[1].seed, members[1].sigma, noise),
                                 (members[3].seed, members[3].sigma, noise)], 0.5)
    assert_same(soup2, weights(ctx.model))
    ctx.perturber.restore()


def test_reward_fold_with_one_nonzero_weight_is_the_scaled_member(tiny_model_dir, tmp_path):
    ctx = make_context(tiny_model_dir, tmp_path / "seed0" / "randopt_fold")
    # only the best of the two kept members scores above the population mean: weights (1, 0)
    members = fake_randopt(ctx, 8, "iid", [0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0])
    (fold,) = method("randopt_fold", population=8, weighting="positive_z", top_fraction=0.25, scale=0.5).train(ctx)
    assert fold.info["weights"] == [1.0, 0.0] and fold.voters[0].noise_scale == 0.5
    built = built_by_evaluator(ctx, fold.voters[0])
    ctx.perturber.apply(members[2].seed, 0.5 * 1.0 * members[2].sigma, "iid")  # base + scale * w * sigma * eps
    assert_same(built, weights(ctx.model))
    ctx.perturber.restore()
    recipe = json.loads((ctx.out_dir / "folds.json").read_text())[0]
    assert recipe["members"] == [2, 0] and recipe["weights"] == [1.0, 0.0]


def test_a_fold_rebuilt_in_another_process_and_on_rerun_is_the_same(tiny_model_dir, tmp_path):
    ctx = make_context(tiny_model_dir, tmp_path / "seed0" / "randopt_fold")
    fake_randopt(ctx, 8, "iid", [0.1, 0.5, 0.2, 0.8, 0.4, 0.4, 0.0, 0.3])
    cfg = {"population": 8, "top_fraction": 0.5, "temperature": 0.7}
    (fold,) = method("randopt_fold", **cfg).train(ctx)
    ctx.perturber.add_noise_sum(list(fold.voters[0].noise_sum), fold.voters[0].noise_scale)
    first = digest(ctx.model)
    ctx.perturber.restore()
    (again,) = method("randopt_fold", **cfg).train(ctx)  # a rerun: same recipe, folds.json accepted
    assert again.voters[0] == fold.voters[0]
    script = ("import sys, json, hashlib; from harness.engine.model import load_model; "
              "from harness.engine.native import NativeEngine; "
              "m, t = load_model(sys.argv[1], 'cpu'); w = NativeEngine(m, t, 8).weights; "
              "r = json.load(open(sys.argv[2]))[0]; w.add_noise_sum([tuple(x) for x in r['terms']], r['scale']); "
              "h = hashlib.sha256()\n"
              "for n, p in m.named_parameters(): h.update(n.encode()); h.update(p.detach().contiguous().numpy().tobytes())\n"
              "print(h.hexdigest())")
    out = subprocess.run([sys.executable, "-c", script, tiny_model_dir, str(ctx.out_dir / "folds.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == first
    with pytest.raises(UserError, match="differ"):  # the population changed under a resumed run
        method("randopt_fold", **{**cfg, "temperature": 2.0}).train(ctx)


def test_spearman_and_oracle_gap_on_a_fixed_table():
    scipy_stats = pytest.importorskip("scipy.stats")
    train = [0.50, 0.25, 0.75, 0.25, 0.0, 1.0, 0.5, 0.5]
    test = [0.40, 0.30, 0.35, 0.10, 0.10, 0.60, 0.20, 0.45]  # ties on both sides
    assert spearman(train, test) == pytest.approx(scipy_stats.spearmanr(train, test).statistic, abs=1e-12)
    assert spearman([1, 1, 1], [0.1, 0.2, 0.3]) is None
    lo, hi = spearman_interval(train, test)
    assert -1 <= lo <= spearman(train, test) <= hi <= 1
    gaps = oracle_gaps(train, test, (1, 2, 3, 20))
    # by train: 5 (1.0), 2 (0.75), then 0 (0.5, first of the ties); by test: 5, 7, 0
    assert gaps["1"]["gap"] == pytest.approx(0.0)
    assert gaps["2"] == pytest.approx({"top_by_test": 0.525, "top_by_train": 0.475, "gap": 0.05})
    assert gaps["3"]["top_by_train"] == pytest.approx((0.6 + 0.35 + 0.4) / 3)
    assert "20" not in gaps
    assert sample(8, 20, 0) == list(range(8)) and sample(8, 3, 0) == sample(8, 3, 0)


def stable_rows(run_dir: Path, method_name: str) -> list[dict]:
    rows = json.loads((run_dir / "seed0" / method_name / "rows.json").read_text())
    return [{k: r.get(k) for k in STABLE} for r in rows]


def test_folds_in_compare_and_the_diagnostics_never_change_a_row(tiny_model_dir, tmp_path):
    protocol = protocol_from("arith", "smoke", model=tiny_model_dir, n_train=4, n_test=6, max_new_tokens=4, k=(1, 2))
    methods = ("base", "randopt", "randopt_soup", "randopt_fold")
    settings = {"population": "4"}
    plain = compare(protocol, methods, settings, RunOptions(results=str(tmp_path / "a"), diagnostic_members=0))
    diag = compare(protocol, methods, settings, RunOptions(results=str(tmp_path / "b"), diagnostic_members=4))
    alone = compare(protocol, ("randopt_soup", "randopt_fold"), settings,
                    RunOptions(results=str(tmp_path / "c"), diagnostic_members=0))
    for name in methods:
        assert stable_rows(plain, name) == stable_rows(diag, name), name
    assert not (plain / "seed0" / "diagnostics.json").exists()
    d = json.loads((diag / "seed0" / "diagnostics.json").read_text())
    assert d["m"] == 4 and len(d["members"]) == 4 and d["test_flops"] > 0 and set(d["oracle_gap"]) == {"1", "2"}
    randopt = {r["label"]: r for r in json.loads((plain / "seed0" / "randopt" / "rows.json").read_text())}
    assert d["reused_from_randopt"] == 2  # RandOpt's top 2 were evaluated by its rows: read back, not rerun
    best = json.loads((diag / "seed0" / "randopt" / "ranking.json").read_text())[0]["index"]
    assert next(m for m in d["members"] if m["index"] == best)["test_accuracy"] == randopt["randopt K=1"]["accuracy"]
    soup = {r["label"]: r for r in json.loads((plain / "seed0" / "randopt_soup" / "rows.json").read_text())}
    assert soup["randopt_soup K=1"]["predictions"] == randopt["randopt K=1"]["predictions"]  # the same weights
    for r in soup.values():
        assert r["k"] == 1 and r["info"]["shared_train_flops_with"] == "randopt"
        assert r["train_flops"] == randopt["randopt K=1"]["train_flops"]  # shown as shared, spent once
    assert json.loads((plain / "seed0" / "randopt_soup" / "ledger.json").read_text())["train_flops"] == 0
    for name in ("randopt_soup", "randopt_fold"):  # scored alone: the same members, the same folds
        a, b = stable_rows(plain, name), stable_rows(alone, name)
        assert [(r["label"], r["predictions"]) for r in a] == [(r["label"], r["predictions"]) for r in b]
        assert all("shared_train_flops_with" not in r["info"] for r in b)
    assert (plain / "seed0" / "randopt_fold" / "folds.json").read_text() == \
        (alone / "seed0" / "randopt_fold" / "folds.json").read_text()
    from harness.analysis.report import build_report  # the report of the run with diagnostics

    md, _ = build_report(diag)
    text = md.read_text()
    assert "## Selection diagnostics (test split: a diagnostic no method may use)" in text
    assert "plot_selection.png" in text and (diag / "plot_selection.png").is_file()
    assert "(shared with randopt)" in text and "| randopt_soup K=2 | 1 |" in text
    assert build_report(diag)[0].read_text() == text  # byte-stable
    assert "Selection diagnostics" not in build_report(plain)[0].read_text()


@pytest.mark.parametrize("key, value, words", [
    ("randopt_fold.temperature", "0", "randopt_fold.temperature must be a finite number > 0, got 0.0"),
    ("randopt_fold.top_fraction", "1.5", "randopt_fold.top_fraction must be in (0, 1], got 1.5"),
    ("randopt_fold.weighting", "mean", "randopt_fold.weighting 'mean'; choose one of softmax, positive_z"),
    ("randopt_soup.noise", "pink", "randopt_soup.noise 'pink'; choose one of iid, released"),
])
def test_bad_fold_settings_are_one_line(key, value, words):
    from harness.config import method_config

    name = key.partition(".")[0]
    with pytest.raises(UserError) as err:
        method_config(get_method(name).Config, name, "small", {key: value})
    assert str(err.value) == words


def test_bad_diagnostic_members_is_one_line():
    with pytest.raises(UserError, match="--diagnostic-members must be >= 0"):
        RunOptions(diagnostic_members=-1)
