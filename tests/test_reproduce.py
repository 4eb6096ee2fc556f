"""reproduce: the reported numbers (paper_results.json) and the ours-vs-reported table."""
from __future__ import annotations

import json
import re
from argparse import Namespace
from pathlib import Path

import pytest

from harness.analysis import reproduce as rep
from harness.errors import UserError

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "docs" / "PAPER.md"
DATA = json.loads(rep.REPORTED.read_text())
QWEN3B = DATA["models"]["Qwen/Qwen2.5-3B-Instruct"]


@pytest.mark.parametrize("task, method, value", [
    ("gsm8k", "randopt", 87.1), ("countdown", "es+vote", 61.9), ("math500", "grpo", 64.6),
    ("olympiadbench", "es", 36.4), ("mbpp", "base", 69.5), ("gsm8k", "self_consistency", 82.5),
])
def test_reported_spot_checks(task, method, value):
    assert QWEN3B[task][method] == value


def test_other_models_and_density():
    assert DATA["label"] == "as reported"
    assert DATA["models"]["Qwen/Qwen2.5-1.5B-Instruct"]["gsm8k"] == {"base": 58.8, "grpo": 72.1, "es": 71.7,
                                                                     "randopt": 76.4}
    assert DATA["models"]["Qwen/Qwen2.5-0.5B-Instruct"]["gsm8k"] == {"base": 39.9, "randopt": 61.2}
    assert DATA["models"]["allenai/Olmo-3-7B-Instruct"]["countdown"] == {"base": 64.8, "randopt": 85.0}
    density = DATA["density"]
    assert (density["perturbations"], density["sigma"]) == (1000, 0.005)
    assert density["fraction_at_or_above_base_percent"]["Qwen2.5-3B"] == {"gsm8k": 37, "countdown": 54}


def test_qwen3b_table_matches_paper_md():
    """Every number of the Qwen2.5-3B lines in PAPER.md section 6, in its column order."""
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} not found")
    names = {"Countdown": "countdown", "GSM8K": "gsm8k", "MATH-500": "math500", "OlympiadBench": "olympiadbench",
             "MBPP": "mbpp"}
    columns = ("base", "ppo", "grpo", "es", "randopt", "es+vote")
    found = 0
    for line in PAPER_MD.read_text().splitlines():
        m = re.fullmatch(r"- (\S+) ([\d.]+(?: / [\d.]+){5})", line.strip())
        if m and m.group(1) in names:
            values = [float(v) for v in m.group(2).split(" / ")]
            assert {c: QWEN3B[names[m.group(1)]][c] for c in columns} == dict(zip(columns, values))
            found += 1
    assert found == 5


def rows(name, k, acc, seed=0):
    return {"name": name, "label": name if k == 1 else f"{name} K={k}", "k": k, "accuracy": acc, "seed": seed}


def test_comparison_table():
    summary = [rows("base", 1, 0.80), rows("base", 1, 0.78, seed=1),
               rows("randopt", 1, 0.85), rows("randopt", 5, 0.90),
               rows("self_consistency", 1, 0.5), rows("self_consistency", 5, 0.83)]
    text = rep.comparison("qwen2.5-3b-gsm8k", summary, "Qwen/Qwen2.5-3B-Instruct", "paper",
                          notes=["ppo: not available here, skipped"])
    lines = text.splitlines()
    assert "| base | 79.0 | 1 | 79.8 | 1 | -0.8 |" in lines  # mean over seeds
    assert "| randopt | 90.0 | 5 | 87.1 | 50 | +2.9 |" in lines  # the largest K run
    assert "| self_consistency | 83.0 | 5 | 82.5 | 50 | +0.5 |" in lines
    assert "| ppo | - | - | 83.1 | 1 | - |" in lines
    assert "| es+vote | - | - | 87.9 | 50 | - |" in lines
    assert "- ppo: not available here, skipped" in lines
    assert "Not comparable" not in text and "not the paper's" not in text


def test_comparison_flags_model_and_budget():
    text = rep.comparison("qwen2.5-0.5b-gsm8k", [rows("base", 1, 0.1)], "smollm2", "smoke")
    assert "Not comparable: different model" in text and "Budget 'smoke', not the paper's" in text
    assert "| randopt |" in text and "| ppo |" not in text  # only what the table reports


@pytest.mark.parametrize("name, task", [("qwen2.5-3b-olympiadbench", "olympiadbench"), ("qwen2.5-3b-mbpp", "mbpp")])
def test_table4_rows_for_the_new_tasks(name, task):
    table = rep.get_table(name)
    assert (table.task, table.model, table.methods) == (task, "Qwen/Qwen2.5-3B-Instruct", rep.TABLE4)
    assert rep.reported(name) == QWEN3B[task] and len(QWEN3B[task]) == 6
    text = rep.comparison(name, [rows("base", 1, 0.25), rows("es+vote", 5, 0.40)], None, "smoke")
    body = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert body == ["| method", "| base", "| ppo", "| grpo", "| es", "| randopt", "| es+vote"]
    assert f"| base | 25.0 | 1 | {QWEN3B[task]['base']:.1f} | 1 |" in text
    assert f"| es+vote | 40.0 | 5 | {QWEN3B[task]['es+vote']:.1f} | 50 |" in text


def test_unknown_table():
    with pytest.raises(UserError, match="qwen2.5-3b-gsm8k"):
        rep.get_table("llama-gsm8k")
    with pytest.raises(UserError, match="unknown table"):
        rep.run(Namespace(list=False, table="nope", methods=None))


def test_list(capsys):
    assert rep.run(Namespace(list=True, table=None)) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in rep.TABLES)


def test_every_table_has_reported_numbers():
    for name, table in rep.TABLES.items():
        assert set(rep.reported(name)) - {"es+vote"} <= set(table.methods), name


def test_reproduce_end_to_end_on_the_tiny_model(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the tiny model: one thread is fastest
    args = Namespace(list=False, table="qwen2.5-0.5b-gsm8k", model=tiny_model_dir, budget="smoke",
                     data_dir=data_dir, methods=None, n_train=2, n_test=4, max_new_tokens=4, seeds=1,
                     k=(1, 2), set=["randopt.population=2"], results=str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert rep.run(args) == 0
    finally:
        monkeypatch.undo()
        torch.set_num_threads(threads)
    (out,) = tmp_path.glob("gsm8k/*/reproduce.md")
    text = out.read_text()
    assert "Not comparable: different model" in text
    assert re.search(r"\| base \| [\d.]+ \| 1 \| 39\.9 \| 1 \| [+-][\d.]+ \|", text)
    assert re.search(r"\| randopt \| [\d.]+ \| 2 \| 61\.2 \| 50 \| [+-][\d.]+ \|", text)


def test_reproduce_mbpp_on_the_tiny_model(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """A Table 4 row runs at a small budget like the others: model-written code goes through the sandbox."""
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    args = Namespace(list=False, table="qwen2.5-3b-mbpp", model=tiny_model_dir, budget="smoke", data_dir=data_dir,
                     methods="base", n_train=2, n_test=3, max_new_tokens=4, seeds=1, k=None, set=[],
                     results=str(tmp_path))
    assert rep.run(args) == 0
    (out,) = tmp_path.glob("mbpp/*/reproduce.md")
    text = out.read_text()
    assert re.search(r"\| base \| [\d.]+ \| 1 \| 69\.5 \| 1 \| [+-][\d.]+ \|", text)
    assert "- ppo: not run (--methods)" in text and "| es+vote | - | - | 76.3 | 50 | - |" in text


def test_runnable_notes_what_is_not_run(monkeypatch):
    import harness.method

    def fake_get_method(name):
        if name == "ppo":
            raise UserError("unknown method 'ppo'")
        return object

    monkeypatch.setattr(harness.method, "get_method", fake_get_method)
    table = rep.get_table("qwen2.5-3b-gsm8k")
    out = dict(rep.runnable(table, "base,randopt,ppo"))
    assert out["base"] is None and out["randopt"] is None
    assert out["ppo"] == "not available here, skipped" and out["es"] == "not run (--methods)"
    with pytest.raises(UserError, match="reports"):
        rep.runnable(table, "base,magic")
