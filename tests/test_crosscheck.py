"""crosscheck: lm-eval's gsm8k task re-scores a run's single-model rows item by item.

A real run (the harness pipeline on the tiny random model, 4 gsm8k items) is re-scored by
lm-eval offline; the agreement computation is checked on synthetic inputs."""
from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest

from harness.analysis import crosscheck as cc
from harness.compare import compare
from harness.config import RunOptions, protocol_from
from harness.errors import UserError


pytestmark = pytest.mark.usefixtures("one_thread")


def sample(response: str, flexible: bool, strict: bool = False, answer: str = "") -> dict:
    return {"response": response, "flexible-extract": {"answer": answer, "correct": flexible},
            "strict-match": {"answer": answer, "correct": strict}}


def test_compare_items_counts_and_lists_disagreements():
    items = [("gsm8k-test-0", "18", "18"), ("gsm8k-test-1", "3", "4"), ("gsm8k-test-2", "70000", ""),
             ("gsm8k-test-3", "540", "540")]
    harness = [True, False, False, True]
    samples = [sample("#### 18", True, True, "18"), sample("so 3 bolts", True, False, "3"),
               sample("no idea", False), sample("x" * 500, False, False, "5")]
    out = cc.compare_items(items, harness, samples, response_chars=10)
    assert (out["n"], out["agree"], out["agreement"]) == (4, 2, 0.5)
    assert out["harness_accuracy"] == 0.5 and out["lm_eval_accuracy"] == 0.5
    assert out["lm_eval_strict_accuracy"] == 0.25
    assert out["answers_identical"] == 2  # "18" == "18", "" == normalised "" (no number)
    assert [d["id"] for d in out["disagreements"]] == ["gsm8k-test-1", "gsm8k-test-3"]
    first, second = out["disagreements"]
    assert first == {"id": "gsm8k-test-1", "gold": "3", "harness_vote": "4", "harness_correct": False,
                     "lm_eval_answer": "3", "lm_eval_response": "so 3 bolts", "lm_eval_correct": True}
    assert second["lm_eval_response"] == "x" * 10 and second["harness_correct"] is True


def test_compare_items_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        cc.compare_items([("a", "1", "1")], [True, False], [sample("1", True)])


def test_weights_by_convention(tmp_path):
    assert cc.weights_path(tmp_path, "base") is None
    assert cc.weights_path(tmp_path, "grpo") is False  # nothing saved: the row is skipped
    (tmp_path / "theta.json").write_text(json.dumps({"iteration": 3}))
    (tmp_path / "theta-0003.safetensors").write_bytes(b"")
    assert cc.weights_path(tmp_path, "es") == tmp_path / "theta-0003.safetensors"
    (tmp_path / "ppo.safetensors").write_bytes(b"")
    assert cc.weights_path(tmp_path, "ppo") == tmp_path / "ppo.safetensors"


def test_only_gsm8k_runs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"protocol": {"task": "arith"}, "seeds": [0]}))
    with pytest.raises(UserError, match="gsm8k"):
        cc.crosscheck(tmp_path, ["base"])
    with pytest.raises(UserError, match="not found"):
        cc.crosscheck(tmp_path / "missing", ["base"])


def test_crosscheck_a_real_run(tiny_model_dir, data_dir, tmp_path):
    protocol = protocol_from("gsm8k", "smoke", model=tiny_model_dir, data_dir=data_dir, n_train=2, n_test=4,
                             max_new_tokens=8, k=(1,))
    run_dir = compare(protocol, methods=["base"], options=RunOptions(results=str(tmp_path)))
    assert cc.run(Namespace(run_dir=str(run_dir), rows="base,es", limit=None)) == 0
    report = json.loads((Path(run_dir) / "crosscheck.json").read_text())
    (row,) = report["rows"]  # es was not run: skipped with a message
    assert (row["label"], row["seed"], row["n"]) == ("base", 0, 4)
    assert 0.0 <= row["agreement"] <= 1.0 and row["agree"] == 4 - len(row["disagreements"])
    assert row["prompts_identical"] == 4  # lm-eval saw exactly the harness's prompts
    assert row["max_new_tokens"] == 8
    assert 0 <= row["responses_identical"] <= 4 and 0 <= row["answers_identical"] <= 4
