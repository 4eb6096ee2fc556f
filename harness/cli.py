"""The `thicket` command line. Bad input ends in one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness.argtypes import ints, settings
from harness.errors import UserError
from harness.method import DEFAULT_METHODS


# Subcommands that live in their own module, each with add_arguments(parser) and run(args).
TOOLS = {
    "report": ("harness.analysis.report", "rebuild report.md and report.html from a stored run folder"),
    "crosscheck": ("harness.analysis.crosscheck", "score a gsm8k run's single-model rows with lm-eval, item by item"),
    "density": ("harness.analysis.density", "the paper's delta(m) curve: M perturbations per sigma"),
    "reproduce": ("harness.analysis.reproduce", "run one of the paper's tables and print ours beside the reported"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thicket", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run methods under one protocol and print a table")
    c.add_argument("--task", required=True, help="task name (tasks/<name>.py) or dotted module path")
    c.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="comma-separated method names")
    c.add_argument("--model", default=None, help="Hugging Face id or local folder (default: embedded SmolLM2)")
    c.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None,
                   help="offline data folder laid out like ../shared/data (default: the Hub)")
    c.add_argument("--budget", default="small", help="preset: smoke, small or paper")
    c.add_argument("--n-train", type=int)
    c.add_argument("--n-test", type=int)
    c.add_argument("--max-new-tokens", type=int)
    c.add_argument("--k", type=ints, help="vote sizes, e.g. 1,5,10")
    c.add_argument("--seed", type=int)
    c.add_argument("--batch-size", type=int)
    c.add_argument("--seeds", type=int, default=int(os.environ.get("SEEDS") or 1),
                   help="repeat every method with this many seeds (seed, seed+1, ...)")
    c.add_argument("--budget-flops", type=float, default=None, help="training FLOP budget per method")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method setting, e.g. randopt.population=100 or noise=released (repeatable)")
    c.add_argument("--results", default="results", help="results root folder")
    c.add_argument("--run", default=None, help="run folder name (default: derived from the config)")
    c.add_argument("--fresh", action="store_true", help="discard an earlier run with the same config")
    c.add_argument("--crosscheck", action="store_true",
                   help="after the run, score single-model rows with lm-eval too (gsm8k only)")
    sub.add_parser("list", help="list tasks and methods")
    for name, (module, text) in TOOLS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=text))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"thicket: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thicket: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def run(args) -> int:
    if args.command in TOOLS:
        return importlib.import_module(TOOLS[args.command][0]).run(args)
    if args.command == "list":
        from harness.method import available_methods
        from harness.task import available_tasks

        print("tasks:  ", " ".join(available_tasks()))
        print("methods:", " ".join(available_methods()))
        return 0
    from harness.compare import compare
    from harness.config import protocol_from

    protocol = protocol_from(args.task, args.budget, model=args.model, data_dir=args.data_dir,
                             n_train=args.n_train, n_test=args.n_test, max_new_tokens=args.max_new_tokens,
                             k=args.k, seed=args.seed, batch_size=args.batch_size)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds < 1:
        raise UserError(f"SEEDS/--seeds must be >= 1, got {args.seeds}")
    run_dir = compare(protocol, methods, settings(args.set), args.results, args.run, args.fresh,
                      args.budget_flops, args.seeds)
    from harness import distributed as dist
    from harness.analysis import crosscheck, report

    if dist.is_main():
        report.publish(run_dir)
        if args.crosscheck:
            crosscheck.crosscheck(run_dir, list(crosscheck.SINGLE_ROWS))
            report.build_report(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
