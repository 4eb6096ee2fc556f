"""End to end on the real embedded SmolLM2-135M-Instruct (slow: converts it on first use)."""
from __future__ import annotations

import json

import pytest

from harness.cli import main


@pytest.mark.slow
def test_compare_arith_smoke_on_smollm2(tmp_path):
    rc = main(["compare", "--task", "arith", "--budget", "smoke", "--n-train", "16", "--n-test", "32",
               "--methods", "base,self_consistency,randopt", "--k", "1,3", "--set", "population=4",
               "--results", str(tmp_path)])
    assert rc == 0
    (run_dir,) = (tmp_path / "arith").iterdir()
    rows = {r["label"]: r for r in json.loads((run_dir / "summary.json").read_text())}
    assert list(rows) == ["base", "self_consistency K=1", "self_consistency K=3", "randopt K=1", "randopt K=3"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_test"] == 32 for r in rows.values())
    assert rows["base"]["accuracy"] > 0  # SmolLM2 adds two-digit numbers some of the time
    members = (run_dir / "seed0" / "randopt" / "members.rank0.jsonl").read_text().splitlines()
    assert len(members) == 4
    assert len((run_dir / "seed0" / "predictions.jsonl").read_text().splitlines()) == 32
