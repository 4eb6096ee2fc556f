"""The report's selection-diagnostics section and its scatter plot, from seed<S>/diagnostics.json.

What the numbers mean is defined where they are computed (harness/diagnostics.py): per seed,
M of RandOpt's members scored on test, Spearman's rho between train score and test accuracy
with a bootstrap interval, and the oracle gap (top K by test minus top K by train). The
section says, every time, that this reads the test split and that no method may use it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.analysis import plots
from harness.analysis.doc import Heading, Image, Para, Table
from harness.analysis.rundir import Run, bad_value, is_number, read_checked
from harness.analysis.tables import flops, pct

WARNING = ("A diagnostic, not a method: these numbers read the test split, which no method may use "
           "for selection; they were computed by the harness after every method of the seed had written its "
           "rows, and their test FLOPs are charged to no method's budget.")


def diagnostics(run: Run) -> dict[int, dict]:
    """{seed: diagnostics.json} for the seeds that have one, each checked as it is read."""
    out = {}
    for seed in run.seeds:
        path = run.seed_dir(seed) / "diagnostics.json"
        if path.is_file():
            data = read_checked(path, dict)
            members = data.get("members")
            if not isinstance(members, list) or not all(
                    isinstance(m, dict) and is_number(m.get("train_score")) and is_number(m.get("test_accuracy"))
                    for m in members):
                raise bad_value(path, "members", members)
            if not isinstance(data.get("spearman"), dict) or not isinstance(data.get("oracle_gap"), dict):
                raise bad_value(path, "spearman / oracle_gap", (data.get("spearman"), data.get("oracle_gap")))
            out[seed] = data
    return out


def signed(x) -> str:
    return f"{x:+.3f}" if is_number(x) else "-"


@plots.styled
def plot_selection(run: Run) -> list[Path]:
    found = diagnostics(run)
    if not found:
        return []
    fig, (ax,) = plots._figure(1, width=6.4)
    for i, (seed, data) in enumerate(found.items()):
        x = np.array([m["train_score"] for m in data["members"]])
        y = np.array([m["test_accuracy"] for m in data["members"]])
        ax.scatter(100 * x, 100 * y, s=18, alpha=0.7, color=f"C{i}",
                   label=f"seed {seed}: rho {signed(data['spearman'].get('rho'))}")
    ax.set(xlabel="train score (%)", ylabel="test accuracy (%)",
           title="RandOpt members: train score against test accuracy (diagnostic)")
    plots._legend(ax)
    return [plots.save(fig, run.path / "plot_selection.png")]


def report_blocks(run: Run) -> list:
    found = diagnostics(run)
    if not found:
        return []
    ks = sorted({int(k) for d in found.values() for k in d["oracle_gap"]})
    header = ("seed", "members (of N)", "Spearman rho [95% CI]", *(f"oracle gap K={k} (pp)" for k in ks),
              "diagnostic test FLOPs (new evaluations)")
    rows = []
    for seed, d in found.items():
        rho = d["spearman"]
        lo, hi = rho.get("lo"), rho.get("hi")
        ci = f"[{signed(lo)}, {signed(hi)}]" if is_number(lo) and is_number(hi) else "[-]"
        rho_text = f"{signed(rho.get('rho'))} {ci}" if is_number(rho.get("rho")) else "undefined (a side is constant)"
        gaps = [d["oracle_gap"].get(str(k), {}) for k in ks]
        rows.append((str(seed), f"{d.get('m')} (of {d.get('population')}; {d.get('reused_from_randopt', 0)} read back "
                     "from randopt's rows)", rho_text,
                     *(f"{pct(g.get('gap'))} ({pct(g.get('top_by_test'))} - {pct(g.get('top_by_train'))})"
                       if g else "-" for g in gaps), flops(d.get("test_flops"))))
    image = plot_selection(run)
    return [Heading(2, "Selection diagnostics (test split: a diagnostic no method may use)"), Para(WARNING), Para(
        "For M of RandOpt's members (all of them when M >= N), each member's greedy test accuracy against its "
        "train score (the score RandOpt ranks by). Spearman rho: rank correlation of the two (tied values share "
        "their mean rank), with a 95% percentile bootstrap interval over members (2,000 resamples, seed 0). "
        "Oracle gap at K: mean test accuracy of the K members best on test minus that of the K best on train "
        "(RandOpt's choice among these M), in points, with the two means in brackets; 0 means the train score "
        "chose as well as the test split itself could have."), Table(header, tuple(rows))] + \
        [Image(p.name, "train score against test accuracy, RandOpt members") for p in image]

