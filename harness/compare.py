"""`thicket compare`: every method on the same split, prompts, reward, decoding and budget.

Methods train with a TrainContext (never the test split), the Evaluator scores what they
return, and each method's rows are written as soon as it finishes, so a rerun of the same
command skips finished methods and resumes the unfinished one where it stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from harness import distributed as dist
from harness import tracking
from harness.compute import Ledger
from harness.config import Protocol, as_dict, method_config
from harness.context import TrainContext, worst_pass_flops
from harness.evaluate import Evaluator, Row
from harness.generate import Engine, render
from harness.method import get_method
from harness.model import load_model
from harness.perturb import Perturber
from harness.results import environment, markdown_table, read_json, run_name, write_json
from harness.splits import train_items
from harness.task import get_task

DEFAULT_METHODS = ("base", "self_consistency", "randopt")


def resolve(protocol: Protocol, methods, settings: dict) -> tuple[dict, dict]:
    """Method classes and the fully resolved config; every bad name or value fails here, early."""
    classes = {name: get_method(name) for name in methods}
    configs = {name: method_config(cls.Config, name, protocol.budget, settings) for name, cls in classes.items()}
    config = {"protocol": as_dict(protocol), "methods": {n: as_dict(c) for n, c in configs.items()}}
    return {n: classes[n](configs[n]) for n in classes}, config


def compare(protocol: Protocol, methods=DEFAULT_METHODS, settings: dict | None = None,
            results: str = "results", run: str | None = None, fresh: bool = False,
            budget_flops: float | None = None) -> Path:
    task = get_task(protocol.task)
    plugins, config = resolve(protocol, methods, settings or {})
    config["budget_flops"] = budget_flops  # as asked; the matched default is filled in below
    run_dir = Path(results) / task.name / (run or run_name(config))
    if fresh and dist.is_main() and run_dir.exists():
        shutil.rmtree(run_dir)
    dist.barrier()
    print(f"run directory: {run_dir}", flush=True)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world()))

    model, tokenizer = load_model(protocol.model, dist.device())
    engine = Engine(model, tokenizer, protocol.batch_size)
    perturber = Perturber(model)
    n_params = sum(p.numel() for _, p in perturber.params)
    train = train_items(task, protocol)
    train_batches = engine.prepare([render(tokenizer, it.messages) for it in train])
    evaluator = Evaluator(task, protocol, engine, perturber, n_params)
    print(f"task={task.name} model={protocol.model or 'smollm2 (embedded)'} P={n_params:,} "
          f"n_train={len(train)} n_test={len(evaluator.items)} max_new_tokens={evaluator.max_new_tokens}",
          flush=True)

    if budget_flops is None:
        budget_flops = matched_budget(protocol, settings or {}, n_params, train_batches, evaluator.max_new_tokens)
    config["budget_flops"] = budget_flops
    print(f"training budget per method: {budget_flops:.3e} FLOPs", flush=True)
    if dist.is_main():
        write_json(run_dir / "config.json", config)
        write_json(run_dir / "environment.json", environment())
    rows: list[dict] = []
    for name, plugin in plugins.items():
        rows += run_method(name, plugin, run_dir, config, protocol, task, model, tokenizer, engine, perturber,
                           n_params, train, train_batches, evaluator, budget_flops)
    if dist.is_main():
        finish(run_dir, rows, evaluator)
    return run_dir


def run_method(name, plugin, run_dir, config, protocol, task, model, tokenizer, engine, perturber,
               n_params, train, train_batches, evaluator, budget_flops) -> list[dict]:
    folder = run_dir / name
    if (folder / "rows.json").is_file():
        print(f"{name}: finished earlier, reusing {folder / 'rows.json'}", flush=True)
        return read_json(folder / "rows.json")
    folder.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(n_params, budget_flops)
    log = tracking.start("thicket", f"{task.name}-{run_dir.name}", name, config, run_dir / "wandb") \
        if dist.is_main() else tracking.NullLogger()
    ctx = TrainContext(protocol, task, model, tokenizer, engine, perturber, ledger, train, train_batches,
                       folder, log)
    start = time.perf_counter()
    original = perturber.base  # methods that move the weights (ES) rebase onto new tensors
    ensembles = plugin.train(ctx)
    perturber.base = original
    perturber.restore()
    train_wall = time.perf_counter() - start
    rows = []
    for ensemble in ensembles:
        for row in evaluator.evaluate(ensemble, folder, name):
            rows.append(row_dict(row, ledger, train_wall, time.perf_counter() - start))
    if dist.is_main():
        write_json(folder / "ledger.json", ledger.as_dict())
        write_json(folder / "rows.json", rows)
        for r in rows:
            log.summary({f"{r['label']}/accuracy": r["accuracy"], f"{r['label']}/test_flops": r["test_flops"]})
        log.summary({"train_flops": ledger.train})
        log.finish()
    dist.barrier()
    return rows


def matched_budget(protocol: Protocol, settings: dict, n_params: int, train_batches, max_new_tokens: int) -> float:
    """The default training budget of every method: what RandOpt's preset population costs
    in the worst case (n_train prompts plus max_new_tokens each, per member)."""
    from methods.randopt import Config as RandOptConfig

    population = method_config(RandOptConfig, "randopt", protocol.budget, settings).population
    return population * worst_pass_flops(n_params, train_batches, max_new_tokens)


def row_dict(row: Row, ledger: Ledger, train_wall: float, wall: float) -> dict:
    return {"method": row.method, "name": row.name, "label": row.label, "k": row.k, "accuracy": row.accuracy,
            "n_test": row.n_test, "train_flops": ledger.train, "paper_train_flops": row.info.get("paper_train_flops"),
            "test_flops": row.test_flops, "train_wall_s": train_wall, "wall_s": wall, "info": row.info,
            "correct": row.correct, "predictions": row.predictions}


def finish(run_dir: Path, rows: list[dict], evaluator: Evaluator) -> None:
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, item in enumerate(evaluator.items):
            votes = {r["label"]: {"vote": r["predictions"][i], "correct": r["correct"][i]} for r in rows}
            f.write(json.dumps({"id": item.id, "gold": str(item.gold), "rows": votes}) + "\n")
    summary = [{k: v for k, v in r.items() if k not in ("correct", "predictions")} for r in rows]
    write_json(run_dir / "summary.json", summary)
    table = markdown_table(rows)
    (run_dir / "table.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table + "\n", flush=True)
    print(f"results: {run_dir}", flush=True)
