"""Building a TrainContext on a small model without running a whole comparison."""
from __future__ import annotations

from pathlib import Path

from harness.runs import distributed as dist
from harness.budget.compute import Ledger
from harness.config import protocol_from
from harness.context import TrainContext
from harness.engine.native import NativeEngine, render
from harness.engine.model import load_model
from harness.splits import train_items
from harness.task import get_task


def make_context(model_dir: str, out_dir: Path, budget: float | None = None, task: str = "arith",
                 **protocol) -> TrainContext:
    settings = {"n_train": 4, "n_test": 4, "max_new_tokens": 4, "k": (1,), **protocol}
    proto = protocol_from(task, "smoke", model=model_dir, **settings)
    the_task = get_task(task)
    model, tokenizer = load_model(model_dir, dist.device())  # as `thicket compare` loads it
    engine = NativeEngine(model, tokenizer, 8)
    items = train_items(the_task, proto)
    batches = engine.prepare([render(tokenizer, it.messages) for it in items])
    ledger = Ledger(engine.n_params, budget)
    out_dir.mkdir(parents=True, exist_ok=True)
    return TrainContext(proto, the_task, model, tokenizer, engine, ledger, items, batches, out_dir)


# ---- bad input through the command line: one line on stderr, exit status 2 ----------------

def fail_if_model_loads(monkeypatch):
    """Make loading the model's weights fail the test: the input must be refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")
    monkeypatch.setattr("harness.compare.load_model", refuse)


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and exactly one line on stderr; return that line."""
    from harness.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("thicket: error: "), err
    return lines[0]


def base_args(model_dir: str, results, task: str = "arith") -> list[str]:
    return ["compare", "--task", task, "--model", model_dir, "--budget", "smoke", "--n-train", "4",
            "--n-test", "4", "--max-new-tokens", "4", "--results", str(results)]
