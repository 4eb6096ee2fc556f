"""Weights & Biases: the side-by-side view of a comparison, offline by default.

One W&B run per method and seed, grouped per comparison (`<task>-<run folder>`), written to
`<run folder>/wandb/offline-run-*` (WANDB_MODE=online to sync as it runs, `disabled` to skip;
`wandb sync <run folder>/wandb/offline-run-*` uploads offline runs later). The schema is the
same for every method, so the W&B UI can group, colour and overlay runs without parsing names:

- config: `method`, `task`, `model`, `seed`, `budget_flops`, `method_config`, plus the whole
  resolved config of the comparison (`protocol`, `methods`, ...).
- summary: `accuracy` is the headline: the FIRST ensemble the method returns, at its largest K
  (a single model's accuracy; RandOpt's vote of K=max; ES's final model, since ES returns
  `es` before `es+vote`). `accuracy_k<K>` for each K of that ensemble (`accuracy_k1` whenever
  K=1 is reported, always for a single model), `train_flops`, `test_flops_per_item` (headline
  row), `wall_s` and `train_wall_s` (the method's). Any further ensemble of the method gets the
  same keys under its name made key-safe: `es_vote/accuracy`, `es_vote/accuracy_k5`, ...
  Row labels ("es+vote K=5") never become keys.
- curves: every history metric is plotted against `train_flops` (declared with
  `define_metric` as the step metric), so learning curves of every method overlay in one panel:
  `TrainContext.record_curve` logs `curve/<metric>`; RandOpt streams `curve/train_reward` (best
  member so far) and `curve/train_reward_top_k` (mean of the top K so far) as members finish.
- tables: `rows` per method run; per seed one extra run, `predictions-seed<S>` (config
  `method: "all"`, job type `predictions`), holds the table of every row's vote and correctness
  per test item, so disagreements can be filtered in W&B.

Resume: the run id is derived from the run folder, method and seed, and runs start with
resume="allow", so rerunning a killed command continues the same W&B run instead of adding one.
A run is marked finished (exit code 0) only by `finish_method`; one left open by a kill, an
exception or Ctrl-C ends with exit code 1 (when the next method starts, or at process exit).

W&B must never cost a result: any failure to start or log is a warning and a no-op logger.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

PROJECT = "thicket"
EMBEDDED_MODEL = "SmolLM2-135M-Instruct (embedded Q4_1 GGUF, dequantized to float32)"


class NullLogger:
    def log(self, data: dict, step: int | None = None) -> None:
        pass

    def summary(self, data: dict) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def curve(self, record: dict) -> None:
        """One learning-curve point ({"step", "train_flops", metric: value, ...})."""

    def finish(self, exit_code: int = 0) -> None:
        pass


_OPEN: list["WandbLogger"] = []
"""Runs started and not yet finished: anything still here was interrupted."""


class WandbLogger(NullLogger):
    def __init__(self, run):
        self.run = run
        _OPEN.append(self)
        self._safe(run.define_metric, "train_flops")
        self._safe(run.define_metric, "*", step_metric="train_flops")

    def log(self, data: dict, step: int | None = None) -> None:
        """A history row. W&B's own step is left alone (it must only grow, and resumed or
        several loggers would fight over it); `step` becomes a metric, and a `<x>/train_flops`
        value (TRL's callback) also fills the shared x-axis `train_flops`."""
        row = dict(data)
        if step is not None:
            row.setdefault("step", step)
        flops = next((v for k, v in data.items() if k.endswith("/train_flops")), None)
        if flops is not None:
            row.setdefault("train_flops", flops)
        self._safe(self.run.log, row)

    def curve(self, record: dict) -> None:
        row = {"train_flops": record["train_flops"], "curve/step": record["step"]}
        row.update({f"curve/{k}": v for k, v in record.items() if k not in ("step", "train_flops")})
        self._safe(self.run.log, row)

    def summary(self, data: dict) -> None:
        self._safe(self.run.summary.update, data)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        import wandb

        self._safe(lambda: self.run.log({key: wandb.Table(columns=columns, data=rows)}))

    def finish(self, exit_code: int = 0) -> None:
        if self in _OPEN:
            _OPEN.remove(self)
            self._safe(self.run.finish, exit_code=exit_code)

    @staticmethod
    def _safe(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # logging must never fail a run
            warnings.warn(f"W&B logging failed ({type(exc).__name__}: {exc}); continuing without it")


def close_unfinished(exit_code: int = 1) -> None:
    """End every run that was started and never finished (an interrupted method) as failed:
    wandb would otherwise finish it with exit code 0 at the next init or at process exit."""
    for log in list(_OPEN):
        log.finish(exit_code)


_ATEXIT = []
FLUSH = {"x_transaction_log_flush_interval": 2.0}
"""Seconds between writes of the offline run file (wandb's default, 15 s, is what a kill loses)."""


def start(project: str, group: str, name: str, config: dict, folder, run_id: str | None = None,
          job_type: str | None = None) -> NullLogger:
    """A logger for one W&B run (files under folder/wandb/); NullLogger when W&B is disabled
    or cannot start."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    if os.environ["WANDB_MODE"] == "disabled":
        return NullLogger()
    close_unfinished()
    try:
        import wandb

        os.makedirs(folder, exist_ok=True)
        run = wandb.init(project=project, group=group, name=name, config=config, dir=str(folder),
                         id=run_id, resume="allow" if run_id else None, job_type=job_type,
                         reinit="finish_previous", settings=wandb.Settings(**FLUSH))
    except Exception as exc:
        warnings.warn(f"W&B could not start ({type(exc).__name__}: {exc}); continuing without it")
        return NullLogger()
    if not _ATEXIT:  # after wandb's own exit hook is registered, so that this one runs first
        atexit.register(close_unfinished)
        _ATEXIT.append(True)
    return WandbLogger(run)


# ---- one comparison: a run per method and seed ------------------------------------------------

def group_name(run_dir: Path, config: dict) -> str:
    return f"{config['protocol']['task']}-{Path(run_dir).name}"


def run_id(run_dir: Path, kind: str, seed: int) -> str:
    """Deterministic per run folder, method (or "predictions") and seed: a rerun resumes the
    same W&B run. Readable prefix, hashed absolute folder (W&B ids are [A-Za-z0-9_-])."""
    digest = hashlib.sha256(f"{Path(run_dir).resolve()}\0{kind}\0{seed}".encode()).hexdigest()[:12]
    return f"{key_safe(kind)[:40]}-s{seed}-{digest}"


def run_config(config: dict, method: str, seed: int) -> dict:
    protocol = config.get("protocol", {})
    return {**config, "method": method, "task": protocol.get("task"),
            "model": protocol.get("model") or EMBEDDED_MODEL, "seed": seed,
            "budget_flops": config.get("budget_flops"),
            "method_config": config.get("methods", {}).get(method)}


def start_method(run_dir: Path, config: dict, method: str, seed: int) -> NullLogger:
    """The W&B run of one method and seed of the comparison in run_dir."""
    return start(PROJECT, group_name(run_dir, config), f"{method}-seed{seed}", run_config(config, method, seed),
                 run_dir, run_id(run_dir, method, seed), job_type="method")


def finish_method(log: NullLogger, method: str, rows: list[dict]) -> None:
    """The method's rows as a table and the shared summary; the run is marked finished."""
    columns = ["label", "k", "seed", "accuracy", "train_flops", "paper_train_flops", "test_flops_per_item",
               "wall_s"]
    log.table("rows", columns, [[r.get(c) for c in columns] for r in rows])
    log.summary(method_summary(method, rows))
    log.finish(0)


def key_safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "x"


def method_summary(method: str, rows: list[dict]) -> dict:
    """The shared summary schema (see the module docstring) of one method's rows."""
    ensembles: dict[str, list[dict]] = {}
    for r in rows:
        ensembles.setdefault(r["name"], []).append(r)
    if not ensembles:
        return {}
    out = {"train_flops": rows[0].get("train_flops"), "wall_s": max(r.get("wall_s") or 0.0 for r in rows),
           "train_wall_s": rows[0].get("train_wall_s"), "n_test": rows[0].get("n_test")}
    for i, (name, group) in enumerate(ensembles.items()):
        prefix = "" if i == 0 else key_safe(name) + "/"
        top = max(group, key=lambda r: r["k"])
        out[prefix + "accuracy"] = top["accuracy"]
        out[prefix + "test_flops_per_item"] = top.get("test_flops_per_item")
        out.update({f"{prefix}accuracy_k{r['k']}": r["accuracy"] for r in group})
    return out


def log_predictions(run_dir: Path, config: dict, seed: int, predictions: Path) -> None:
    """One table of every row's vote and correctness per test item (from predictions.jsonl),
    in the seed's `predictions-seed<S>` run."""
    records = [json.loads(line) for line in Path(predictions).read_text(encoding="utf-8").splitlines() if line]
    if not records:
        return
    labels = list(records[0]["rows"])
    columns = ["id", "gold"] + [c for label in labels for c in (f"{label} vote", f"{label} correct")]
    data = [[r["id"], r["gold"]] + [v for label in labels
                                    for v in (r["rows"][label]["vote"], bool(r["rows"][label]["correct"]))]
            for r in records]
    # a rerun of a finished comparison rewrites predictions.jsonl unchanged: log it once
    marker = Path(run_dir) / "wandb" / f"predictions-seed{seed}.logged"
    digest = hashlib.sha256(json.dumps([columns, data]).encode()).hexdigest()
    if marker.is_file() and marker.read_text(encoding="utf-8") == digest:
        return
    log = start(PROJECT, group_name(run_dir, config), f"predictions-seed{seed}", run_config(config, "all", seed),
                run_dir, run_id(run_dir, "predictions", seed), job_type="predictions")
    log.table("predictions", columns, data)
    log.finish(0)
    if isinstance(log, WandbLogger):
        marker.write_text(digest, encoding="utf-8")
