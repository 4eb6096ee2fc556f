"""Weights & Biases logging: one run per method, grouped per comparison, offline by default.

W&B must never cost a result: any failure to start or log turns into a warning and a
no-op logger. Set WANDB_MODE=online (and log in) to sync.
"""
from __future__ import annotations

import os
import warnings


class NullLogger:
    def log(self, data: dict, step: int | None = None) -> None:
        pass

    def summary(self, data: dict) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def curve(self, record: dict) -> None:
        """One learning-curve point ({"step", "train_flops", metric: value, ...})."""

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    def __init__(self, run):
        self.run = run

    def log(self, data: dict, step: int | None = None) -> None:
        self._safe(self.run.log, data, step=step)

    def summary(self, data: dict) -> None:
        self._safe(self.run.summary.update, data)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        import wandb

        self._safe(lambda: self.run.log({key: wandb.Table(columns=columns, data=rows)}))

    def curve(self, record: dict) -> None:
        self._safe(self.run.log, {f"curve/{k}" if k not in ("train_flops",) else k: v for k, v in record.items()})

    def finish(self) -> None:
        self._safe(self.run.finish)

    @staticmethod
    def _safe(fn, *args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # logging must never fail a run
            warnings.warn(f"W&B logging failed ({type(exc).__name__}: {exc}); continuing without it")


def start(project: str, group: str, name: str, config: dict, folder) -> NullLogger:
    """A logger for one method run; NullLogger when W&B is disabled or cannot start."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    if os.environ["WANDB_MODE"] == "disabled":
        return NullLogger()
    try:
        import wandb

        os.makedirs(folder, exist_ok=True)
        run = wandb.init(project=project, group=group, name=name, config=config, dir=str(folder),
                         reinit="finish_previous")
        return WandbLogger(run)
    except Exception as exc:
        warnings.warn(f"W&B could not start ({type(exc).__name__}: {exc}); continuing without it")
        return NullLogger()


def log_rows(log: NullLogger, rows: list[dict]) -> None:
    """A method's result rows as W&B summary values and a table (same columns as table.md)."""
    columns = ["label", "k", "seed", "accuracy", "train_flops", "paper_train_flops", "test_flops", "wall_s"]
    log.table("results", columns, [[r.get(c) for c in columns] for r in rows])
    for r in rows:
        log.summary({f"{r['label']}/accuracy": r["accuracy"], f"{r['label']}/test_flops": r["test_flops"]})
    if rows:
        log.summary({"train_flops": rows[0]["train_flops"]})
