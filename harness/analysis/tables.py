"""The results table of a run, built once from its stored files: report.md, report.html,
table.md and the terminal all show these cells, so their intervals cannot differ.

Number formats are fixed (the report is byte-stable) and never print NaN: anything that is
not a finite number shows as "-".
"""
from __future__ import annotations

from harness.analysis import stats
from harness.analysis.doc import Table, markdown
from harness.analysis.rundir import Run, is_number
from harness.runs.results import fmt_flops, mean_std

BOOT_SEED = 0
"""One fixed bootstrap seed for every interval, so a rebuilt report is identical."""
MISSING = "missing: not finished"


def pct(x: float | None, signed: bool = False) -> str:
    if not is_number(x):
        return "-"
    text = f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"
    return text.replace("-0.0", "0.0").replace("+0.0", "0.0")  # no negative zero from rounding


def interval(lo: float, hi: float, signed: bool = False) -> str:
    return f"[{pct(lo, signed)}, {pct(hi, signed)}]"


def num(x: float | None, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if is_number(x) else "-"


def flops(x) -> str:
    return fmt_flops(x) if is_number(x) else "-"


def p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def mean(values) -> float | None:
    values = [v for v in values if is_number(v)]
    return mean_std(values)[0] if values else None


def accuracy_text(group: list[dict], n_seeds: int = 1) -> str:
    acc, std = mean_std([r["accuracy"] for r in group])
    text = pct(acc) + (f" ± {pct(std)} ({len(group)} seeds)" if len(group) > 1 else "")
    if len(group) < n_seeds:
        text += f" (seeds missing: {len(group)} of {n_seeds} finished)"
    return text


def base_row(run: Run, seed: int) -> dict | None:
    return next((r for r in run.rows if r["label"] == "base" and r["seed"] == seed and r.get("correct")), None)


def versus(a: dict, b: dict | None) -> tuple[str, str]:
    """(difference a - b with paired 95% interval, McNemar p) on the same seed's items."""
    if b is None or a is b or not a.get("correct") or len(a["correct"]) != len(b.get("correct") or []):
        return "-", "-"
    diff, lo, hi = stats.paired_bootstrap_diff(a["correct"], b["correct"], seed=BOOT_SEED)
    return f"{pct(diff, True)} {interval(lo, hi, True)}", p_value(stats.mcnemar_exact(a["correct"], b["correct"]))


def speeds(run: Run, group: list[dict]) -> tuple[str, str]:
    """(train, test) tokens per second, mean over the group's seeds. Train: the ledger's
    forward tokens (ledger.json "tokens") over the train wall time; test: see Run.test_speed."""
    train, test = [], []
    for r in group:
        ledger = run.ledger(r["seed"], r["method"]) or {}
        tokens = (ledger.get("tokens") or {}).get("train_forward")
        if is_number(tokens) and tokens > 0 and is_number(r.get("train_wall_s")) and r["train_wall_s"] > 0:
            train.append(tokens / r["train_wall_s"])
        test.append(run.test_speed(r["seed"], r["method"]))
    return num(mean(train), 0), num(mean(test), 0)


HEADER = ("method", "K", "test acc %", "95% CI (items)", "vs base (pp) [95% CI]", "McNemar p",
          "train FLOPs (measured)", "train FLOPs (paper formula)", "budget FLOPs", "test FLOPs/item",
          "train wall s", "train tokens/s", "wall s", "test tokens/s", "peak RSS GiB", "peak GPU GiB")
TERMINAL = ("method", "K", "test acc %", "95% CI (items)", "vs base (pp) [95% CI]", "McNemar p",
            "train FLOPs (measured)", "test FLOPs/item", "wall s", "train tokens/s")


def shared_text(row: dict) -> str:
    """" (shared with randopt)" for a row whose training is another method's (a fold of RandOpt's
    population): the FLOPs were spent once, by that method, and count against one budget."""
    shared = (row.get("info") or {}).get("shared_train_flops_with")
    return f" (shared with {shared})" if isinstance(shared, str) else ""


def row_cells(run: Run, group: list[dict]) -> tuple[str, ...]:
    first = group[0]  # the first seed's row: the items every interval and test is computed on
    ci = interval(*stats.binomial_ci(first["correct"])) if first.get("correct") else "-"
    diff, p = versus(first, base_row(run, first["seed"]))
    peak = {k: max((r[k] for r in group if is_number(r.get(k))), default=None) for k in ("peak_rss_gib", "peak_gpu_gib")}
    train_speed, test_speed = speeds(run, group)
    return (first["label"], str(first["k"]), accuracy_text(group, len(run.seeds)), ci, diff, p,
            flops(mean(r.get("train_flops") or 0.0 for r in group)) + shared_text(first),
            flops(first.get("paper_train_flops")),
            flops(first.get("budget_flops")), flops(first.get("test_flops_per_item")),
            num(mean(r.get("train_wall_s") for r in group), 1), train_speed,
            num(mean(r.get("wall_s") for r in group), 1), test_speed,
            num(peak["peak_rss_gib"]), num(peak["peak_gpu_gib"]))


def results_table(run: Run) -> Table:
    """Every row group in method order; a method with no results in any seed gets a row that
    says it is missing, so an unfinished run cannot pass for a finished one."""
    groups, out = run.groups(), []
    for method in run.methods():
        mine = [g for g in groups if g[0]["method"] == method]
        out += [row_cells(run, g) for g in mine]
        if not mine and method in (run.config.get("methods") or {}):
            out.append((method, "-", MISSING) + ("-",) * (len(HEADER) - 3))
    return Table(HEADER, tuple(out))


def terminal_table(run: Run) -> str:
    """The results table's main columns as Markdown: table.md and what `compare` prints."""
    full = results_table(run)
    keep = [HEADER.index(c) for c in TERMINAL]
    return markdown([Table(TERMINAL, tuple(tuple(row[i] for i in keep) for row in full.rows))]).rstrip("\n")
