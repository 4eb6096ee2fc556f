"""Core harness tests on a tiny random model (seconds): voting, perturbation and restore,
the paper's RandOpt draws, config resolution, resumable units, the end-to-end comparison,
resume after a kill, and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.compare import compare
from harness.config import PRESETS, Protocol, RunOptions, method_config, protocol_from
from harness.context import Member, TrainContext
from harness.errors import UserError
from harness.engine.native import NativeEngine, render
from harness.engine.model import load_model
from harness.engine.perturb import NOISE_MODES, Perturber, iter_noise, parameters
from harness.runs.units import read_records, run_units
from harness.vote import majority
from tests.helpers import base_args, cli_error, fail_if_model_loads
from methods import randopt, self_consistency
from methods.randopt import rank, sample_members
from tasks.arith import TASK as ARITH

SIGMA = 3e-3
# the default methods, every one of them, on the tiny model
LABELS = ["base", "self_consistency K=1", "self_consistency K=3", "randopt K=1", "randopt K=3",
          "es", "es+vote K=1", "es+vote K=3", "grpo", "ppo"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model runs fastest on one thread; compare() would set every core, which
    crawls (10x and worse) when another process shares the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "set_num_threads", lambda n: None)
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(tiny_model_dir):
    """A fresh (model, tokenizer) of the tiny random Llama, so no test sees another's weights."""
    return load_model(tiny_model_dir)


@pytest.mark.parametrize("device", ["cpu", "cpu:0", torch.device("cpu")])
def test_cpu_models_load_in_float32_whatever_the_device_spelling(tiny_model_dir, device):
    # accelerate launch names the CPU "cpu:0"; bf16 there would be slower and change the numbers
    assert load_model(tiny_model_dir, device)[0].dtype == torch.float32


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_weights_equal(model, base: dict[str, torch.Tensor]) -> None:
    current = dict(model.named_parameters())
    assert current.keys() == base.keys()
    for name, p in current.items():
        assert torch.equal(p, base[name]), name


def noise(model, seed: int, mode: str, scratch: dict | None = None) -> dict[str, torch.Tensor]:
    """eps(seed) per parameter name (cloned: with a scratch buffer each eps is reused)."""
    params = parameters(model)
    drawn = {params[i][0]: eps.clone() for indices, eps in iter_noise(params, seed, mode, scratch) for i in indices}
    return {name: drawn[name] for name, _ in params}  # in parameter order


# --- voting -------------------------------------------------------------------------------

@pytest.mark.parametrize("keys, vote", [
    ([], ""),
    ([""], ""),
    (["", "", ""], ""),
    (["a"], "a"),
    (["a", "b"], "a"),                    # tie: earliest in rank order
    (["b", "a"], "b"),
    (["a", "b", "b"], "b"),               # a strict majority beats rank order
    (["a", "b", "a", "b"], "a"),
    (["b", "a", "a", "b"], "b"),
    (["c", "a", "b", "a", "b", "c"], "c"),  # three-way tie
    (["", "a"], "a"),                     # "" abstains
    (["", "", "", "b", "a"], "b"),        # abstentions never win, however many
    (["", "b", "a", "", "a"], "a"),
    (["7", "07"], "7"),                   # keys are compared exactly, normalising is the task's job
])
def test_majority(keys, vote):
    assert majority(keys) == vote


# --- perturbation and restore -------------------------------------------------------------

@pytest.mark.parametrize("mode", NOISE_MODES)
def test_restore_is_bit_exact(tiny, mode):
    model, _ = tiny
    base = snapshot(model)
    perturber = Perturber(model)
    perturber.apply(1234, SIGMA, mode)
    assert all(not torch.equal(p, base[n]) for n, p in model.named_parameters())  # every parameter moved
    perturber.restore()
    assert_weights_equal(model, base)
    for seed in range(50):
        perturber.apply(seed * 7919 + 1, (1e-3, 2e-3, 3e-3)[seed % 3], mode)
        perturber.restore()
    assert_weights_equal(model, base)


@pytest.mark.parametrize("mode", NOISE_MODES)
def test_apply_always_starts_from_base(tiny, mode):
    model, _ = tiny
    base = snapshot(model)
    perturber = Perturber(model)
    perturber.apply(11, 2e-3, mode)
    perturber.apply(22, SIGMA, mode)  # no restore in between
    eps = noise(model, 22, mode)
    for name, p in model.named_parameters():
        assert torch.equal(p, base[name] + eps[name] * SIGMA), name
    perturber.restore()
    assert_weights_equal(model, base)


def test_released_noise_is_reseeded_per_tensor(tiny):
    model, _ = tiny
    seed = 987654
    for scratch in (None, {}):
        eps = noise(model, seed, "released", scratch)
        for name, p in model.named_parameters():
            expected = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype)
            assert torch.equal(eps[name], expected), name
    # tensors of equal shape get identical noise (the authors' code)
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    pairs = [(a, b) for i, (a, sa) in enumerate(shapes) for b, sb in shapes[i + 1:] if sa == sb]
    assert pairs
    for a, b in pairs:
        assert torch.equal(eps[a], eps[b]), (a, b)


@pytest.mark.parametrize("mode", NOISE_MODES)
def test_noise_is_drawn_once_per_shape_in_released_mode_and_once_per_tensor_in_iid(tiny, mode, monkeypatch):
    model, _ = tiny
    params = parameters(model)
    draws = []
    randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: draws.append(tuple(a[0])) or randn(*a, **k))
    Perturber(model).apply(3, SIGMA, mode)
    monkeypatch.undo()
    shapes = [tuple(p.shape) for _, p in params]
    assert draws == (shapes if mode == "iid" else list(dict.fromkeys(shapes)))
    assert len(draws) < len(shapes) or mode == "iid"  # the tiny model repeats shapes across layers


def test_iid_noise_is_one_generator_in_parameter_order(tiny):
    model, _ = tiny
    seed = 42
    gen = torch.Generator().manual_seed(seed)
    expected = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in model.named_parameters()}
    plain, scratched = noise(model, seed, "iid"), noise(model, seed, "iid", {})
    assert list(plain) == [n for n, _ in model.named_parameters()]
    for name in expected:
        assert torch.equal(plain[name], expected[name]), name
        assert torch.equal(scratched[name], expected[name]), name
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    pairs = [(a, b) for i, (a, sa) in enumerate(shapes) for b, sb in shapes[i + 1:] if sa == sb]
    assert pairs
    for a, b in pairs:
        assert not torch.equal(plain[a], plain[b]), (a, b)
    assert not torch.equal(noise(model, seed + 1, "iid")["model.norm.weight"], plain["model.norm.weight"])


def test_unknown_noise_mode(tiny):
    model, _ = tiny
    with pytest.raises(ValueError):
        Perturber(model).apply(1, SIGMA, "gaussian")


def test_tied_embedding_is_perturbed_once(tiny):
    model, _ = tiny
    embedding = model.get_input_embeddings().weight
    assert model.lm_head.weight is embedding
    perturber = Perturber(model)
    unique = {id(p): p for p in model.parameters()}
    assert len(perturber.params) == len(unique)
    assert sum(p.numel() for _, p in perturber.params) == sum(p.numel() for p in unique.values())
    assert sum(p is embedding for _, p in perturber.params) == 1
    base = embedding.detach().clone()
    perturber.apply(5, SIGMA, "iid")
    eps = noise(model, 5, "iid")["model.embed_tokens.weight"]
    assert torch.equal(model.lm_head.weight, base + eps * SIGMA)  # once, not twice
    assert model.lm_head.weight is model.get_input_embeddings().weight
    perturber.restore()


# --- RandOpt draws and ranking --------------------------------------------------------------

@pytest.mark.parametrize("seed, n, sigmas", [(0, 6, (1e-3, 2e-3, 3e-3)), (7, 100, (5e-4, 1e-3, 2e-3)),
                                             (123, 1, (1e-3,))])
def test_sample_members_is_the_papers_draw(seed, n, sigmas):
    members = sample_members(seed, n, sigmas, "released")
    rng = np.random.default_rng(seed)
    seeds = rng.choice(2**31, n, replace=False)
    drawn = rng.choice(sigmas, n)
    assert [m.index for m in members] == list(range(n))
    assert [m.seed for m in members] == [int(s) for s in seeds]
    assert [m.sigma for m in members] == [float(s) for s in drawn]
    assert {m.noise for m in members} == {"released"}
    assert len({m.seed for m in members}) == n
    assert all(0 <= m.seed < 2**31 and m.sigma in sigmas for m in members)


@pytest.mark.parametrize("scores, order", [
    ([0.5, 1.0, 0.5, 1.0, 0.0], [1, 3, 0, 2, 4]),
    ([0.0, 0.0, 0.0], [0, 1, 2]),
    ([0.1, 0.2, 0.3], [2, 1, 0]),
    ([1.0], [0]),
])
def test_rank_is_stable(scores, order):
    assert rank(scores) == order


# --- config -------------------------------------------------------------------------------

def test_protocol_presets_and_overrides():
    for budget, preset in PRESETS.items():
        p = protocol_from("arith", budget)
        assert (p.budget, p.n_train, p.n_test, p.max_new_tokens, p.k) == \
            (budget, preset["n_train"], preset["n_test"], preset["max_new_tokens"], preset["k"])
    p = protocol_from("arith", "smoke", n_train=3, k=(1, 2), seed=None, model=None, batch_size=4)
    assert (p.n_train, p.k, p.seed, p.batch_size, p.n_test) == (3, (1, 2), 0, 4, PRESETS["smoke"]["n_test"])
    assert protocol_from("arith", "paper").n_test is None


@pytest.mark.parametrize("overrides", [
    {"budget": "huge"}, {"n_train": 0}, {"n_train": -5}, {"n_test": 0}, {"k": (0, 1)}, {"k": ()},
    {"max_new_tokens": 0}, {"batch_size": 0},
])
def test_protocol_rejects(overrides):
    budget = overrides.pop("budget", "smoke")
    with pytest.raises(UserError):
        protocol_from("arith", budget, **overrides)
    with pytest.raises(UserError):
        Protocol(task="arith", budget=budget, **overrides)


@pytest.mark.parametrize("settings, expected", [
    ({}, {"population": 8, "sigmas": (1e-3, 2e-3, 3e-3), "noise": "iid"}),  # smoke preset sets N
    ({"population": "12"}, {"population": 12}),
    ({"randopt.population": "13"}, {"population": 13}),
    ({"self_consistency.temperature": "0.5", "es.population": "3"}, {"population": 8}),  # other methods'
    ({"randopt.sigmas": "0.0005, 0.001"}, {"sigmas": (5e-4, 1e-3)}),
    ({"noise": "released"}, {"noise": "released"}),
])
def test_method_config(settings, expected):
    cfg = method_config(randopt.Config, "randopt", "smoke", settings)
    for field, value in expected.items():
        assert getattr(cfg, field) == value


def test_method_config_other_methods():
    assert method_config(randopt.Config, "randopt", "paper", {}).population == 5000
    sc = method_config(self_consistency.Config, "self_consistency", "smoke", {"temperature": "0.3",
                                                                               "population": "7"})
    assert sc.temperature == 0.3


@pytest.mark.parametrize("method, cls, settings", [
    ("randopt", randopt.Config, {"randopt.foo": "1"}),
    ("randopt", randopt.Config, {"sigmas": "0"}),
    ("randopt", randopt.Config, {"sigmas": "0.001,-0.002"}),
    ("randopt", randopt.Config, {"randopt.sigmas": ""}),
    ("randopt", randopt.Config, {"noise": "gaussian"}),
    ("randopt", randopt.Config, {"population": "0"}),
    ("randopt", randopt.Config, {"population": "many"}),
    ("self_consistency", self_consistency.Config, {"temperature": "0"}),
    ("self_consistency", self_consistency.Config, {"self_consistency.top_p": "0.9"}),
])
def test_method_config_rejects(method, cls, settings):
    with pytest.raises(UserError):
        method_config(cls, method, "smoke", settings)


# --- resumable units ------------------------------------------------------------------------

class Killed(Exception):
    pass


def run_squares(folder: Path, calls: list, kill_after: int | None = None) -> dict:
    def work(u: int) -> dict:
        if kill_after is not None and len(calls) == kill_after:
            raise Killed
        calls.append(u)
        return {"square": u * u, "name": f"u{u}"}
    return run_units(list(range(8)), lambda u: u, work, folder, "squares")


def test_run_units_resume(tmp_path):
    calls: list = []
    whole = run_squares(tmp_path / "whole", calls)
    assert calls == list(range(8))
    assert whole == {u: {"index": u, "square": u * u, "name": f"u{u}"} for u in range(8)}

    calls = []
    with pytest.raises(Killed):
        run_squares(tmp_path / "killed", calls, kill_after=3)
    assert len((tmp_path / "killed" / "squares.rank0.jsonl").read_text().splitlines()) == 3
    calls = []
    assert run_squares(tmp_path / "killed", calls) == whole
    assert calls == [3, 4, 5, 6, 7]
    calls = []
    assert run_squares(tmp_path / "killed", calls) == whole
    assert calls == []


def test_run_units_skips_a_torn_line(tmp_path):
    calls: list = []
    with pytest.raises(Killed):
        run_squares(tmp_path, calls, kill_after=3)
    path = tmp_path / "squares.rank0.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"index": 3, "squ')  # killed mid-write
    assert sorted(read_records(tmp_path, "squares")) == [0, 1, 2]
    calls = []
    whole = run_squares(tmp_path / "whole", [])
    assert run_squares(tmp_path, calls) == whole
    assert calls == [3, 4, 5, 6, 7]
    calls = []  # the records written after the torn line are readable: nothing runs twice
    assert run_squares(tmp_path, calls) == whole
    assert calls == []


# --- end to end on the tiny model -----------------------------------------------------------

def tiny_protocol(model_dir: str) -> Protocol:
    return protocol_from("arith", "smoke", model=model_dir, n_train=8, n_test=8, max_new_tokens=6, k=(1, 3))


def only_dir(root: Path) -> Path:
    runs = [p for p in (root / "arith").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def seed_dir(run_dir: Path, seed: int = 0) -> Path:
    """Where one seed's method folders and predictions live (results/<task>/<run>/seed<S>/)."""
    return run_dir / f"seed{seed}"


STABLE = ("method", "name", "label", "k", "seed", "accuracy", "n_test", "train_flops", "test_flops", "info")


def stable_summary(run_dir: Path) -> list[dict]:
    """summary.json without what legitimately differs between runs (wall time, memory)."""
    return [{k: r.get(k) for k in STABLE} for r in json.loads((run_dir / "summary.json").read_text())]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    rc = main(["compare", "--task", "arith", "--model", tiny_model_dir, "--budget", "smoke", "--n-train", "8",
               "--n-test", "8", "--max-new-tokens", "6", "--k", "1,3", "--set", "population=6",
               "--results", str(results)])
    assert rc == 0
    return only_dir(results)


def test_compare_end_to_end(tiny_run):
    for name in ("config.json", "environment.json", "summary.json", "table.md", "seed0/predictions.jsonl",
                 "seed0/randopt/members.rank0.jsonl", "seed0/randopt/ranking.json"):
        assert (tiny_run / name).is_file(), name
    seed0 = seed_dir(tiny_run)
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["protocol"]["n_train"] == 8 and config["protocol"]["k"] == [1, 3]
    assert config["methods"]["randopt"]["population"] == 6

    summary = json.loads((tiny_run / "summary.json").read_text())
    assert [r["label"] for r in summary] == LABELS
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_test"] == 8 for r in summary)
    table = (tiny_run / "table.md").read_text()
    assert all(f"| {label} |" in table for label in LABELS)
    predictions = jsonl(seed0 / "predictions.jsonl")
    assert len(predictions) == 8 and all(set(p["rows"]) == set(LABELS) for p in predictions)

    members = jsonl(seed0 / "randopt" / "members.rank0.jsonl")
    assert len(members) == 6
    drawn = sample_members(0, 6, randopt.Config().sigmas, "iid")
    by_index = {m["index"]: m for m in members}
    assert [(by_index[m.index]["seed"], by_index[m.index]["sigma"]) for m in drawn] == \
        [(m.seed, m.sigma) for m in drawn]
    assert all(0.0 <= m["score"] <= 1.0 for m in members)
    ranking = json.loads((seed0 / "randopt" / "ranking.json").read_text())
    scores = [by_index[i]["score"] for i in range(6)]
    assert [r["index"] for r in ranking] == rank(scores)
    assert [r["rank"] for r in ranking] == list(range(6))


def test_rows_go_through_the_vote(tiny_run):
    """Each reported row is the majority vote of its first k voters' keys, scored by the task."""
    items = ARITH.load("test", None)[:8]
    folder = seed_dir(tiny_run) / "randopt"
    ranking = json.loads((folder / "ranking.json").read_text())
    rows = {r["label"]: r for r in json.loads((folder / "rows.json").read_text())}
    voters = sorted(jsonl(folder / "test-randopt.rank0.jsonl"), key=lambda r: r["index"])
    assert [v["label"] for v in voters] == [f"member{r['index']}" for r in ranking[:3]]
    for k in (1, 3):
        votes = [majority([v["keys"][i] for v in voters[:k]]) for i in range(8)]
        assert rows[f"randopt K={k}"]["predictions"] == votes
        assert rows[f"randopt K={k}"]["correct"] == [bool(p) and ARITH.is_correct(p, it)
                                                    for p, it in zip(votes, items)]
    keys = [k for v in voters for k in v["keys"]]
    assert any(keys), "the tiny model should emit digits sometimes"


class _Tokens:
    """A stand-in ledger: score_population only charges tokens."""

    def __init__(self):
        self.tokens = 0

    def forward(self, n_tokens, phase="train", *args, **kwargs):
        self.tokens += n_tokens


def context(model, tokenizer, protocol: Protocol, out_dir: Path) -> TrainContext:
    engine = NativeEngine(model, tokenizer, protocol.batch_size)
    train = ARITH.load("train", None)[:protocol.n_train]
    batches = engine.prepare([render(tokenizer, it.messages) for it in train])
    return TrainContext(protocol, ARITH, model, tokenizer, engine, _Tokens(), train, batches,
                        out_dir)


def test_member_scores_are_independent_of_the_population(tiny, tiny_run, tmp_path):
    model, tokenizer = tiny
    base = snapshot(model)
    ctx = context(model, tokenizer, tiny_protocol("unused"), tmp_path)
    recorded = sorted(jsonl(seed_dir(tiny_run) / "randopt" / "members.rank0.jsonl"), key=lambda r: r["index"])
    members = [Member(r["index"], r["seed"], r["sigma"], r["noise"]) for r in recorded]
    population = ctx.score_population(members, "members")
    assert population == [r["score"] for r in recorded]
    assert ctx.ledger.tokens == sum(r["tokens"] for r in recorded)
    by = {r["index"]: r for r in recorded}
    for m in reversed(members):  # alone, in another order, after other members
        score, tokens = ctx.score_member(m)
        assert (score, tokens) == (by[m.index]["score"], by[m.index]["tokens"])
    assert_weights_equal(model, base)


def test_resume_after_kill(tiny_model_dir, tmp_path, monkeypatch):
    protocol = tiny_protocol(tiny_model_dir)
    settings = {"population": "6"}
    original = TrainContext.score_member
    calls: list = []

    def killing(self, member):
        if len(calls) == 3:
            raise Killed
        calls.append(member.index)
        return original(self, member)

    monkeypatch.setattr(TrainContext, "score_member", killing)
    with pytest.raises(Killed):
        compare(protocol, ("randopt",), settings, RunOptions(results=str(tmp_path / "killed")))
    run_dir = only_dir(tmp_path / "killed")
    assert len(jsonl(seed_dir(run_dir) / "randopt" / "members.rank0.jsonl")) == 3
    assert not (run_dir / "summary.json").exists()

    def counting(self, member):
        calls.append(member.index)
        return original(self, member)

    monkeypatch.setattr(TrainContext, "score_member", counting)
    calls.clear()
    assert compare(protocol, ("randopt",), settings, RunOptions(results=str(tmp_path / "killed"))) == run_dir
    assert calls == [3, 4, 5]
    calls.clear()
    whole = compare(protocol, ("randopt",), settings, RunOptions(results=str(tmp_path / "whole")))
    assert calls == list(range(6))

    assert stable_summary(run_dir) == stable_summary(whole)
    for name in ("randopt/ranking.json", "predictions.jsonl"):
        assert (seed_dir(run_dir) / name).read_text() == (seed_dir(whole) / name).read_text(), name

    calls.clear()  # a finished run is reused, nothing is scored again
    compare(protocol, ("randopt",), settings, RunOptions(results=str(tmp_path / "whole")))
    assert calls == []


# --- bad input: one line on stderr, exit status 2 ------------------------------------------

@pytest.mark.parametrize("extra, words", [
    (["--task", "nosuchtask"], ["unknown task", "nosuchtask"]),
    (["--methods", "base,nosuchmethod"], ["unknown method", "nosuchmethod"]),
    (["--set", "sigmas=0"], ["sigma", "> 0"]),
    (["--set", "randopt.population=0"], ["population"]),
    (["--set", "randopt.foo=1"], ["randopt.foo"]),
    (["--set", "population"], ["KEY=VALUE"]),
    (["--budget", "huge"], ["BUDGET", "huge"]),
    (["--n-train", "0"], ["--n-train", ">= 1"]),
    (["--k", "0,1"], ["K"]),
])
def test_cli_rejects_before_loading_the_model(extra, words, tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path) + extra)
    assert all(w in line for w in words), line


def test_cli_unknown_model(tmp_path, capsys, monkeypatch, quiet_hf):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "no" / "such" / "model")
    line = cli_error(capsys, base_args(missing, tmp_path / "results"))
    assert "cannot load model" in line and missing in line


def test_cli_missing_data_dir(tiny_model_dir, tmp_path, capsys, quiet_hf):
    missing = tmp_path / "nonexistent"
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path / "results", "gsm8k") + ["--data-dir", str(missing)])
    assert str(missing / "gsm8k") in line


def test_cli_malformed_data_row(tiny_model_dir, tmp_path, capsys, quiet_hf):
    folder = tmp_path / "data" / "gsm8k"
    folder.mkdir(parents=True)
    good = json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"})
    (folder / "train.jsonl").write_text(good + "\n" + '{"question": "broken", "answ\n' + good + "\n")
    (folder / "test.jsonl").write_text((good + "\n") * 4)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path / "results", "gsm8k")
                     + ["--data-dir", str(tmp_path / "data")])
    assert f"{folder / 'train.jsonl'}:2:" in line


def test_cli_k_larger_than_population(tiny_model_dir, tmp_path, capsys, quiet_hf):
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path) + ["--methods", "randopt", "--k", "1,10",
                                                                     "--set", "population=4"])
    assert "K=10" in line and "N=4" in line


def test_cli_n_train_larger_than_split(tiny_model_dir, data_dir, tmp_path, capsys, quiet_hf):
    args = base_args(tiny_model_dir, tmp_path, "countdown") + ["--data-dir", data_dir, "--n-train", "500"]
    line = cli_error(capsys, args)
    assert "n_train=500" in line and "200" in line
