"""`thicket report RUN_DIR`: report.md and report.html of a run, from its stored files.

Sections: results with uncertainty (exact Clopper-Pearson interval per accuracy, paired
bootstrap for the difference from base, exact McNemar), RandOpt against self-consistency at
equal K, figures, the selection diagnostics (harness/analysis/selection.py), provenance,
notes, and the lm-evaluation-harness cross-check when crosscheck.json exists. No model is
loaded. An unfinished run (methods or seeds without results) gets a banner naming what is
missing, a "missing" row, and the same line on stderr.

report.md is a pure function of the stored files: rows in a fixed order, a fixed bootstrap
seed, fixed number formats, no timestamps; rebuilding it gives the same bytes.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from harness.runs import faults
from harness.analysis import agreement, plots, selection
from harness.analysis.doc import Banner, Bullets, Heading, Image, Para, Table, markdown, to_html
from harness.analysis.rundir import Run, load
from harness.analysis.tables import accuracy_text, flops, pct, results_table, terminal_table, versus
from harness.errors import UserError
from harness.runs.tracking import EMBEDDED_MODEL


# ---- section (i): results ----------------------------------------------------------------------

def missing_text(run: Run) -> str:
    """"randopt (seed 0), es (seeds 0, 1)": what the config asks for and has no results yet."""
    seeds: dict[str, list[int]] = {}
    for method, seed in run.missing:
        seeds.setdefault(method, []).append(seed)
    return ", ".join(f"{m} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))})" for m, s in seeds.items())


def banner(run: Run) -> list:
    if not run.missing:
        return []
    return [Banner(f"Unfinished run: no results yet for {missing_text(run)}. Rows marked "
                   "\"missing\" or with seeds missing are incomplete; rerun the same `thicket compare` "
                   "command to finish the run (finished work is reused), then rebuild this report.")]


def results_section(run: Run) -> list:
    spread = ("Test accuracy is the mean ± sample std over seeds; the interval, the difference "
              f"from base and McNemar's test are computed on the first seed ({run.seeds[0]}) only. "
              if max(len(g) for g in run.groups()) > 1 else "")
    n = run.rows[0]["n_test"]
    return [Heading(2, "Results"), results_table(run), Para(
        f"{spread}95% intervals of an accuracy: exact Clopper-Pearson binomial interval over the {n} "
        "test items (it stays honest when every item is right or every item is wrong); the "
        "difference from base: paired percentile bootstrap over items (10,000 resamples, seed 0), "
        "in percentage points; McNemar: exact two-sided binomial test on the items where exactly "
        "one is right. Training FLOPs are counted from the tokens each method processed (2P "
        "forward, 4P backward; 2P + 2T with T LoRA adapter weights, per token); test FLOPs are "
        "reported separately and are not matched. Train tokens/s: forward tokens in the ledger "
        "(ledger.json \"tokens\", a token through two models counts twice) over the train wall "
        "time, which after a resume covers only the last attempt; test tokens/s: the test "
        "voters' prompt and generated tokens over their generation time.")]


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
        row = [str(k)] + [accuracy_text(g, len(run.seeds)) if g else "-" for g in groups]
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
    """Members strictly above, equal to and below the base train score, counted apart: eight
    members tied with a base at 0% are no thicket."""
    d, sigmas = plots.deltas(run)
    parts = []
    for s in sorted(set(sigmas.tolist())):
        above, equal, below = plots.thicket_counts(d[sigmas == s])
        parts.append(f"sigma={s:g}: {above}/{equal}/{below}")
    above, equal, below = plots.thicket_counts(d)
    return (f"RandOpt members against the base model's train score: above {above}/{d.size} "
            f"({pct(above / d.size)}%), equal {equal}/{d.size} ({pct(equal / d.size)}%), below "
            f"{below}/{d.size} ({pct(below / d.size)}%); by sigma (above/equal/below): {', '.join(parts)}.")


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
    items = [f"model: {proto.get('model') or EMBEDDED_MODEL}", f"task: {proto.get('task')}",
             f"split: n_train={proto.get('n_train')}, n_test={proto.get('n_test')} "
             f"(evaluated: {', '.join(map(str, n_test))})",
             f"seeds: {', '.join(map(str, run.seeds))}", f"preset: {proto.get('budget')}",
             f"training budget per method: {flops(run.config.get('budget_flops'))} FLOPs",
             f"max_new_tokens: {run.config.get('max_new_tokens_used', proto.get('max_new_tokens'))} "
             f"(preset {proto.get('max_new_tokens')}, capped by the task's own), K: {proto.get('k')}",
             f"protocol: {json.dumps(proto, sort_keys=True)}"]
    items += [f"method {name}: {json.dumps(cfg, sort_keys=True)}"
              for name, cfg in run.config.get("methods", {}).items()]
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    argv = env.get("argv") if isinstance(env.get("argv"), list) else []
    items += [f"python {env.get('python')} on {env.get('platform')}", f"git: {env.get('git_sha')}",
              "libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(libs.items())),
              "argv: " + shlex.join(map(str, argv))]
    return [Heading(2, "Provenance"), Bullets(tuple(items))]


# ---- section (v): notes ------------------------------------------------------------------------

def notes_section(run: Run) -> list:
    notes, seen = [], set()
    for group in run.groups():
        r = group[0]
        deviations = (r.get("info") or {}).get("deviations")
        for text in deviations if isinstance(deviations, list) else []:
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
            notes.append(f"{r['label']} (seed {r['seed']}) spent {flops(r['train_flops'])} training "
                         f"FLOPs, over its budget of {flops(r['budget_flops'])}")
    for group in run.groups():
        if len(group) < len(run.seeds):
            notes.append(f"{group[0]['label']}: results for {len(group)} of {len(run.seeds)} seeds "
                         "(the run is unfinished or was resumed with fewer methods)")
    notes += ["The base model's train score (seed*/base_train.json) is an analysis reference "
              "charged to no method.",
              "Numbers quoted from the paper in README.md and docs/paper.md are as reported (secondary "
              "notes on the paper), not reproduced by this run."]
    return [Heading(2, "Notes"), Bullets(tuple(notes))]


# ---- the report and the CLI --------------------------------------------------------------------

def build_report(run_dir) -> tuple[Path, Path]:
    """Write report.md, report.html and the figures into run_dir; return the two report paths.
    An unfinished run is reported too, with a banner, and said on stderr."""
    run = load(run_dir)
    if not run.rows:
        raise UserError(f"{run_dir}: no seed*/<method>/rows.json yet; run `thicket compare` first")
    if run.missing:
        print(f"thicket report: unfinished run: no results yet for {missing_text(run)}", file=sys.stderr, flush=True)
    flops_png, thicket, by_k = plots.plot_flops(run), plots.plot_thicket(run), plots.plot_k(run)
    proto = run.config.get("protocol", {})
    title = f"thicket report: {proto.get('task')} / {run.path.resolve().name}"
    blocks = [Heading(1, title), *banner(run), *results_section(run), *k_section(run, by_k),
              *figures_section(run, flops_png, thicket), *selection.report_blocks(run),
              *agreement.report_blocks(run.path),
              *provenance_section(run), *notes_section(run)]
    md, page = run.path / "report.md", run.path / "report.html"
    faults.point("report-writing")
    md.write_text(markdown(blocks), encoding="utf-8")
    page.write_text(to_html(blocks, run.path, title), encoding="utf-8")
    return md, page


def publish(run_dir) -> None:
    """After `compare`: table.md, report.md and report.html, and the table on the terminal
    (the report's own cells: the same intervals)."""
    run = Path(run_dir)
    table = terminal_table(load(run))
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
