"""crosscheck: lm-eval's gsm8k task re-scores a run's single-model rows item by item.

A real run (the harness pipeline on the tiny random model, 4 gsm8k items) is re-scored by
lm-eval offline, with and without the model; the agreement computation is checked on
synthetic inputs, and lm-eval's gsm8k filters are compared with thicket's scorer on texts
built from real gsm8k solutions, where many answers are right (the tiny model gets none)."""
from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest

from harness.analysis import agreement
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
    out = agreement.compare_items(items, harness, samples, response_chars=10)
    assert (out["n"], out["agree"], out["agreement"]) == (4, 2, 0.5)
    assert out["harness_accuracy"] == 0.5 and out["lm_eval_accuracy"] == 0.5
    assert out["lm_eval_strict_accuracy"] == 0.25
    assert out["answers_identical"] == 2  # "18" == "18", "" == normalised "" (no number)
    assert out["either_correct"] == 3  # items 0, 1 and 3: one scorer or both mark them correct
    assert [d["id"] for d in out["disagreements"]] == ["gsm8k-test-1", "gsm8k-test-3"]
    first, second = out["disagreements"]
    assert first == {"id": "gsm8k-test-1", "gold": "3", "harness_vote": "4", "harness_correct": False,
                     "lm_eval_answer": "3", "lm_eval_response": "so 3 bolts", "lm_eval_correct": True}
    assert second["lm_eval_response"] == "x" * 10 and second["harness_correct"] is True


def test_compare_items_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        agreement.compare_items([("a", "1", "1")], [True, False], [sample("1", True)])


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


@pytest.fixture(scope="module")
def gsm8k_run(tiny_model_dir, data_dir, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        protocol = protocol_from("gsm8k", "smoke", model=tiny_model_dir, data_dir=data_dir, n_train=2, n_test=4,
                                 max_new_tokens=8, k=(1,))
        return compare(protocol, methods=["base"], options=RunOptions(results=str(tmp_path_factory.mktemp("results"))))
    finally:
        torch.set_num_threads(threads)


def test_crosscheck_a_real_run(gsm8k_run):
    run_dir = gsm8k_run
    assert cc.run(Namespace(run_dir=str(run_dir), rows="base,es", limit=None, no_model=False)) == 0
    report = json.loads((Path(run_dir) / "crosscheck.json").read_text())
    (row,) = report["rows"]  # es was not run: skipped with a message
    assert (row["label"], row["seed"], row["n"]) == ("base", 0, 4)
    assert 0.0 <= row["agreement"] <= 1.0 and row["agree"] == 4 - len(row["disagreements"])
    assert row["prompts_identical"] == 4  # lm-eval saw exactly the harness's prompts
    assert row["max_new_tokens"] == 8
    assert 0 <= row["responses_identical"] <= 4 and 0 <= row["answers_identical"] <= 4
    assert 0 <= row["either_correct"] <= 4


def test_crosscheck_without_a_model_on_the_stored_texts(gsm8k_run, monkeypatch):
    import harness.engine.model

    monkeypatch.setattr(harness.engine.model, "load_model", lambda *a, **k: pytest.fail("no model may load"))
    assert cc.run(Namespace(run_dir=str(gsm8k_run), rows="base", limit=None, no_model=True)) == 0
    (row,) = json.loads((Path(gsm8k_run) / "crosscheck-texts.json").read_text())["rows"]
    assert (row["label"], row["n"], row["stored_verdicts_reproduced"]) == ("base", 4, 4)
    from harness.analysis.report import build_report

    md, _ = build_report(gsm8k_run)
    assert "without a model: lm-eval's gsm8k filters on the stored texts (crosscheck-texts.json)" in md.read_text()


# ---- both scorers on texts where answers are right --------------------------------------------

def gold_texts(data_dir: str, n: int = 40):
    """Texts a model could write for the first n gsm8k test items, in five forms: the gold
    solution itself, the solution with its final number changed, a bare "#### n", the answer
    as the last number of a sentence, and "#### n" followed by a check with other numbers."""
    from tasks.gsm8k import TASK, normalize_number

    rows = cc.gsm8k_test_rows(data_dir, n)
    items = TASK.load("test", data_dir)[:n]
    texts = []
    for i, (row, item) in enumerate(zip(rows, items)):
        gold, form = item.gold, i % 5
        body = row["answer"].rsplit("####", 1)[0]
        wrong = normalize_number(str(int(float(gold)) + 7)) if "." not in gold else gold + "1"
        texts.append([row["answer"], f"{body}#### {wrong}", f"#### {gold}",
                      f"So she has {gold} left.", f"#### {gold}\nCheck: 2 + 3 = 5"][form])
    return [it.id for it in items], texts, items, [r["answer"] for r in rows]


def test_lm_eval_filters_and_thicket_scorer_on_the_same_texts(data_dir):
    ids, texts, items, answers = gold_texts(data_dir)
    result, correct = agreement.score_texts(ids, texts, items, answers)
    forms = [i % 5 for i in range(len(texts))]
    # thicket: strict "#### n" first, else the last number; right wherever the gold number is given
    assert [c for c, f in zip(correct, forms)] == [f != 1 for f in forms]
    verdicts = agreement.lm_eval_verdicts(texts, answers)
    flexible = [v["flexible-extract"]["correct"] for v in verdicts]
    strict = [v["strict-match"]["correct"] for v in verdicts]
    assert all(flexible[i] for i, f in enumerate(forms) if f in (0, 2, 3))
    assert not any(flexible[i] or strict[i] for i, f in enumerate(forms) if f == 1)
    assert not any(strict[i] for i, f in enumerate(forms) if f == 3)  # no "####": strict finds nothing
    # the known difference: lm-eval's flexible filter takes the LAST number, after "#### n" too
    assert not any(flexible[i] for i, f in enumerate(forms) if f == 4)
    assert {d["id"] for d in result["disagreements"]} == {ids[i] for i, f in enumerate(forms) if f == 4}
    assert result["either_correct"] == 32 and result["agree"] == 32 and result["n"] == 40
    assert agreement.agreement_text(result) == "32/40 (80.0%)"
