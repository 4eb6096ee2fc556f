"""`thicket reproduce --table NAME`: rerun one of the paper's result rows and set ours beside it.

Each table names a task, the methods the paper reports for it and the paper's model; the
run is an ordinary `compare` (paper preset by default, so the same command resumes), then
reproduce.md in the run folder lists, per method, our accuracy, the reported one (K=50 for
votes, docs/paper.md section 6, "as reported") and the difference in percentage points. A
different model (`--model smollm2` for a CPU smoke run) or budget is stated in the file: those
figures exercise the pipeline and are not comparable with the paper's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.argtypes import ints
from harness.argtypes import settings as parse_settings
from harness.errors import UserError

REPORTED = Path(__file__).with_name("paper_results.json")
VOTES = ("randopt", "es+vote", "self_consistency")  # reported at K=50; ours at the largest K run
ALL = ("base", "ppo", "grpo", "es", "randopt", "self_consistency")
TABLE4 = ("base", "ppo", "grpo", "es", "randopt")  # the paper's Table 4 columns (ES also gives es+vote)


@dataclass(frozen=True)
class Table:
    task: str
    model: str
    methods: tuple[str, ...]
    """Methods to run; ES also yields the es+vote row."""


QWEN3B, QWEN15B, QWEN05B, OLMO = ("Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
                                  "Qwen/Qwen2.5-0.5B-Instruct", "allenai/Olmo-3-7B-Instruct")
TABLES = {
    "qwen2.5-3b-countdown": Table("countdown", QWEN3B, ALL),
    "qwen2.5-3b-gsm8k": Table("gsm8k", QWEN3B, ALL),
    "qwen2.5-3b-math500": Table("math500", QWEN3B, ALL),
    "qwen2.5-3b-olympiadbench": Table("olympiadbench", QWEN3B, TABLE4),
    "qwen2.5-3b-mbpp": Table("mbpp", QWEN3B, TABLE4),
    "qwen2.5-1.5b-gsm8k": Table("gsm8k", QWEN15B, ("base", "grpo", "es", "randopt")),
    "qwen2.5-0.5b-gsm8k": Table("gsm8k", QWEN05B, ("base", "randopt")),
    "olmo-3-7b-gsm8k": Table("gsm8k", OLMO, ("base", "randopt")),
    "olmo-3-7b-countdown": Table("countdown", OLMO, ("base", "randopt")),
}


def add_arguments(p) -> None:
    p.add_argument("--table", help=f"one of: {', '.join(TABLES)}")
    p.add_argument("--list", action="store_true", help="list the tables and exit")
    p.add_argument("--model", default=None, help="override the paper's model (e.g. smollm2 for a CPU smoke run)")
    p.add_argument("--budget", default="paper", help="preset: smoke, small or paper (default: paper)")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None,
                   help="offline data folder laid out like ../shared/data (default: the Hub)")
    p.add_argument("--methods", default=None, help="run only these of the table's methods (comma-separated)")
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--k", type=ints, default=None, help="vote sizes, e.g. 1,5,50 (default: the preset's)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method setting, as for `thicket compare` (repeatable)")
    p.add_argument("--results", default="results", help="results root folder")


def run(args) -> int:
    if args.list or not args.table:
        print(list_tables())
        return 0
    table = get_table(args.table)
    methods = runnable(table, args.methods)
    from harness.compare import compare
    from harness.config import RunOptions, protocol_from
    from harness.runs.results import read_json

    model = args.model or default_model(table, args.budget)
    protocol = protocol_from(table.task, args.budget, model=model, data_dir=args.data_dir,
                             n_train=args.n_train, n_test=args.n_test, max_new_tokens=args.max_new_tokens,
                             k=args.k)
    options = RunOptions(results=args.results, seeds=args.seeds)
    run_dir = compare(protocol, [m for m, why in methods if why is None], parse_settings(args.set), options)
    from harness.analysis.report import publish

    publish(run_dir)
    text = comparison(args.table, read_json(run_dir / "summary.json"), protocol.model, args.budget,
                      [f"{m}: {why}" for m, why in methods if why])
    (run_dir / "reproduce.md").write_text(text + "\n", encoding="utf-8")
    print("\n" + text + "\n", flush=True)
    print(f"written: {run_dir / 'reproduce.md'}", flush=True)
    return 0


def default_model(table: Table, budget: str) -> str | None:
    """The paper's model at the paper budget (a GPU job); the embedded SmolLM2 for the CPU
    presets, where the paper's model would neither download offline nor fit the time."""
    if budget == "paper":
        return table.model
    print(f"reproduce: budget {budget!r} runs the embedded SmolLM2 in place of {table.model} "
          "(pass --model to choose); the figures check the pipeline, not the paper", flush=True)
    return None


def list_tables() -> str:
    width, task_width = max(map(len, TABLES)), max(len(t.task) for t in TABLES.values())
    return "\n".join(f"{name:{width}s} task={t.task:{task_width}s} model={t.model}  methods={','.join(t.methods)}"
                     for name, t in TABLES.items())


def get_table(name: str) -> Table:
    if name not in TABLES:
        raise UserError(f"unknown table {name!r}; choose one of {', '.join(TABLES)}")
    return TABLES[name]


def runnable(table: Table, only: str | None) -> list[tuple[str, str | None]]:
    """(method, None) to run, or (method, why not): left out by --methods, or not (yet) in methods/."""
    from harness.method import get_method

    wanted = [m.strip() for m in only.split(",") if m.strip()] if only else list(table.methods)
    extra = [m for m in wanted if m not in table.methods]
    if extra:
        raise UserError(f"--methods {','.join(extra)}: the table reports {', '.join(table.methods)}")
    out = []
    for m in table.methods:
        if m not in wanted:
            out.append((m, "not run (--methods)"))
            continue
        try:
            get_method(m)
            out.append((m, None))
        except UserError as exc:
            print(f"reproduce: skipping {m}: {exc}", flush=True)
            out.append((m, "not available here, skipped"))
    if not any(why is None for _, why in out):
        raise UserError("none of the table's methods is available here")
    return out


def reported(table_name: str) -> dict[str, float]:
    t = get_table(table_name)
    return json.loads(REPORTED.read_text(encoding="utf-8"))["models"][t.model][t.task]


def ours(rows: list[dict], name: str) -> tuple[float, int] | None:
    """(mean accuracy % over seeds, K) of an ensemble: K=50 if run, else the largest K run."""
    rows = [r for r in rows if r["name"] == name]
    if not rows:
        return None
    ks = {r["k"] for r in rows}
    k = 50 if 50 in ks else max(ks)
    accs = [r["accuracy"] for r in rows if r["k"] == k]
    return 100 * sum(accs) / len(accs), k


def comparison(table_name: str, rows: list[dict], model: str | None, budget: str, notes=()) -> str:
    """Markdown: ours beside the reported numbers, the difference in points, and caveats."""
    t = get_table(table_name)
    paper = reported(table_name)
    lines = [f"# {table_name}: ours vs the paper (as reported)", "",
             f"task {t.task}; paper model {t.model}; our model {model or 'smollm2 (embedded)'}; budget {budget}"]
    if (model or "smollm2") != t.model:
        lines.append("**Not comparable: different model** (this run checks the pipeline, not the paper's figures).")
    if budget != "paper":
        lines.append(f"**Budget {budget!r}, not the paper's**: fewer items, tokens and members than reported.")
    lines += [f"- {n}" for n in notes]
    lines += ["", "| method | ours % | ours K | reported % | reported K | ours - reported (pp) |",
              "|---|---|---|---|---|---|"]
    for name in [m for m in paper if m in t.methods or (m == "es+vote" and "es" in t.methods)]:
        mine, rep = ours(rows, name), paper[name]
        rep_k = 50 if name in VOTES else 1
        acc, k = (f"{mine[0]:.1f}", str(mine[1])) if mine else ("-", "-")
        diff = f"{mine[0] - rep:+.1f}" if mine else "-"
        lines.append(f"| {name} | {acc} | {k} | {rep:.1f} | {rep_k} | {diff} |")
    return "\n".join(lines)
