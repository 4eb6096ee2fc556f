"""`thicket report RUN_DIR`: report.md and report.html of a finished run, from its stored files.

Sections: results with uncertainty (bootstrap over test items, paired difference from base,
exact McNemar), RandOpt against self-consistency at equal K, figures, provenance, notes, and
the lm-evaluation-harness cross-check when crosscheck.json exists. No model is loaded.

report.md is a pure function of the stored files: rows in a fixed order, a fixed bootstrap
seed, fixed number formats, no timestamps; rebuilding it gives the same bytes.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from harness import faults
from harness.analysis import plots, stats
from harness.analysis.doc import Bullets, Heading, Image, Para, Table, markdown, to_html
from harness.errors import UserError
from harness.results import fmt_flops, mean_std, read_json
from harness.analysis.rundir import Run, load

BOOT_SEED = 0
"""One fixed bootstrap seed for every interval, so a rebuilt report is identical."""
MAX_DISAGREEMENTS = 20
"""Cross-check disagreements listed per row; the rest stay in crosscheck.json."""


# ---- number formats (fixed, so the report is byte-stable) ------------------------------------

def pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    text = f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"
    return text.replace("-0.0", "0.0").replace("+0.0", "0.0")  # no negative zero from rounding


def interval(lo: float, hi: float, signed: bool = False) -> str:
    return f"[{pct(lo, signed)}, {pct(hi, signed)}]"


def num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def p_value(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


# ---- section (i): results ----------------------------------------------------------------------

def accuracy_text(group: list[dict]) -> str:
    mean, std = mean_std([r["accuracy"] for r in group])
    return pct(mean) + (f" ± {pct(std)} ({len(group)} seeds)" if len(group) > 1 else "")


def base_row(run: Run, seed: int) -> dict | None:
    return next((r for r in run.rows if r["label"] == "base" and r["seed"] == seed and r.get("correct")), None)


def versus(a: dict, b: dict | None) -> tuple[str, str]:
    """(difference a - b with paired 95% interval, McNemar p) on the same seed's items."""
    if b is None or a is b or not a.get("correct") or len(a["correct"]) != len(b.get("correct") or []):
        return "-", "-"
    diff, lo, hi = stats.paired_bootstrap_diff(a["correct"], b["correct"], seed=BOOT_SEED)
    return f"{pct(diff, True)} {interval(lo, hi, True)}", p_value(stats.mcnemar_exact(a["correct"], b["correct"]))


def results_section(run: Run) -> list:
    header = ("method", "K", "test acc %", "95% CI (items)", "vs base (pp) [95% CI]", "McNemar p",
              "train FLOPs (measured)", "train FLOPs (paper formula)", "budget FLOPs", "test FLOPs/item",
              "train wall s", "wall s", "peak RSS GiB", "peak GPU GiB")
    rows = []
    for group in run.groups():
        first = group[0]  # the first seed's row: the items every interval and test is computed on
        ci = interval(*stats.bootstrap_ci(first["correct"], seed=BOOT_SEED)) if first.get("correct") else "-"
        diff, p = versus(first, base_row(run, first["seed"]))
        peak = {k: max((r[k] for r in group if r.get(k) is not None), default=None)
                for k in ("peak_rss_gib", "peak_gpu_gib")}
        rows.append((first["label"], str(first["k"]), accuracy_text(group), ci, diff, p,
                     fmt_flops(mean_std([r["train_flops"] or 0.0 for r in group])[0]),
                     fmt_flops(first.get("paper_train_flops")), fmt_flops(first.get("budget_flops")),
                     fmt_flops(first.get("test_flops_per_item")),
                     num(mean_std([r.get("train_wall_s") or 0.0 for r in group])[0], 1),
                     num(mean_std([r.get("wall_s") or 0.0 for r in group])[0], 1),
                     num(peak["peak_rss_gib"]), num(peak["peak_gpu_gib"])))
    seed, n = run.seeds[0] if run.seeds else "-", run.rows[0]["n_test"] if run.rows else 0
    spread = ("Test accuracy is the mean ± sample std over seeds; the interval, the difference "
              f"from base and McNemar's test are computed on the first seed ({seed}) only. "
              if max(len(g) for g in run.groups()) > 1 else "")
    return [Heading(2, "Results"), Table(header, tuple(rows)), Para(
        f"{spread}95% intervals: percentile bootstrap over the {n} test items (10,000 resamples, "
        "seed 0); the difference from base resamples items jointly (paired) and is in percentage "
        "points; McNemar: exact two-sided binomial test on the items where exactly one is right. "
        "Training FLOPs are counted from the tokens each method processed (2P forward, 4P backward; "
        "2P + 2T with T LoRA adapter weights, per token); test FLOPs are reported separately and are not matched.")]


# ---- section (ii): RandOpt against self-consistency at equal K ---------------------------------

def k_section(run: Run, images: list[Path]) -> list:
    series = plots.k_series(run)
    if not series:
        return []
    names = list(series)
    by_label = {g[0]["label"]: g for g in run.groups()}
    ks = sorted({k for pts in series.values() for k, _, _ in pts})
    header = ("K", *(f"{n} acc %" for n in names))
    both = "randopt" in series and "self_consistency" in series
    if both:
        header += ("randopt - self_consistency (pp) [95% CI]", "McNemar p")
    rows = []
    for k in ks:
        groups = [by_label.get(f"{n} K={k}") for n in names]
        row = [str(k)] + [accuracy_text(g) if g else "-" for g in groups]
        if both:
            ro, sc = by_label.get(f"randopt K={k}"), by_label.get(f"self_consistency K={k}")
            row += versus(ro[0], sc[0]) if ro and sc and ro[0]["seed"] == sc[0]["seed"] else ("-", "-")
        rows.append(tuple(row))
    blocks = [Heading(2, "Accuracy against K (test-time matched)"), Para(
        "Every K row spends K generations per test item, so RandOpt, ES+vote and self-consistency "
        "(the unperturbed model sampled K times) are compared at equal test-time compute. "
        "Paired comparisons use the first seed's items; error bars in the figure are the sample "
        "std over seeds."), Table(header, tuple(rows))]
    return blocks + [Image(p.name, "accuracy against K") for p in images]


# ---- section (iii): figures --------------------------------------------------------------------

def thicket_text(run: Run) -> str:
    d, sigmas = plots.deltas(run)
    parts = [f"sigma={s:g}: {int(((d >= -1e-12) & (sigmas == s)).sum())}/{int((sigmas == s).sum())}"
             for s in sorted(set(sigmas.tolist()))]
    share = int((d >= -1e-12).sum())
    return (f"RandOpt members with train score >= the base model's: {share}/{d.size} "
            f"({pct(share / d.size)}%); by sigma: {', '.join(parts)}.")


def figures_section(run: Run, flops: list[Path], thicket: list[Path]) -> list:
    blocks = [Heading(2, "Figures"), Para(
        "Left: train reward against measured training FLOPs (from curve.jsonl: ES's population mean "
        "per iteration, GRPO/PPO's batch reward per step; RandOpt: the best member so far, members in "
        "sampling order, each charged 2·P·its tokens). Right: test accuracy of "
        "each row at its total training FLOPs, markers spread slightly sideways (x 1.06 apart) so "
        "budget-matched rows do not hide each other; untrained rows are dashed lines.")]
    blocks += [Image(p.name, "accuracy and train reward against training FLOPs") for p in flops]
    if thicket:
        blocks += [Para("The thicket: distribution of RandOpt member train scores minus the base "
                        "model's train score (same items, greedy). " + thicket_text(run)),
                   Image(thicket[0].name, "RandOpt member train score minus base")]
    return blocks


# ---- section (iv): provenance ------------------------------------------------------------------

def provenance_section(run: Run) -> list:
    proto, env = run.config.get("protocol", {}), run.environment
    n_test = sorted({r["n_test"] for r in run.rows})
    items = [f"model: {proto.get('model') or 'smollm2 (embedded)'}", f"task: {proto.get('task')}",
             f"split: n_train={proto.get('n_train')}, n_test={proto.get('n_test')} "
             f"(evaluated: {', '.join(map(str, n_test))})",
             f"seeds: {', '.join(map(str, run.seeds))}", f"preset: {proto.get('budget')}",
             f"training budget per method: {fmt_flops(run.config.get('budget_flops'))} FLOPs",
             f"max_new_tokens: {run.config.get('max_new_tokens_used', proto.get('max_new_tokens'))} "
             f"(preset {proto.get('max_new_tokens')}, capped by the task's own), K: {proto.get('k')}",
             f"protocol: {json.dumps(proto, sort_keys=True)}"]
    items += [f"method {name}: {json.dumps(cfg, sort_keys=True)}"
              for name, cfg in run.config.get("methods", {}).items()]
    libs = env.get("libraries") or {}
    items += [f"python {env.get('python')} on {env.get('platform')}", f"git: {env.get('git_sha')}",
              "libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(libs.items())),
              "argv: " + shlex.join(map(str, env.get("argv") or []))]
    return [Heading(2, "Provenance"), Bullets(tuple(items))]


# ---- section (v): notes ------------------------------------------------------------------------

def notes_section(run: Run) -> list:
    notes, seen = [], set()
    for group in run.groups():
        r = group[0]
        for text in r.get("info", {}).get("deviations") or []:
            if (r["method"], text) not in seen:  # one note per method, not per K or ensemble
                seen.add((r["method"], text))
                notes.append(f"{r['method']}: deviation: {text}")
    for group in run.groups():
        r = group[0]
        details = {k: v for k, v in sorted((r.get("info") or {}).items())
                   if k not in ("deviations", "paper_train_flops")}
        text = f"{r['method']}: {json.dumps(details, sort_keys=True)}"
        if details and text not in seen:
            seen.add(text)
            notes.append(text)
    for r in run.rows:
        if r.get("budget_flops") and (r.get("train_flops") or 0) > r["budget_flops"]:
            notes.append(f"{r['label']} (seed {r['seed']}) spent {fmt_flops(r['train_flops'])} training "
                         f"FLOPs, over its budget of {fmt_flops(r['budget_flops'])}")
    for group in run.groups():
        if len(group) < len(run.seeds):
            notes.append(f"{group[0]['label']}: results for {len(group)} of {len(run.seeds)} seeds "
                         "(the run is unfinished or was resumed with fewer methods)")
    notes += ["The base model's train score (seed*/base_train.json) is an analysis reference "
              "charged to no method.",
              "Numbers quoted from the paper in README.md and PAPER.md are as reported (secondary "
              "notes on the paper), not reproduced by this run."]
    return [Heading(2, "Notes"), Bullets(tuple(notes))]


# ---- lm-evaluation-harness cross-check (crosscheck.json, written by another tool) --------------

def crosscheck_blocks(run_dir) -> list:
    path = Path(run_dir) / "crosscheck.json"
    if not path.is_file():
        return []
    rows = read_json(path).get("rows", [])
    blocks = [Heading(2, "Cross-check against lm-evaluation-harness"), Para(
        "The same responses scored by lm-evaluation-harness and by this harness; agreement is "
        "the share of items where both score the same."), Table(
        ("row", "items", "agree", "agreement %", "lm-eval acc %", "harness acc %", "same answer", "seed"),
        tuple((r["label"], str(r["n"]), str(r["agree"]), pct(r["agreement"]), pct(r["lm_eval_accuracy"]),
               pct(r["harness_accuracy"]), str(r.get("answers_identical", "-")), str(r.get("seed", "-")))
              for r in rows))]
    for r in rows:
        bad = r.get("disagreements") or []
        if not bad:
            continue
        more = len(bad) - MAX_DISAGREEMENTS
        blocks += [Heading(3, f"Disagreements: {r['label']} ({len(bad)})"), Table(
            ("id", "gold", "harness vote", "harness correct", "lm-eval response", "lm-eval correct"),
            tuple((str(d["id"]), str(d["gold"]), str(d["harness_vote"]), str(d["harness_correct"]),
                   clip(str(d["lm_eval_response"])), str(d["lm_eval_correct"])) for d in bad[:MAX_DISAGREEMENTS]))]
        if more > 0:
            blocks.append(Para(f"{more} more in crosscheck.json."))
    return blocks


def clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def crosscheck_section(run_dir) -> str:
    """The cross-check as Markdown; "" when run_dir has no crosscheck.json."""
    blocks = crosscheck_blocks(run_dir)
    return markdown(blocks) if blocks else ""


# ---- the report and the CLI --------------------------------------------------------------------

def build_report(run_dir) -> tuple[Path, Path]:
    """Write report.md, report.html and the figures into run_dir; return the two report paths."""
    try:
        run = load(run_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    if not run.rows:
        raise UserError(f"{run_dir}: no seed*/<method>/rows.json yet; run `thicket compare` first")
    flops, thicket, by_k = plots.plot_flops(run), plots.plot_thicket(run), plots.plot_k(run)
    proto = run.config.get("protocol", {})
    title = f"thicket report: {proto.get('task')} / {run.path.resolve().name}"
    blocks = [Heading(1, title), *results_section(run), *k_section(run, by_k),
              *figures_section(run, flops, thicket), *crosscheck_blocks(run.path),
              *provenance_section(run), *notes_section(run)]
    md, page = run.path / "report.md", run.path / "report.html"
    faults.point("report-writing")
    md.write_text(markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, run.path, title), encoding="utf-8")
    return md, page


def publish(run_dir) -> None:
    """After `compare`: table.md, report.md and report.html, and the table on the terminal."""
    from harness.results import markdown_table

    run = Path(run_dir)
    table = markdown_table(read_json(run / "summary.json"))
    (run / "table.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table + "\n", flush=True)
    md, html = build_report(run)
    print(f"results: {run}\nreport: {md} and {html}", flush=True)


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a run folder written by `thicket compare` (results/<task>/<run>)")


def run(args) -> int:
    for path in build_report(args.run_dir):
        print(path)
    return 0
