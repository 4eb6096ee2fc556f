"""Figures of a finished run, drawn from its stored files (harness.analysis.rundir), written as PNGs.

- plot_flops:   train reward against training FLOPs (ES/GRPO/PPO curves, RandOpt's best
                member so far as the population grows) and each row's test accuracy at its
                total training FLOPs.
- plot_thicket: RandOpt member train scores minus the base model's: how dense good
                perturbations are around the pretrained weights (docs/paper.md section 6,
                "thickets"); members above, equal to and below base are counted apart.
- plot_k:       accuracy against K for every voting ensemble: RandOpt beside
                self-consistency at equal test-time generations.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot global state,
no display) and saved without the Software tag, so the same files give the same bytes.
Degenerate data keeps readable axes: all-equal accuracies get 0-100, FLOPs axes whole decades
with "2e13"-style ticks, K axes room for their end markers; NaN or missing points are dropped.
"""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from harness.analysis.axes import TIE, flops_axis, value_axis
from harness.analysis.rundir import Run, is_number, load
from harness.runs.results import mean_std

matplotlib.rcParams["svg.hashsalt"] = "thicket"  # SVG ids are random otherwise
ORDER = ("base", "self_consistency", "randopt", "es", "es+vote", "grpo", "ppo", "iterative_randopt")
DODGE = 1.06
"""Sideways spread (a factor on the log FLOPs axis) between test-accuracy markers."""
STYLE = {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8}


def color(name: str) -> str:
    """A fixed colour per method/ensemble name, whatever subset of methods ran."""
    i = ORDER.index(name) if name in ORDER else len(ORDER) + sum(map(ord, name))
    return f"C{i % 10}"


def save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})  # no version/time stamp
    return path


def _figure(ncols: int, width: float = 5.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, 3.8), layout="constrained")
    axes = [fig.add_subplot(1, 1 if ncols == 1 else ncols, 1)]
    # Panels share the x axis: budget-matched methods sit at nearly the same FLOPs, and a
    # panel zoomed onto them alone would hide that behind ticks like 1.0115e12.
    return fig, axes + [fig.add_subplot(1, ncols, i + 1, sharex=axes[0]) for i in range(1, ncols)]


def styled(plot):
    """Run a plot function under STYLE only, leaving the caller's rcParams as they were;
    it takes a loaded Run or a run folder."""
    @functools.wraps(plot)
    def wrapper(run) -> list[Path]:
        with matplotlib.rc_context(STYLE):
            return plot(run if isinstance(run, Run) else load(run))
    return wrapper


# ---- training FLOPs --------------------------------------------------------------------------

def best_so_far(members: list[dict], n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative train FLOPs (2*P*tokens per member, index order) and the best score so far."""
    flops = np.cumsum([2.0 * n_params * m["tokens"] for m in members])
    return flops, np.maximum.accumulate([m["score"] for m in members])


def _curves(run: Run, ax) -> list[float]:
    """Draw the learning curves; return their x values (the caller sets the shared FLOPs axis)."""
    labelled, xs, ys = set(), [], []

    def line(name, x, y, **kw):
        ax.plot(x, y, color=color(name), label=None if name in labelled else name, **kw)
        labelled.add(name)
        xs.extend(x)
        ys.extend(y)

    for seed in run.seeds:
        ledger = run.ledger(seed, "randopt")
        members = run.members(seed)
        if members and ledger:
            x, y = best_so_far(members, ledger["n_params"])
            line("randopt", list(x), list(y), drawstyle="steps-post")
        for folder in run.method_dirs(seed):
            if folder.name == "randopt" and members:
                continue  # drawn from its members above (its curve.jsonl streams the same points)
            curve = [c for c in run.curve(seed, folder.name) if is_number(c.get("train_reward"))]
            if curve:
                line(folder.name, [c["train_flops"] for c in curve], [c["train_reward"] for c in curve],
                     marker=".")
    if run.base_train:
        base = mean_std(list(run.base_train.values()))[0]
        ax.axhline(base, color=color("base"), ls="--", label="base")
        ys.append(base)
    if is_number(run.config.get("budget_flops")):
        ax.axvline(run.config["budget_flops"], color="0.4", ls=":", label="budget")
        xs.append(run.config["budget_flops"])
    value_axis(ax, ys, (0.0, 1.0), 0.05)
    ax.set(xlabel="training FLOPs", ylabel="train reward",
           title="train reward (RandOpt: best member so far; ES: population mean)")
    _legend(ax)
    return xs


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend warns and draws a box
        ax.legend(loc="best")


def _test_markers(run: Run, ax) -> list[float]:
    """Trained rows as markers at their FLOPs; untrained rows (base, largest-K votes) as lines.
    Returns the markers' x values."""
    groups = run.groups()
    top_k = {}
    for g in groups:
        top_k[g[0]["name"]] = max(top_k.get(g[0]["name"], 0), g[0]["k"])
    markers = "os^vDP*Xh"
    trained = [g for g in groups if mean_std([x["train_flops"] or 0.0 for x in g])[0] > 0]
    xs, ys = [], []
    for i, g in enumerate(groups):
        r = g[0]
        acc, std = mean_std([100 * x["accuracy"] for x in g])
        flops = mean_std([x["train_flops"] or 0.0 for x in g])[0]
        ys += [acc - std, acc + std]
        if flops > 0:
            # Budget-matched rows share one x; dodge them sideways a little so none hides another.
            dodge = DODGE ** (trained.index(g) - (len(trained) - 1) / 2)
            ax.errorbar([flops * dodge], [acc], yerr=[std], fmt=markers[i % len(markers)],
                        color=color(r["name"]), label=r["label"], capsize=3)
            xs.append(flops * dodge)
        elif r["k"] == top_k[r["name"]]:
            ax.axhline(acc, color=color(r["name"]), ls="--", label=f"{r['label']} (no training)")
    value_axis(ax, ys, (0.0, 100.0), 2.0)
    ax.set(xlabel="training FLOPs (measured)", ylabel="test accuracy (%)",
           title="test accuracy at total training FLOPs")
    _legend(ax)
    return xs


@styled
def plot_flops(run: Run) -> list[Path]:
    fig, (left, right) = _figure(2)
    xs = _curves(run, left) + _test_markers(run, right)
    if is_number(run.config.get("budget_flops")):
        right.axvline(run.config["budget_flops"], color="0.4", ls=":")
    for ax in (left, right):  # one shared axis: both panels over every x drawn
        flops_axis(ax, xs)
    return [save(fig, run.path / "plot_flops.png")]


# ---- the thicket histogram -------------------------------------------------------------------

def deltas(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(member score - that seed's base train score, member sigma), pooled over seeds."""
    d, s = [], []
    for seed in run.seeds:
        if seed in run.base_train:
            for m in run.members(seed):
                d.append(m["score"] - run.base_train[seed])
                s.append(m["sigma"])
    return np.asarray(d, dtype=float), np.asarray(s, dtype=float)


def thicket_counts(d: np.ndarray) -> tuple[int, int, int]:
    """Members strictly above base, equal to it, below it (ties within TIE)."""
    return int(np.sum(d > TIE)), int(np.sum(np.abs(d) <= TIE)), int(np.sum(d < -TIE))


def bin_edges(values: np.ndarray) -> np.ndarray:
    """One bin per attainable score difference when scores are coarse (n_train/len steps), else 30."""
    unique = np.unique(np.round(values, 9))
    step = np.min(np.diff(unique)) if unique.size > 1 else 0.05
    if (unique[-1] - unique[0]) / step <= 60:
        return np.arange(unique[0] - step / 2, unique[-1] + step, step)
    return np.histogram_bin_edges(values, 30)


@styled
def plot_thicket(run: Run) -> list[Path]:
    d, sigmas = deltas(run)
    if d.size == 0:
        return []
    seeds = [s for s in run.seeds if s in run.base_train and run.members(s)]
    fig, (ax,) = _figure(1, width=6.4)
    levels = sorted(set(sigmas.tolist()))
    edges = bin_edges(d)
    ax.hist([d[sigmas == s] for s in levels], bins=edges, stacked=True,
            label=[f"sigma={s:g}" for s in levels], color=[f"C{i}" for i in range(len(levels))],
            edgecolor="white", linewidth=0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # member counts
    ax.axvline(0, color="k", lw=1)
    width = max(edges[-1] - edges[0], 0.1)  # a single bin (every member tied) still gets room
    ax.set_xlim(min(edges[0], 0) - 0.1 * width, max(edges[-1], 0) + 0.1 * width)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # headroom: the annotation and legend sit above the bars
    above, equal, below = thicket_counts(d)
    ax.text(0.02, 0.95, f"above base: {above}/{d.size} ({100 * above / d.size:.1f}%)\n"
            f"equal: {equal}, below: {below}", transform=ax.transAxes, va="top",
            bbox={"facecolor": "white", "alpha": 0.8})
    ax.set(xlabel="member train score - base train score", ylabel="members",
           title=f"RandOpt population around the base weights (seeds {', '.join(map(str, seeds))})")
    ax.legend(loc="upper right")
    return [save(fig, run.path / "plot_thicket.png")]


# ---- accuracy against K ----------------------------------------------------------------------

def k_series(run: Run) -> dict[str, list[tuple[int, float, float]]]:
    """{ensemble name: [(K, mean acc %, std %)]} for ensembles reported at several K."""
    series: dict[str, list] = {}
    for g in run.groups():
        acc, std = mean_std([100 * x["accuracy"] for x in g])
        series.setdefault(g[0]["name"], []).append((g[0]["k"], acc, std))
    return {n: sorted(v) for n, v in series.items() if len(v) > 1}


@styled
def plot_k(run: Run) -> list[Path]:
    fig = k_figure(run)
    return [save(fig, run.path / "plot_k.png")] if fig else []


def k_figure(run: Run) -> Figure | None:
    series = k_series(run)
    if not series:
        return None
    fig, (ax,) = _figure(1, width=6.4)
    for name, points in series.items():
        k, acc, std = zip(*points)
        ax.errorbar(k, acc, yerr=std, marker="o", color=color(name), label=name, capsize=3)
    ys = [acc + sign * std for points in series.values() for _, acc, std in points for sign in (-1, 1)]
    base = [g for g in run.groups() if g[0]["label"] == "base"]
    if base:
        ys.append(mean_std([100 * x["accuracy"] for x in base[0]])[0])
        ax.axhline(ys[-1], color=color("base"), ls="--", label="base")
    ks = sorted({k for pts in series.values() for k, _, _ in pts})
    ax.set(xscale="log", xlabel="K (generations per test item)", ylabel="test accuracy (%)",
           title="majority vote of K: equal test-time generations")
    ax.xaxis.set_minor_locator(NullLocator())  # only the K values reported, no 2x10^0 ticks
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlim(ks[0] / 1.5, ks[-1] * 1.5)  # room for the end markers and their error bars
    value_axis(ax, ys, (0.0, 100.0), 2.0)
    ax.legend(loc="best")
    return fig
