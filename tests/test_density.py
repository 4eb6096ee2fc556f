"""density: delta(m) over random perturbations, on the tiny random model and the arith task."""
from __future__ import annotations

import json
from argparse import Namespace

import pytest

from harness.analysis import density as dens
from harness.errors import UserError
from harness.evaluate import Evaluator

SIGMAS = (2e-3, 2e-2)
MARGINS = (-0.25, 0.0, 0.25, 0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


def args(model: str, results: str, **over) -> Namespace:
    values = dict(task="arith", model=model, data_dir=None, budget="smoke", sigmas=SIGMAS, members=2,
                  margins=MARGINS, n_test=4, max_new_tokens=None, batch_size=None, noise="iid", seed=0,
                  results=results)
    values.update(over)
    return Namespace(**values)


@pytest.mark.parametrize("accs, base, margin, expected", [
    ([0.1, 0.2, 0.3, 0.4], 0.2, 0.0, 0.75),
    ([0.1, 0.2, 0.3, 0.4], 0.2, 0.1, 0.5),
    ([0.1, 0.2, 0.3, 0.4], 0.2, -0.1, 1.0),
    ([0.7, 0.7], 0.6, 0.1, 1.0),  # 0.6 + 0.1 > 0.7 in floats; still counted
    ([0.0], 0.0, 0.01, 0.0),
])
def test_delta(accs, base, margin, expected):
    assert dens.delta(accs, base, margin) == expected


def test_ties_are_not_a_thicket():
    """delta(0) counts ties (the paper's definition); above / equal / below keep them apart:
    eight perturbations tied with a base at 0% are 0 above, 8 equal, not a 100% thicket."""
    assert dens.delta([0.0] * 8, 0.0, 0.0) == 1.0
    assert dens.versus_base([0.0] * 8, 0.0) == (0, 8, 0)
    assert dens.versus_base([0.1, 0.2, 0.2, 0.3, 0.7 - 0.5], 0.2) == (1, 3, 1)  # 0.7 - 0.5 != 0.2 in floats
    report = {"base_accuracy": 0.0, "n_test": 4, "margins": [0.0],
              "curves": [{"sigma": 0.005, "accuracies": [0.0] * 8, "delta": [{"margin": 0.0, "fraction": 1.0}]}]}
    assert "| 0.005 | 8 | 0.0% | 0.0% | 0 / 8 / 0 | 1.00 |" in dens.markdown(report)


def test_density_writes_curves_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    original = Evaluator.voter_record
    monkeypatch.setattr(Evaluator, "voter_record", lambda self, v: calls.append(v.label) or original(self, v))
    assert dens.run(args(tiny_model_dir, str(tmp_path))) == 0
    assert len(calls) == 1 + len(SIGMAS) * 2  # base + members x sigmas
    (out,) = (tmp_path / "arith").glob("density-*")
    for name in ("density.json", "density.md", "density.png", "config.json"):
        assert (out / name).is_file()
    report = json.loads((out / "density.json").read_text())
    assert report["n_test"] == 4 and 0 <= report["base_accuracy"] <= 1
    assert [c["sigma"] for c in report["curves"]] == list(SIGMAS)
    for curve in report["curves"]:
        assert curve["above"] + curve["equal"] + curve["below"] == 2
        fractions = [d["fraction"] for d in curve["delta"]]
        assert all(0 <= f <= 1 for f in fractions)
        assert fractions == sorted(fractions, reverse=True)  # non-increasing in m
        assert len(curve["accuracies"]) == 2
    # the same directions at every sigma: only the scale changes
    assert report["curves"][0]["seeds"] == report["curves"][1]["seeds"]
    records = {p.name: p.read_text() for p in out.glob("*.jsonl")}

    calls.clear()
    assert dens.run(args(tiny_model_dir, str(tmp_path), margins=(0.0, 0.1))) == 0  # new margins: same folder
    assert calls == []  # nothing re-scored
    assert {p.name: p.read_text() for p in out.glob("*.jsonl")} == records
    again = json.loads((out / "density.json").read_text())
    assert again["base_accuracy"] == report["base_accuracy"] and again["margins"] == [0.0, 0.1]
    assert "δ(+0 pp)" in (out / "density.md").read_text()


def test_density_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="budget"):
        dens.run(args(None, str(tmp_path), budget="huge"))
    with pytest.raises(UserError, match="sigma"):
        dens.density("arith", sigmas=(0.0,), results=str(tmp_path))
    with pytest.raises(UserError, match="noise"):
        dens.density("arith", noise="pink", results=str(tmp_path))
