"""Read a finished `thicket compare` run folder back: the stored files only, never a model.

The report and its plots are built from what compare wrote (layout in harness/compare.py),
so they can be rebuilt anywhere, later, from a copied results folder. Every listing is in a
fixed order (seeds as in config.json, methods as in config.json then by name) so that the
same files always give the same report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.results import read_json
from harness.units import read_records


@dataclass
class Run:
    path: Path
    config: dict
    environment: dict
    seeds: list[int]
    rows: list[dict]
    """Every row of every seed with its per-item `correct` list: seed order, then method order."""
    base_train: dict[int, float] = field(default_factory=dict)
    """Per seed: the unperturbed model's mean train reward."""

    def seed_dir(self, seed: int) -> Path:
        return self.path / f"seed{seed}"

    def method_dirs(self, seed: int) -> list[Path]:
        """Method folders holding rows.json: config order first, then any others by name."""
        folder = self.seed_dir(seed)
        known = list(self.config.get("methods", {}))
        extra = sorted(p.parent.name for p in folder.glob("*/rows.json") if p.parent.name not in known)
        return [folder / m for m in known + extra if (folder / m / "rows.json").is_file()]

    def ledger(self, seed: int, method: str) -> dict | None:
        path = self.seed_dir(seed) / method / "ledger.json"
        return read_json(path) if path.is_file() else None

    def curve(self, seed: int, method: str) -> list[dict]:
        """curve.jsonl records in step order, one per step: a step written again after a resume
        counts once (the last record wins); a torn last line from a kill is skipped."""
        path = self.seed_dir(seed) / method / "curve.jsonl"
        if not path.is_file():
            return []
        by_step: dict = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                by_step[record.get("step", 0)] = record
        return [by_step[s] for s in sorted(by_step)]

    def members(self, seed: int) -> list[dict]:
        """RandOpt's scored members in sampling (index) order."""
        records = read_records(self.seed_dir(seed) / "randopt", "members")
        return [records[i] for i in sorted(records)]

    def groups(self) -> list[list[dict]]:
        """Rows grouped by label (one per seed), labels in first-seen order."""
        out: dict[str, list[dict]] = {}
        for r in self.rows:
            out.setdefault(r["label"], []).append(r)
        return list(out.values())


def load(run_dir) -> Run:
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; expected a `thicket compare` run folder")
    config = read_json(path / "config.json")
    env_path = path / "environment.json"
    run = Run(path, config, read_json(env_path) if env_path.is_file() else {}, [], [])
    run.seeds = list(config.get("seeds") or sorted(int(p.name[4:]) for p in path.glob("seed*")
                                                   if p.name[4:].isdigit()))
    for seed in run.seeds:
        base = run.seed_dir(seed) / "base_train.json"
        if base.is_file():
            run.base_train[seed] = float(read_json(base)["score"])
        for folder in run.method_dirs(seed):
            run.rows += read_json(folder / "rows.json")
    return run
