"""The vLLM engine against the native one, with the real vLLM (`make test-vllm`: .venv-vllm).

Same members, same weights (bit for bit, every parameter), same greedy outputs and token counts,
exact restore over 1,000 cycles, multiprocessing off (in this process) and on (a child), and a
`thicket compare` whose greedy rows equal the native engine's. Skipped where vLLM is not installed
(the main environment): `make test` runs this file in the vLLM environment.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from harness.config import protocol_from  # noqa: E402
from harness.engine.interface import Engine, Weights, render  # noqa: E402
from harness.engine.model import load_model  # noqa: E402
from harness.engine.native import NativeEngine  # noqa: E402
from harness.engine.select import open_engine  # noqa: E402
from harness.engine.vllm_worker import tensor_digest  # noqa: E402
from tasks.arith import TASK as ARITH  # noqa: E402
from tests.conftest import build_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = [(11, 0.05, "iid"), (12, 0.05, "released")]


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory) -> str:
    """The tests' tiny Llama with 32-dimensional heads, the smallest vLLM's CPU attention runs."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny64"), hidden_size=64))


@pytest.fixture(scope="module")
def engines(tiny64):
    model, tokenizer = load_model(tiny64)
    vllm = open_engine("vllm", protocol_from("arith", "smoke", model=tiny64), model, tokenizer, None, 128)
    return vllm, NativeEngine(model, tokenizer, 64)


def native_digests(native) -> dict:
    return {name: tensor_digest(p) for name, p in native.weights.params}


def test_the_vllm_engine_implements_the_interface(engines):
    vllm, native = engines
    assert isinstance(vllm, Engine) and isinstance(vllm.weights, Weights)
    assert vllm.n_params == native.n_params
    assert vllm.weights.dtypes() == native.weights.dtypes()


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m[2])
def test_a_member_is_the_same_weights_and_outputs_on_both_engines(engines, member):
    vllm, native = engines
    items = ARITH.load("test", None)[:64]
    texts = [render(native.tokenizer, it.messages) for it in items]
    base = vllm.weights.digests()
    vllm.weights.apply(*member)
    native.weights.apply(*member)
    try:
        moved = vllm.weights.digests()
        assert moved == native_digests(native)
        assert all(moved[name] != base[name] for name in base), "a parameter the member did not move"
        ours, theirs = vllm.generate(vllm.prepare(texts), 8), native.generate(native.prepare(texts), 8)
        assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
        assert [(c.prompt_tokens, c.new_tokens) for c in ours] == [(c.prompt_tokens, c.new_tokens) for c in theirs]
    finally:
        vllm.weights.restore()
        native.weights.restore()
    assert vllm.weights.digests() == base


def test_the_es_sum_saving_and_loading_match_the_native_engine(engines, tmp_path):
    vllm, native = engines
    terms = [(1, 0.7, "iid"), (2, -1.3, "released"), (3, 0.0, "iid")]
    for engine in engines:
        engine.weights.add_noise_sum(terms, 0.01)
    assert vllm.weights.digests() == native_digests(native) and vllm.weights.dirty
    vllm.weights.save_file(str(tmp_path / "w.safetensors"))
    vllm.weights.restore()
    native.weights.restore()
    vllm.weights.load_file(str(tmp_path / "w.safetensors"))
    native.weights.add_noise_sum(terms, 0.01)
    assert vllm.weights.digests() == native_digests(native)
    snapshot = vllm.weights.base_snapshot()
    vllm.weights.rebase()
    vllm.weights.reset_to(snapshot)
    native.weights.restore()
    assert vllm.weights.digests() == native_digests(native) and not vllm.weights.dirty


def test_a_thousand_perturb_restore_cycles_end_at_the_base_bit_for_bit(engines):
    vllm, _ = engines
    base = vllm.weights.digests()
    for i in range(1000):
        vllm.weights.apply(1000 + i, 0.003, MEMBERS[i % 2][2])
    vllm.weights.restore()
    assert vllm.weights.digests() == base


CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from harness.config import protocol_from
from harness.engine.model import load_model
from harness.engine.native import NativeEngine
from harness.engine.select import open_engine
from harness.engine.vllm_worker import tensor_digest

if __name__ == "__main__":  # vLLM starts its engine core by spawn: the guard is required
    model, tokenizer = load_model({model!r})
    vllm = open_engine("vllm", protocol_from("arith", "smoke", model={model!r}), model, tokenizer, None, 128)
    native = NativeEngine(model, tokenizer, 8)
    vllm.weights.apply(7, 0.05, "iid")
    native.weights.apply(7, 0.05, "iid")
    print("RESULT", json.dumps(vllm.weights.digests() == {{n: tensor_digest(p) for n, p in native.weights.params}}))
"""


def test_members_with_vllm_multiprocessing_on(tiny64, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), model=tiny64))
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert "RESULT true" in out.stdout, out.stderr[-2000:]


TENSOR_PARALLEL = """
import json, sys
sys.path.insert(0, {root!r})
from harness.config import protocol_from
from harness.engine.interface import render
from harness.engine.model import load_model
from harness.engine.native import NativeEngine
from harness.engine.select import open_engine
from harness.engine.vllm import Settings
from harness.engine.vllm_worker import tensor_digest
from tasks.arith import TASK as ARITH

if __name__ == "__main__":  # vLLM spawns its tensor-parallel workers: the guard is required
    model, tokenizer = load_model({model!r})
    vllm = open_engine("vllm", protocol_from("arith", "smoke", model={model!r}), model, tokenizer,
                       Settings(tensor_parallel_size=2), 128)
    native = NativeEngine(model, tokenizer, 32)
    ours = lambda: {{n: tensor_digest(p) for n, p in native.weights.params}}
    texts = [render(tokenizer, it.messages) for it in ARITH.load("test", None)[:32]]
    base = vllm.weights.digests()
    checks = {{"workers": vllm.weights.workers, "n_params": vllm.n_params == native.n_params, "base": base == ours()}}
    for seed, mode in ((11, "iid"), (12, "released")):
        vllm.weights.apply(seed, 0.05, mode)
        native.weights.apply(seed, 0.05, mode)
        moved = vllm.weights.digests()
        checks[mode] = moved == ours() and all(moved[n] != base[n] for n in base)
        a, b = vllm.generate(vllm.prepare(texts), 8), native.generate(native.prepare(texts), 8)
        checks[mode + "_outputs"] = [c.token_ids for c in a] == [c.token_ids for c in b]
        vllm.weights.restore()
        native.weights.restore()
    terms = [(1, 0.7, "iid"), (2, -1.3, "released")]
    vllm.weights.add_noise_sum(terms, 0.01)
    native.weights.add_noise_sum(terms, 0.01)
    vllm.weights.save_file({weights!r})
    vllm.weights.restore()
    vllm.weights.load_file({weights!r})
    checks["es_sum_save_load"] = vllm.weights.digests() == ours()
    for i in range(100):
        vllm.weights.apply(1000 + i, 0.003, ("iid", "released")[i % 2])
    vllm.weights.restore()
    checks["restore"] = vllm.weights.digests() == base
    print("RESULT", json.dumps(checks))
"""


def test_tensor_parallel_members_are_the_native_engine_s_weights(tiny64, tmp_path):
    """engine.tensor_parallel_size=2 on CPU (a core per worker): each worker holds a shard of the
    tiny Llama (q/k/v and gate/up rows, o/down columns, half the padded vocabulary; its one k/v head
    repeated on both), draws each member's whole noise and adds its block; gathered, the weights
    equal the native engine's bit for bit for both noise modes, every parameter moves, greedy
    outputs are equal, the ES sum saves (gathered) and loads back, and 100 cycles restore exactly."""
    script = tmp_path / "tp.py"
    script.write_text(TENSOR_PARALLEL.format(root=str(ROOT), model=tiny64, weights=str(tmp_path / "w.safetensors")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, out.stderr[-3000:]
    checks = json.loads(line.removeprefix("RESULT "))
    assert checks.pop("workers") == 2
    assert all(checks.values()), checks


def test_compare_with_vllm_gives_the_native_engine_s_greedy_rows(tiny64, tmp_path):
    """Greedy rows (base, randopt, es) are the same on both engines, and with two processes under
    `accelerate launch` (one vLLM engine each, every process its share of the members); sampled
    rows (self-consistency) differ by construction (vLLM seeds each request, the native engine one
    generator a call)."""
    rows = {}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "harness.cli"]
    for name, engine, command in (("native", "native", [sys.executable, "-m", "harness.cli"]),
                                  ("vllm", "vllm", [sys.executable, "-m", "harness.cli"]),
                                  ("vllm_2proc", "vllm", launch)):
        args = command + ["compare", "--task", "arith", "--model", tiny64, "--budget",
                          "smoke", "--n-train", "4", "--n-test", "16", "--max-new-tokens", "6", "--k", "1,3",
                          "--methods", "base,randopt,es", "--set", "randopt.population=4", "--set", "es.population=3",
                          "--results", str(tmp_path / name), "--engine", engine]
        # one process: vLLM in-process (make test-vllm); two: the engine turns multiprocessing on
        out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=900,
                             env={**os.environ, "WANDB_MODE": "disabled"})
        assert out.returncode == 0, out.stderr[-3000:]
        summary = next((tmp_path / name / "arith").glob("*/summary.json"))
        rows[name] = [(r["label"], r["accuracy"], r["train_flops"], r["test_flops"])
                      for r in json.loads(summary.read_text())]
        config = json.loads((summary.parent / "config.json").read_text())
        assert config["engine"]["name"] == engine
    assert rows["vllm"] == rows["native"]
    assert rows["vllm_2proc"] == rows["vllm"]


def test_the_gpu_bench_measures_the_vllm_engine(tiny64):
    """bench/shapes.py's vllm contender (what `thicket plan --engine vllm` reads on a GPU) runs
    and closes its engine; here on CPU with the tiny model."""
    from argparse import Namespace

    from bench.shapes import measure_vllm

    model, tokenizer = load_model(tiny64)
    prompts = [render(tokenizer, it.messages) for it in ARITH.load("test", None)[:8]]
    rates = measure_vllm(model, tokenizer, prompts, Namespace(new_tokens=4, batch_size=8, rounds=1))
    assert rates["tokens_per_s"] > 0 and rates["prefill_tokens_per_s"] > 0 and rates["start_seconds"] > 0


def test_the_cpu_bench_races_vllm_on_both_workloads(tiny64, data_dir, tmp_path, capsys):
    """`make bench` (in .venv-vllm) adds the vLLM contender's keys to the one-line JSON; on the
    same member its greedy outputs are bare generate's."""
    from bench import throughput

    headline = throughput.main(["--model", tiny64, "--data-dir", data_dir, "--arith-items", "6", "--gsm8k-items", "3",
                                "--gsm8k-tokens", "6", "--rounds", "1,1", "--vllm", "on", "--out",
                                str(tmp_path / "results.json")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == headline
    assert headline["same_vllm_arith"] == headline["same_vllm_gsm8k"] == 1.0
    assert headline["speedup_vllm_arith"] > 0 and headline["vllm_start_seconds"] > 0
    assert 0 < headline["perturb_restore_share_vllm"] < 1
