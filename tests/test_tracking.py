"""W&B: offline runs read back with the wandb package (its own record format and protobufs):
one run per method and seed with a `method` config field, one summary schema, curves keyed by
train_flops, and a killed or interrupted run that resumes into the same run id."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from harness.runs import tracking
from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 32768  # wandb's transaction log: LevelDB-style 32 KiB blocks, 7-byte record headers


def records(path: Path):
    """The protobuf records of one offline run file (run-<id>.wandb)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_run(folder: Path) -> dict:
    """id, config, summary, history rows, metric definitions and exit code of one offline run."""
    (path,) = folder.glob("run-*.wandb")
    out = {"folder": folder, "config": {}, "summary": {}, "history": [], "metrics": [], "exit_code": None}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["name"], out["group"] = r.run.run_id, r.run.display_name, r.run.run_group
            out["config"] = {u.key: json.loads(u.value_json) for u in r.run.config.update}
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in r.summary.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "metric":
            out["metrics"].append((r.metric.name or r.metric.glob_name, r.metric.step_metric))
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def offline_runs(run_dir: Path) -> list[dict]:
    return [read_run(p) for p in sorted((run_dir / "wandb").glob("offline-run-*"))]


def by_method(runs: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in runs:
        out.setdefault((r["config"]["method"], r["config"]["seed"]), []).append(r)
    return out


SMALL = ["--budget", "smoke", "--n-train", "4", "--n-test", "4", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def side_by_side(tiny_model_dir, tmp_path_factory):
    """base, randopt (K 1,2) and es, two seeds, W&B offline, read back."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("results")
    try:
        assert main(["compare", "--task", "arith", "--methods", "base,randopt,es", "--model", tiny_model_dir,
                     *SMALL, "--k", "1,2", "--set", "randopt.population=3", "--set", "es.population=2",
                     "--seeds", "2", "--results", str(results)]) == 0
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    (run_dir,) = (results / "arith").iterdir()
    return run_dir, offline_runs(run_dir)


@pytest.mark.wandb
def test_one_run_per_method_and_seed_with_the_method_in_its_config(side_by_side, tiny_model_dir):
    run_dir, runs = side_by_side
    assert not (run_dir / "wandb" / "wandb").exists()  # no doubled folder
    config = json.loads((run_dir / "config.json").read_text())
    methods = {k: v for k, v in by_method(runs).items() if k[0] not in ("all", "diagnostics")}
    assert sorted(methods) == [(m, s) for m in ("base", "es", "randopt") for s in (0, 1)]
    # beside them, one selection-diagnostics run per seed (RandOpt ran)
    assert sorted(k for k in by_method(runs) if k[0] == "diagnostics") == [("diagnostics", 0), ("diagnostics", 1)]
    for (method, seed), (run,) in methods.items():
        c = run["config"]
        assert (c["task"], c["model"], c["budget_flops"]) == ("arith", tiny_model_dir, config["budget_flops"])
        assert c["method_config"] == config["methods"][method] and c["protocol"] == config["protocol"]
        assert run["name"] == f"{method}-seed{seed}" and run["group"] == f"arith-{run_dir.name}"
        assert run["exit_code"] == 0


@pytest.mark.wandb
def test_shared_summary_schema(side_by_side):
    run_dir, runs = side_by_side
    for (method, seed), (run,) in by_method(runs).items():
        if method in ("all", "diagnostics"):
            continue
        s = run["summary"]
        rows = {r["label"]: r for r in json.loads((run_dir / f"seed{seed}" / method / "rows.json").read_text())}
        assert {"accuracy", "accuracy_k1", "train_flops", "test_flops_per_item", "wall_s"} <= set(s), method
        assert not [k for k in s if " " in k or "=" in k]
        headline = {"base": "base", "es": "es", "randopt": "randopt K=2"}[method]
        assert s["accuracy"] == rows[headline]["accuracy"]
        assert s["train_flops"] == rows[headline]["train_flops"]
        if method == "randopt":
            assert (s["accuracy_k1"], s["accuracy_k2"]) == (rows["randopt K=1"]["accuracy"], s["accuracy"])
        if method == "es":  # the second ensemble, under a key-safe name
            assert s["es_vote/accuracy_k2"] == rows["es+vote K=2"]["accuracy"] == s["es_vote/accuracy"]


@pytest.mark.wandb
def test_curves_are_keyed_by_train_flops(side_by_side):
    run_dir, runs = side_by_side
    for (method, seed), (run,) in by_method(runs).items():
        assert ("*", "train_flops") in run["metrics"], method
        curve = [h for h in run["history"] if any(k.startswith("curve/") for k in h)]
        assert all(isinstance(h.get("train_flops"), (int, float)) for h in curve)
        if method == "randopt":  # streamed: one point per member, as each finished
            assert [h["curve/step"] for h in curve] == [1, 2, 3]
            flops = [h["train_flops"] for h in curve]
            assert flops == sorted(flops) and flops[0] > 0
            assert flops[-1] == pytest.approx(run["summary"]["train_flops"])
            members = [json.loads(line) for line in
                       (run_dir / f"seed{seed}" / "randopt" / "members.rank0.jsonl").read_text().splitlines()]
            scores = [m["score"] for m in sorted(members, key=lambda m: m["index"])]
            assert [h["curve/train_reward"] for h in curve] == [max(scores[:i]) for i in (1, 2, 3)]
            assert "curve/train_reward_top_k" in curve[-1]
        if method == "es":
            assert len(curve) >= 1 and "curve/train_reward" in curve[0]


@pytest.mark.wandb
def test_predictions_table_per_seed(side_by_side):
    run_dir, runs = side_by_side
    tables = by_method(runs)
    for seed in (0, 1):
        (run,) = tables[("all", seed)]
        (table,) = (run["folder"] / "files" / "media" / "table").glob("predictions*.table.json")
        data = json.loads(table.read_text())
        assert data["columns"][:4] == ["id", "gold", "base vote", "base correct"]
        assert "es+vote K=2 correct" in data["columns"] and len(data["data"]) == 4
        predictions = [json.loads(line) for line in (run_dir / f"seed{seed}" / "predictions.jsonl").read_text().splitlines()]
        assert [row[0] for row in data["data"]] == [p["id"] for p in predictions]


@pytest.mark.wandb
def test_rerunning_a_finished_comparison_adds_no_run(side_by_side, tiny_model_dir, monkeypatch):
    run_dir, runs = side_by_side
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["compare", "--task", "arith", "--methods", "base,randopt,es", "--model", tiny_model_dir,
                 *SMALL, "--k", "1,2", "--set", "randopt.population=3", "--set", "es.population=2",
                 "--seeds", "2", "--results", str(run_dir.parents[1])]) == 0
    assert len(offline_runs(run_dir)) == len(runs)


BLOCKER = '''
"""A method that records a curve point and then, while THICKET_TEST_BLOCK names a file,
creates it and waits to be killed."""
import os
import time

from harness.method import Ensemble, Method, Voter


class Blocker(Method):
    def train(self, ctx):
        ctx.record_curve(1, train_reward=0.5)
        if os.environ.get("THICKET_TEST_BLOCK"):
            open(os.environ["THICKET_TEST_BLOCK"], "w").close()
            time.sleep(600)
        return [Ensemble("blocker", [Voter("base")], ks=(1,))]


METHOD = Blocker
'''


@pytest.mark.wandb
def test_sigkill_then_rerun_continues_the_same_run(tiny_model_dir, tmp_path):
    (tmp_path / "testplugins").mkdir()
    (tmp_path / "testplugins" / "__init__.py").write_text("")
    (tmp_path / "testplugins" / "blocker.py").write_text(textwrap.dedent(BLOCKER))
    results, flag = tmp_path / "results", tmp_path / "blocked"
    # WANDB_SERVICE would connect the child to this process's wandb-core, which outlives a kill
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_MODE": "offline", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
           "OMP_NUM_THREADS": "1", "THICKET_TEST_BLOCK": str(flag)}
    command = [sys.executable, "-m", "harness.cli", "compare", "--task", "arith", "--methods", "base,testplugins.blocker",
               "--model", tiny_model_dir, *SMALL, "--k", "1", "--results", str(results)]
    log = tmp_path / "first.log"  # a file, not a pipe: a full pipe would block the child
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600  # a loaded 2-CPU machine starts slowly
        while not flag.exists():
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the blocker method never started"
            time.sleep(0.2)
        (killed,) = (results / "arith").glob("*/wandb/offline-run-*blocker*")
        while not any("curve/step" in h for h in read_run(killed)["history"]):  # on disk (flushed)
            assert time.monotonic() < deadline, "the curve point never reached the offline run file"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    del env["THICKET_TEST_BLOCK"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (results / "arith").iterdir()
    runs = by_method(offline_runs(run_dir))
    assert len(runs[("base", 0)]) == 1  # finished before the kill: reused, not logged again
    killed, resumed = runs[("testplugins.blocker", 0)]  # two attempts, in time order, of ONE run
    assert killed["id"] == resumed["id"] and killed["folder"] != resumed["folder"]
    assert killed["exit_code"] is None and resumed["exit_code"] == 0  # the killed one never finished
    assert resumed["summary"]["accuracy"] == runs[("base", 0)][0]["summary"]["accuracy"]


@pytest.mark.wandb
def test_ctrl_c_leaves_the_run_unfinished_and_a_rerun_resumes_it(tiny_model_dir, tmp_path, monkeypatch, one_thread):
    from harness.context import TrainContext

    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = ["compare", "--task", "arith", "--methods", "base,randopt", "--model", tiny_model_dir, *SMALL,
            "--k", "1", "--set", "population=3", "--results", str(tmp_path)]
    calls, real = [], TrainContext.score_member

    def interrupted(self, member):
        calls.append(member.index)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, member)
    monkeypatch.setattr(TrainContext, "score_member", interrupted)
    assert main(argv) == 130
    monkeypatch.setattr(TrainContext, "score_member", real)
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "arith").iterdir()
    first, second = by_method(offline_runs(run_dir))[("randopt", 0)]
    assert first["id"] == second["id"]
    assert first["exit_code"] not in (None, 0) and second["exit_code"] == 0
    # the member scored before Ctrl-C streamed in the first attempt; the rest in the second
    assert [h["curve/step"] for h in first["history"] if "curve/step" in h] == [1]
    assert [h["curve/step"] for h in second["history"] if "curve/step" in h] == [2, 3]


def test_summary_schema_without_wandb():
    rows = [{"name": "es", "label": "es", "k": 1, "accuracy": 0.5, "train_flops": 10.0, "wall_s": 3.0,
             "train_wall_s": 2.0, "n_test": 4, "test_flops_per_item": 1.0}] + \
           [{"name": "es+vote", "label": f"es+vote K={k}", "k": k, "accuracy": a, "train_flops": 10.0,
             "wall_s": 4.0, "train_wall_s": 2.0, "n_test": 4, "test_flops_per_item": float(k)}
            for k, a in ((1, 0.25), (5, 0.75))]
    assert tracking.method_summary("es", rows) == {
        "accuracy": 0.5, "accuracy_k1": 0.5, "test_flops_per_item": 1.0, "train_flops": 10.0, "wall_s": 4.0,
        "train_wall_s": 2.0, "n_test": 4, "es_vote/accuracy": 0.75, "es_vote/accuracy_k1": 0.25,
        "es_vote/accuracy_k5": 0.75, "es_vote/test_flops_per_item": 5.0}


def test_run_ids_are_deterministic_and_distinct(tmp_path):
    a = tracking.run_id(tmp_path / "run", "randopt", 0)
    assert a == tracking.run_id(tmp_path / "run", "randopt", 0)
    assert len({a, tracking.run_id(tmp_path / "run", "randopt", 1), tracking.run_id(tmp_path / "run", "es", 0),
                tracking.run_id(tmp_path / "other", "randopt", 0)}) == 4
    assert tracking.run_id(tmp_path, "mypkg.my method+x", 2).startswith("mypkg_my_method_x-s2-")


@pytest.mark.wandb
def test_wandb_failure_is_a_warning(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken(**kwargs):
        raise RuntimeError("no network")
    monkeypatch.setattr(wandb, "init", broken)
    with pytest.warns(UserWarning, match="W&B could not start"):
        log = tracking.start("thicket", "g", "n", {}, tmp_path)
    log.log({"x": 1})
    log.finish()  # the null logger: nothing raised
