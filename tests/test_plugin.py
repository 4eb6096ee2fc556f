"""A method and a task from outside the repository, found by dotted path like built-in ones."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from harness.cli import main

METHOD = '''
"""one_member: a single perturbed member, to show that a method is one file."""
from dataclasses import dataclass

from harness.context import Member
from harness.method import Ensemble, Method, Voter


@dataclass(frozen=True)
class Config:
    sigma: float = 0.01
    """Noise scale of the member."""


class OneMember(Method):
    name = "one_member"
    Config = Config

    def train(self, ctx):
        [score] = ctx.score_population([Member(0, 1234, self.config.sigma)], "members")
        return [Ensemble("one_member", [Voter("m0", seed=1234, sigma=self.config.sigma)], ks=(1,),
                         info={"train_score": score})]


METHOD = OneMember
'''

TASK = '''
from harness.task import Item
from tasks.arith import Arith


class Doubling(Arith):
    name = "doubling"

    def load(self, split, data_dir):
        return [Item(f"d-{split}-{i}", ({"role": "user", "content": f"What is {i} + {i}?"},), str(2 * i))
                for i in range(10, 30)]


TASK = Doubling()
'''


@pytest.fixture
def outside_package(tmp_path, monkeypatch):
    package = tmp_path / "myplugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one_member.py").write_text(textwrap.dedent(METHOD))
    (package / "doubling.py").write_text(textwrap.dedent(TASK))
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.set_num_threads(1)
    return package


def test_outside_method_and_task_run_through_compare(outside_package, tiny_model_dir, tmp_path):
    results = tmp_path / "results"
    rc = main(["compare", "--task", "myplugins.doubling", "--methods", "base,myplugins.one_member",
               "--model", tiny_model_dir, "--budget", "smoke", "--n-train", "4", "--n-test", "4",
               "--max-new-tokens", "4", "--k", "1", "--set", "myplugins.one_member.sigma=0.02",
               "--results", str(results)])
    assert rc == 0
    (run_dir,) = (results / "doubling").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["label"] for r in summary] == ["base", "one_member"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["methods"]["myplugins.one_member"] == {"sigma": 0.02}
    assert (run_dir / "seed0" / "myplugins.one_member" / "members.rank0.jsonl").is_file()


def test_outside_module_without_method_is_a_clear_error(outside_package, capsys):
    assert main(["compare", "--task", "arith", "--methods", "myplugins.doubling"]) == 2
    assert "defines no METHOD" in capsys.readouterr().err
