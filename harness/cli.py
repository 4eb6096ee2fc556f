"""The `thicket` command line. Bad input ends in one line on stderr and exit status 2.

Subcommands other than `compare`, `plan` and `list` live in their own modules (each with
add_arguments(parser) and run(args)); a module is imported only when its subcommand runs,
so `thicket --help` stays fast (the analysis tools pull in torch and matplotlib).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import math
import os
import sys

from harness.errors import UserError

# Subcommands that live in their own module, each with add_arguments(parser) and run(args).
TOOLS = {
    "report": ("harness.analysis.report", "rebuild report.md and report.html from a stored run folder"),
    "crosscheck": ("harness.analysis.crosscheck", "score a gsm8k run's single-model rows with lm-eval, item by item"),
    "density": ("harness.analysis.density", "the paper's delta(m) curve: M perturbations per sigma"),
    "reproduce": ("harness.analysis.reproduce", "run one of the paper's tables and print ours beside the reported"),
}
DEFAULT_METHODS = "base,self_consistency,randopt,es,grpo,ppo"  # == harness.method.DEFAULT_METHODS (tested)

COMPARE_EXAMPLES = """examples:
  thicket compare --task arith                                  # every method, small preset, embedded SmolLM2
  thicket compare --task gsm8k --data-dir ../shared/data --budget smoke --methods base,randopt
  thicket compare --task gsm8k --model Qwen/Qwen2.5-0.5B-Instruct --budget paper   # a GPU job
"""
PLAN_EXAMPLES = """examples:
  thicket plan --task arith                                     # sizes, FLOPs and time on this machine
  thicket plan --task gsm8k --budget paper --model Qwen/Qwen2.5-3B-Instruct --gpus 8 --gpu h100
"""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default where the help does not already say it; keeps the
    examples' line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default in (None, False, [], argparse.SUPPRESS) or "default" in text
        return text if quiet else f"{text} (default: {action.default})"


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line, with a "did you mean" for a mistyped option."""

    _seen: list[str] = []

    def parse_known_args(self, args=None, namespace=None):
        self._seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        options = [o for a in self._actions for o in a.option_strings]
        hint = ""
        for word in (w.split("=")[0] for w in self._seen if w.startswith("--")):
            close = difflib.get_close_matches(word, options, n=1, cutoff=0.6) if word not in options else []
            if close:
                hint = f"; did you mean {close[0]} (not {word})?"
                break
        print(f"thicket: error: {message}{hint} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def flop_budget(text: str) -> float:
    """A finite number of FLOPs > 0 ("3e13"); nan, inf, 0 and negatives say what is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of FLOPs such as 3e13, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"the training budget must be a finite number of FLOPs > 0, got {text!r}")
    return value


def add_run_arguments(c) -> None:
    """What `compare` and `plan` share: the protocol, the methods and the budget."""
    from harness.argtypes import ints

    c.add_argument("--task", required=True, help="task name (a file in tasks/) or a dotted module path")
    c.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma-separated method names (files in methods/) or dotted module paths")
    c.add_argument("--model", default=None, help="Hugging Face id or local folder; default: the embedded "
                   "SmolLM2-135M-Instruct")
    c.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None,
                   help="offline data folder laid out like ../shared/data; default: the Hugging Face Hub")
    c.add_argument("--budget", default="small", help="preset of sizes: smoke, small or paper")
    c.add_argument("--n-train", type=positive_int, help="train items; default: the preset's")
    c.add_argument("--n-test", "--limit", dest="n_test", type=positive_int,
                   help="test items, the first N of the test split; default: the preset's")
    c.add_argument("--max-new-tokens", type=positive_int, help="generation length, capped by the task's own; default: the preset's")
    c.add_argument("--k", type=ints, help="vote sizes reported for ensembles, e.g. 1,5,10; default: the preset's")
    c.add_argument("--seed", type=int, help="master seed; default 0")
    c.add_argument("--batch-size", type=positive_int, help="prompts per generate call; default 64")
    c.add_argument("--seeds", type=positive_int, default=None,
                   help="repeat every method with this many seeds (seed, seed+1, ...); default: $SEEDS or 1")
    c.add_argument("--budget-flops", type=flop_budget, default=None,
                   help="training FLOP budget of every method; default: what RandOpt's preset population costs")
    c.add_argument("--engine", default="auto", help="generation engine: native, vllm, or auto (vLLM when a GPU "
                   "and vLLM are present, else native); a run folder keeps the engine it started with")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method setting, e.g. randopt.population=100 or noise=released (repeatable)")


def parser(argv: list[str] | None = None) -> Parser:
    chosen = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    p = Parser(prog="thicket", description="thicket: LLM post-training methods side by side under matched "
               "compute. `thicket COMMAND --help` describes each command.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    c = sub.add_parser("compare", help="run methods under one protocol and one budget; print a table",
                       description="Train every method on the same train items with the same prompts, reward "
                       "and FLOP budget, score each on the test split through one extract -> vote -> correct "
                       "path, and write results/<task>/<run>/ (rerunning the command resumes it).",
                       epilog=COMPARE_EXAMPLES, formatter_class=Formatter)
    add_run_arguments(c)
    c.add_argument("--results", default="results", help="results root folder")
    c.add_argument("--run", default=None, help="run folder name under results/<task>/; default: derived "
                   "from the config, so the same command resumes")
    c.add_argument("--fresh", action="store_true", help="discard an earlier run with the same config")
    c.add_argument("--keep-weights", action="store_true",
                   help="keep trained weights after a method's rows are written (they are deleted by default: "
                   "at 3B parameters each copy is 6-12 GB)")
    c.add_argument("--diagnostic-members", type=int, default=32, metavar="M",
                   help="after every method: M RandOpt members scored on test for the selection diagnostics "
                   "(train-score/test rank correlation, oracle gap), outside every budget; 0 turns them off")
    c.add_argument("--crosscheck", action="store_true",
                   help="after the run, score single-model rows with lm-eval too (gsm8k only; keeps weights)")
    pl = sub.add_parser("plan", help="print each method's sizes, FLOPs and projected wall time; runs nothing",
                        description="What a `compare` with the same arguments would do: per method the derived "
                        "sizes, training and test FLOPs, and a wall-time projection from a short calibration "
                        "on this machine, or from recorded GPU throughput with --gpus/--gpu.",
                        epilog=PLAN_EXAMPLES, formatter_class=Formatter)
    add_run_arguments(pl)
    pl.add_argument("--gpus", type=positive_int, default=None, help="project for this many GPUs instead of here")
    pl.add_argument("--gpu", default=None, help="GPU kind of the recorded throughput (e.g. h100); with --gpus")
    ls = sub.add_parser("list", help="list tasks and methods", formatter_class=Formatter)
    ls.add_argument("--settings", action="store_true", help="every method's settings: type, default, meaning")
    for name, (module, text) in TOOLS.items():
        tool = sub.add_parser(name, help=text, formatter_class=Formatter)
        if name == chosen:  # import a tool's module only when it runs
            importlib.import_module(module).add_arguments(tool)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser(argv).parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already printed)
        return int(exc.code or 0)
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
        from harness.registry import describe

        print(describe(settings=args.settings))
        return 0
    from harness.config import RunOptions, protocol_from
    from harness.argtypes import settings

    protocol = protocol_from(args.task, args.budget, model=args.model, data_dir=args.data_dir,
                             n_train=args.n_train, n_test=args.n_test, max_new_tokens=args.max_new_tokens,
                             k=args.k, seed=args.seed, batch_size=args.batch_size)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = args.seeds if args.seeds is not None else seeds_from_env()
    if args.command == "plan":
        from harness.budget.projection import print_plan

        return print_plan(protocol, methods, settings(args.set), args.budget_flops, seeds, args.gpus, args.gpu,
                          args.engine)
    from harness.runs import distributed as dist
    from harness.analysis import crosscheck, report
    from harness.compare import compare

    options = RunOptions(results=args.results, run=args.run, fresh=args.fresh, budget_flops=args.budget_flops,
                         seeds=seeds, keep_weights=args.keep_weights or args.crosscheck, engine=args.engine,
                         diagnostic_members=args.diagnostic_members)
    run_dir = compare(protocol, methods, settings(args.set), options)
    if dist.is_main():
        report.publish(run_dir)
        if args.crosscheck:
            crosscheck.crosscheck(run_dir, list(crosscheck.SINGLE_ROWS))
            report.build_report(run_dir)
    return 0


def seeds_from_env() -> int:
    raw = os.environ.get("SEEDS", "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"SEEDS={raw!r} is not a whole number >= 1; set SEEDS=3 (or pass --seeds 3)")
    return value


if __name__ == "__main__":
    sys.exit(main())
