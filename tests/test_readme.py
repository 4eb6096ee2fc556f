"""The README's "Adding a method" and "Adding a task" examples, cut out of README.md and run
through `thicket compare` on the tiny model: the documentation cannot rot unnoticed."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from harness.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def example(section: str) -> tuple[str, str]:
    """(file name, code) of the first ```python block under `## <section>`; the file name is
    the one the section says to create (`methods/<name>.py`, `tasks/<name>.py`)."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    (name,) = re.findall(r"One file, `\w+/(\w+)\.py`", body)[:1]
    code = re.search(r"```python\n(.*?)```", body, re.S)
    assert code, f"no python example under '## {section}'"
    return name, code.group(1)


@pytest.fixture
def readme_plugins(tmp_path, monkeypatch):
    package = tmp_path / "readme_examples"
    package.mkdir()
    (package / "__init__.py").write_text("")
    names = {}
    for section in ("Adding a method", "Adding a task"):
        name, code = example(section)
        (package / f"{name}.py").write_text(code, encoding="utf-8")
        names[section] = f"readme_examples.{name}"
    monkeypatch.syspath_prepend(str(tmp_path))
    return names


def test_readme_examples_run_through_compare(readme_plugins, tiny_model_dir, tmp_path, one_thread):
    method, task = readme_plugins["Adding a method"], readme_plugins["Adding a task"]
    results = tmp_path / "results"
    assert main(["compare", "--task", task, "--methods", f"base,{method}", "--model", tiny_model_dir,
                 "--budget", "smoke", "--n-train", "4", "--n-test", "6", "--k", "1",
                 "--set", f"{method}.per_round=2", "--results", str(results)]) == 0
    (run_dir,) = (results / task.rsplit(".", 1)[1]).iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["label"] for r in summary] == ["base", "best_of_n"]
    best = summary[1]
    assert 0 < best["train_flops"] <= best["budget_flops"]  # stayed in the budget
    assert best["info"]["rounds"] >= 1 and best["n_test"] == 6
    curve = [json.loads(line) for line in (run_dir / "seed0" / method / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == list(range(1, best["info"]["rounds"] + 1))
    assert curve[-1]["train_flops"] == best["train_flops"]  # logged against the FLOPs spent so far
    assert torch.get_num_threads() == 1


def test_readme_task_example_scores_answers(readme_plugins):
    import importlib

    task = importlib.import_module(readme_plugins["Adding a task"]).TASK
    item = task.load("test", None)[0]
    assert task.extract("The answer is 042.") == "42" and task.extract("no idea") == ""
    assert task.is_correct(task.extract(f"{item.gold}"), item)
    assert task.load("test", None) == task.load("test", None)  # the same items every run
