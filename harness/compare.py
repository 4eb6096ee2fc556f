"""`thicket compare`: every method on the same split, prompts, reward, decoding and budget.

Methods train with a TrainContext (never the test split), the Evaluator scores what they
return, and each method's rows are written as soon as it finishes, so a rerun of the same
command skips finished methods and resumes the unfinished one where it stopped.

results/<task>/<run>/ holds config.json, environment.json, summary.json, table.md and one
folder per seed, seed<S>/, with base_train.json, predictions.jsonl and a folder per method
(rows.json, ledger.json, curve.jsonl, and the method's own persisted work).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.runs import distributed as dist
from harness import diagnostics
from harness.runs import faults, memory, storage, tracking
from harness.budget.compute import Ledger
from harness.config import Protocol, RunOptions, method_config
from harness.context import TrainContext
from harness.evaluate import Evaluator, Row
from harness.engine.interface import Engine, render
from harness.engine.select import check_remembered, check_settings, choose, engine_settings, open_engine, vllm_version
from harness.engine.vllm import Settings as VLLMSettings
from harness.method import DEFAULT_METHODS, resolve
from harness.engine.model import load_model, probe_model
from harness.budget.plan import Sizing, matched_budget, plan_methods
from harness.runs.progress import Progress
from harness.runs.results import environment, read_json, run_name, write_json
from harness.runs.runlock import RunLock, empty, run_folder
from harness.splits import test_items, train_items
from harness.task import Task, get_task



@dataclass
class Session:
    """What every method of a comparison shares: one model, one engine, one set of items."""

    protocol: Protocol
    task: Task
    config: dict
    run_dir: Path
    model: object
    tokenizer: object
    engine: Engine
    n_params: int
    train: list
    train_batches: list
    evaluator: Evaluator
    budget_flops: float
    sizing: Sizing
    drafts: dict = dataclasses.field(default_factory=dict)
    """The base model's greedy train completions ("train"), drafts for every member's scoring."""


def compare(protocol: Protocol, methods=DEFAULT_METHODS, settings: dict | None = None,
            options: RunOptions | None = None) -> Path:
    """Run every method for options.seeds seeds (protocol.seed, +1, ...); returns the run folder.

    Everything that can be wrong with the input is checked before the model's weights load:
    names and settings, the results folder, the data, the model's files, and whether the
    budget affords at least one unit of every method (the plan, printed at start)."""
    settings, options = settings or {}, options or RunOptions()
    engine_set, settings = engine_settings(settings)
    task = get_task(protocol.task)
    plugins, config = resolve(protocol, methods, settings)
    config.update(budget_flops=options.budget_flops, seeds=[protocol.seed + s for s in range(options.seeds)])
    run_dir = run_folder(options.results, task.name, options.run or run_name(config))
    config["diagnostic_members"] = options.diagnostic_members  # after the name: it changes no row
    train, test = train_items(task, protocol), test_items(task, protocol)  # data errors before the model loads
    engine = choose(options.engine)
    check_settings(engine, engine_set)
    engine_config = method_config(VLLMSettings, "engine", protocol.budget, engine_set) if engine == "vllm" else None
    config["engine"] = {"name": engine, "vllm": vllm_version(), "settings": engine_set}  # not in the run's name
    with RunLock(run_dir):
        if options.fresh and dist.is_main():
            empty(run_dir)
        dist.barrier()
        check_remembered(run_dir, engine)
        dist.say(f"run directory: {run_dir}")
        sizing = plan_sizing(protocol, task, train, settings, options.budget_flops)
        plans = plan_methods(plugins, sizing)
        announce(plugins, plans, sizing)
        if "OMP_NUM_THREADS" not in os.environ:  # the user's thread setting wins
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world()))
        session = open_session(protocol, task, config, run_dir, sizing, train, test, engine, engine_config)
        rows = run_seeds(session, plugins, plans, options)
        if dist.is_main():
            finish(run_dir, rows)
    return run_dir


def plan_sizing(protocol, task, train, settings, budget_flops) -> Sizing:
    """The model's config, tokenizer and size (no weights), the train prompts, the budget."""
    probe = probe_model(protocol.model)
    max_new = min(protocol.max_new_tokens, task.max_new_tokens)
    sizing = Sizing(None, probe.n_params, probe.skeleton, probe.tokenizer, task, protocol, train, max_new)
    sizing.budget_flops = budget_flops if budget_flops is not None else matched_budget(sizing, settings)
    return sizing


def announce(plugins: dict, plans: dict, sizing: Sizing) -> None:
    dist.say(f"training budget per method: {sizing.budget_flops:.3e} FLOPs (the same for every method)")
    dist.say(f"methods, in order: {', '.join(plugins)}")
    for i, (name, work) in enumerate(plans.items(), 1):
        dist.say(f"  {i}. {name}: {work.describe() if work else 'sizes not known before it runs'}")


def run_seeds(s: Session, plugins: dict, plans: dict, options: RunOptions) -> list[dict]:
    rows: list[dict] = []
    progress = Progress(list(plugins), len(s.config["seeds"]), plans, s)
    for seed in s.config["seeds"]:
        seeded = dataclasses.replace(s, protocol=dataclasses.replace(s.protocol, seed=seed))
        folder = s.run_dir / f"seed{seed}"
        base_train_score(seeded, folder, progress)
        seed_rows = []
        for name, plugin in plugins.items():
            progress.start(name, seed)
            seed_rows += run_method(seeded, name, plugin, folder, seed, options.keep_weights)
            progress.done(name, seed)
        if dist.is_main():
            write_predictions(folder, seed_rows, s.evaluator)
            tracking.log_predictions(s.run_dir, s.config, seed, folder / "predictions.jsonl")
        if "randopt" in plugins:  # after every row of the seed is written: it cannot change one
            diagnostics.run(seeded, folder, options.diagnostic_members, seed)
        rows += seed_rows
    return rows


def open_session(protocol, task, config, run_dir, sizing: Sizing, train, test, engine_name: str = "native",
                 engine_config=None) -> Session:
    model, tokenizer = load_model(protocol.model, dist.device())
    texts = [render(tokenizer, it.messages) for it in train]
    longest = 0 if engine_name == "native" else max(
        len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts + [render(tokenizer, it.messages)
                                                                                 for it in test])
    engine = open_engine(engine_name, protocol, model, tokenizer, engine_config,
                         longest + min(protocol.max_new_tokens, task.max_new_tokens))
    n_params = engine.weights.n_params
    train_batches = engine.prepare(texts)
    evaluator = Evaluator(task, protocol, engine, test)
    dist.say(f"task={task.name} model={protocol.model or 'smollm2 (embedded)'} P={n_params:,} "
             f"n_train={len(train)} n_test={len(evaluator.items)} max_new_tokens={evaluator.max_new_tokens}")
    config["budget_flops"] = sizing.budget_flops
    config["max_new_tokens_used"] = evaluator.max_new_tokens  # the preset's value capped by the task's
    if dist.is_main():
        write_json(run_dir / "config.json", config)
        write_json(run_dir / "environment.json", environment())
    shared = dataclasses.replace(sizing, model=model, tokenizer=tokenizer)  # the same prompts, the real model
    return Session(protocol, task, config, run_dir, model, tokenizer, engine, n_params, train,
                   train_batches, evaluator, sizing.budget_flops, shared)


def base_train_score(s: Session, folder: Path, progress=None) -> None:
    """The unperturbed model's mean train reward: the reference for the thicket histogram.
    An analysis figure, charged to no method; its wall time calibrates the ETA."""
    path = folder / "base_train.json"
    if path.is_file() and ("train" in s.drafts or not s.engine.draft_members):
        return
    ctx = train_context(s, folder, Ledger(s.n_params), None)
    start = time.perf_counter()
    completions = ctx.train_completions()  # no drafts yet: decoded from scratch
    if s.engine.draft_members:  # a resumed run recomputes them (one member's work)
        s.drafts["train"] = completions
    if path.is_file():
        return
    score, tokens = ctx.summarize(completions)
    if progress is not None:
        progress.calibrate(time.perf_counter() - start, len(s.train))
    if score == 0:
        dist.say(f"note: the base model scores 0 on all {len(s.train)} train items")
    if dist.is_main():
        write_json(path, {"score": score, "tokens": tokens})


def train_context(s: Session, folder: Path, ledger: Ledger, log) -> TrainContext:
    return TrainContext(s.protocol, s.task, s.model, s.tokenizer, s.engine, ledger, s.train,
                        s.train_batches, folder, log, s.sizing, s.drafts)


def run_method(s: Session, name: str, plugin, seed_dir: Path, seed: int, keep_weights: bool = False) -> list[dict]:
    folder = seed_dir / name
    if (folder / "rows.json").is_file():
        dist.say(f"{name} (seed {seed}): finished earlier, reusing {folder / 'rows.json'}")
        return read_json(folder / "rows.json")
    folder.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(s.n_params, s.budget_flops)
    log = tracking.start_method(s.run_dir, s.config, name, seed) if dist.is_main() else tracking.NullLogger()
    memory.reset_peak()
    start = time.perf_counter()
    original = s.engine.weights.base_snapshot()  # methods that move the weights (ES) rebase
    ensembles = plugin.train(train_context(s, folder, ledger, log))
    s.engine.weights.reset_to(original)
    memory.trim()  # what training allocated (trainer copies, optimizer state) goes back to the OS
    train_wall = time.perf_counter() - start
    rows = []
    for ensemble in ensembles:
        for row in s.evaluator.evaluate(ensemble, folder, name):
            rows.append(row_dict(row, ledger, seed, train_wall, time.perf_counter() - start))
    peak = memory.peak_gib()
    for r in rows:
        r.update(peak_rss_gib=peak["rss_gib"], peak_gpu_gib=peak["gpu_gib"])
    if dist.is_main():
        write_json(folder / "ledger.json", ledger.as_dict())
        faults.point("before-rows")
        write_json(folder / "rows.json", rows)
        tracking.finish_method(log, name, rows)
        if not keep_weights:
            drop_weights(folder)
    dist.barrier()
    return rows


def drop_weights(folder: Path) -> None:
    """Once a method's rows are written, its trained weights are dead weight on disk (at 3B
    parameters 6-12 GB a copy): delete them unless --keep-weights."""
    for path in sorted(folder.rglob("*.safetensors")):
        path.unlink()
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)


def row_dict(row: Row, ledger: Ledger, seed: int, train_wall: float, wall: float) -> dict:
    # a method returning one model per stage (iterative_randopt's rounds) gives each row the
    # training FLOPs spent up to that model; otherwise a row carries the method's total. A fold
    # of RandOpt's population spent none itself: its row shows RandOpt's search as shared
    # (info "shared_train_flops_with"), while its ledger.json stays at what it spent, 0.
    train_flops = row.info.get("train_flops_at_row", ledger.train + row.info.get("shared_train_flops", 0.0))
    return {"method": row.method, "name": row.name, "label": row.label, "k": row.k, "seed": seed,
            "accuracy": row.accuracy, "n_test": row.n_test, "train_flops": train_flops,
            "paper_train_flops": row.info.get("paper_train_flops"), "budget_flops": ledger.budget,
            "test_flops": row.test_flops, "test_flops_per_item": row.test_flops / row.n_test,
            "train_wall_s": train_wall, "wall_s": wall, "info": row.info,
            "correct": row.correct, "predictions": row.predictions}


def write_predictions(folder: Path, rows: list[dict], evaluator: Evaluator) -> None:
    reasons = [failure_reasons(evaluator.task, r, evaluator.items) for r in rows]
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, item in enumerate(evaluator.items):
            votes = {}
            for r, why in zip(rows, reasons):
                votes[r["label"]] = {"vote": r["predictions"][i], "correct": r["correct"][i]}
                if why is not None and not r["correct"][i]:
                    votes[r["label"]]["why"] = why[i]
            f.write(json.dumps({"id": item.id, "gold": str(item.gold), "rows": votes}) + "\n")


def failure_reasons(task, row: dict, items: list) -> list[str] | None:
    """Why each vote failed, for a task that can tell (`outcomes(keys, items)`: MBPP's checker
    records a reason per program; cached, so nothing runs twice). None for other tasks."""
    outcomes = getattr(task, "outcomes", None)
    if outcomes is None:
        return None
    return [why for _, why in outcomes(row["predictions"], items)]


def finish(run_dir: Path, rows: list[dict]) -> None:
    """summary.json: every row of every seed. The table and report are the analysis wing's
    (`harness.analysis.report.publish`), which the CLI calls next."""
    write_json(run_dir / "summary.json", [{k: v for k, v in r.items() if k not in ("correct", "predictions")}
                                          for r in rows])
    print(f"run folder size: {storage.folder_bytes(run_dir) / 2**20:.1f} MiB ({run_dir})", flush=True)
