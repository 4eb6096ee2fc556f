"""W&B: offline runs, one per method and seed, grouped per comparison; failures never fail a run."""
from __future__ import annotations

import pytest
import torch

from harness import tracking
from harness.cli import main


@pytest.mark.wandb
def test_offline_runs_grouped_per_comparison(tiny_model_dir, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    seen = []
    real_init = wandb.init

    def recording_init(**kwargs):
        run = real_init(**kwargs)
        seen.append((run.group, run.name, run.project))
        return run
    monkeypatch.setattr(wandb, "init", recording_init)

    results = tmp_path / "results"
    assert main(["compare", "--task", "arith", "--methods", "base,randopt", "--model", tiny_model_dir,
                 "--budget", "smoke", "--n-train", "4", "--n-test", "4", "--max-new-tokens", "4", "--k", "1",
                 "--set", "population=2", "--seeds", "2", "--results", str(results)]) == 0
    (run_dir,) = (results / "arith").iterdir()
    group = f"arith-{run_dir.name}"
    assert seen == [(group, "base-seed0", "thicket"), (group, "randopt-seed0", "thicket"),
                    (group, "base-seed1", "thicket"), (group, "randopt-seed1", "thicket")]
    offline = list((run_dir / "wandb" / "wandb").glob("offline-run-*"))
    assert len(offline) == 4


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
