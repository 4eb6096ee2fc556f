"""Read a `thicket compare` run folder back: the stored files only, never a model.

The report and its plots are built from what compare wrote (layout in harness/compare.py),
so they can be rebuilt anywhere, later, from a copied results folder. Every listing is in a
fixed order (seeds as in config.json, methods as in config.json then by name) so that the
same files always give the same report.

Every file is checked as it is read: a truncated, edited or wrong-typed file is a one-line
UserError naming it and how to rebuild it, never a JSON or type traceback. A kill can only
tear the last line of a JSON-lines file (those lines are skipped); the JSON files are written
atomically, so a bad one was edited or copied badly.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.runs.units import read_records

RERUN = "rerun the same `thicket compare` command"
NUMBER = (int, float)
# rows.json: what the report needs of each row, with its type (None: may be null)
ROW_FIELDS = {"method": (str,), "name": (str,), "label": (str,), "k": (int,), "seed": (int,),
              "accuracy": NUMBER, "n_test": (int,)}
ROW_OPTIONAL = {"train_flops": NUMBER, "paper_train_flops": NUMBER, "budget_flops": NUMBER,
                "test_flops": NUMBER, "test_flops_per_item": NUMBER, "train_wall_s": NUMBER, "wall_s": NUMBER,
                "peak_rss_gib": NUMBER, "peak_gpu_gib": NUMBER, "info": (dict,), "correct": (list,)}


def rebuild_hint(path: Path) -> str:
    """How to get a good copy of one of the run's files back."""
    name = path.name
    if name in ("config.json", "environment.json"):
        return f"{RERUN} (it rewrites {name} when it starts)"
    if name in ("rows.json", "ledger.json"):
        return f"delete {path.parent / 'rows.json'} and {path.parent / 'ledger.json'} and {RERUN} (the method is redone from its saved work)"
    if name == "base_train.json":
        return f"delete it and {RERUN}"
    if name == "crosscheck.json":
        return f"delete it or rerun `thicket crosscheck {path.parent}`"
    return f"delete the bad line and {RERUN} (that unit is redone)"


def read_checked(path: Path, expect: type):
    """JSON of `path`, which must be an `expect` (dict or list), else a one-line UserError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}: truncated or edited?); "
                        f"{rebuild_hint(Path(path))}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__}); {rebuild_hint(Path(path))}") from None
    if not isinstance(data, expect):
        raise UserError(f"{path} holds a JSON {type(data).__name__}, expected a {expect.__name__}; "
                        f"{rebuild_hint(Path(path))}")
    return data


def bad_value(path: Path, where: str, value) -> UserError:
    return UserError(f"{path}: {where} is {value!r}; {rebuild_hint(Path(path))}")


def is_number(value) -> bool:
    return isinstance(value, NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _check_type(path, where, value, types) -> None:
    if types is NUMBER:
        if not is_number(value):
            raise bad_value(path, where, value)
    elif not isinstance(value, types) or (types == (int,) and isinstance(value, bool)):
        raise bad_value(path, where, value)


def check_rows(path: Path, rows: list) -> list[dict]:
    """rows.json's rows, each with the fields and types the report reads."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad_value(path, f"row {i}", row)
        for name, types in ROW_FIELDS.items():
            _check_type(path, f"row {i} field {name!r}", row.get(name), types)
        for name, types in ROW_OPTIONAL.items():
            if row.get(name) is not None:
                _check_type(path, f"row {i} field {name!r}", row[name], types)
        correct = row.get("correct")
        if correct is not None and (len(correct) != row["n_test"] or not all(isinstance(c, bool) for c in correct)):
            raise bad_value(path, f"row {i} field 'correct' (expected {row['n_test']} true/false values)",
                            f"a list of {len(correct)}")
    return rows


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
    missing: list[tuple[str, int]] = field(default_factory=list)
    """(method, seed) pairs of the config without results yet: the run is unfinished."""

    def seed_dir(self, seed: int) -> Path:
        return self.path / f"seed{seed}"

    def methods(self) -> list[str]:
        """The config's methods, then any other method folder with results, by name."""
        known = list(self.config.get("methods") or {})
        extra = sorted({p.parent.name for s in self.seeds for p in self.seed_dir(s).glob("*/rows.json")} - set(known))
        return known + extra

    def method_dirs(self, seed: int) -> list[Path]:
        """Method folders holding rows.json, in methods() order."""
        return [self.seed_dir(seed) / m for m in self.methods() if (self.seed_dir(seed) / m / "rows.json").is_file()]

    def ledger(self, seed: int, method: str) -> dict | None:
        path = self.seed_dir(seed) / method / "ledger.json"
        if not path.is_file():
            return None
        ledger = read_checked(path, dict)
        if not isinstance(ledger.get("n_params"), int) or not isinstance(ledger.get("tokens", {}), dict):
            raise bad_value(path, "n_params / tokens", (ledger.get("n_params"), ledger.get("tokens")))
        return ledger

    def curve(self, seed: int, method: str) -> list[dict]:
        """curve.jsonl records in step order, one per step: a step written again after a resume
        counts once (the last record wins); a torn line from a kill, or a record without a
        finite train_flops, is skipped."""
        path = self.seed_dir(seed) / method / "curve.jsonl"
        if not path.is_file():
            return []
        by_step: dict = {}
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and is_number(record.get("train_flops")) and is_number(record.get("step", 0)):
                by_step[record.get("step", 0)] = record
        return [by_step[s] for s in sorted(by_step)]

    def members(self, seed: int) -> list[dict]:
        """RandOpt's scored members in sampling (index) order."""
        folder = self.seed_dir(seed) / "randopt"
        records = read_records(folder, "members")
        for i, m in records.items():
            for name in ("score", "sigma", "tokens"):
                if not is_number(m.get(name)):
                    raise bad_value(folder / "members.rank*.jsonl", f"member {i} field {name!r}", m.get(name))
        return [records[i] for i in sorted(records)]

    def test_speed(self, seed: int, method: str) -> float | None:
        """Test tokens per second of a method: its test voters' prompt + generated tokens over
        their generation seconds (stored per voter, so a resumed evaluation is timed right)."""
        tokens = seconds = 0.0
        for path in sorted((self.seed_dir(seed) / method).glob("test-*.rank*.jsonl")):
            tag = path.name.split(".rank")[0]
            for r in read_records(path.parent, tag).values():
                if is_number(r.get("tokens")) and is_number(r.get("seconds")):
                    tokens, seconds = tokens + r["tokens"], seconds + r["seconds"]
        return tokens / seconds if seconds > 0 else None

    def groups(self) -> list[list[dict]]:
        """Rows grouped by label (one per seed), labels in first-seen order."""
        out: dict[str, list[dict]] = {}
        for r in self.rows:
            out.setdefault(r["label"], []).append(r)
        return list(out.values())


def load(run_dir) -> Run:
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json; expected a `thicket compare` run folder (results/<task>/<run>)")
    config = read_checked(path / "config.json", dict)
    if not isinstance(config.get("protocol", {}), dict) or not isinstance(config.get("methods", {}), dict):
        raise bad_value(path / "config.json", "protocol / methods", (config.get("protocol"), config.get("methods")))
    env_path = path / "environment.json"
    run = Run(path, config, read_checked(env_path, dict) if env_path.is_file() else {}, [], [])
    seeds = config.get("seeds") or sorted(int(p.name[4:]) for p in path.glob("seed*") if p.name[4:].isdigit())
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise bad_value(path / "config.json", "seeds", seeds)
    run.seeds = list(seeds)
    for seed in run.seeds:
        base = run.seed_dir(seed) / "base_train.json"
        if base.is_file():
            score = read_checked(base, dict).get("score")
            if not is_number(score):
                raise bad_value(base, "score", score)
            run.base_train[seed] = float(score)
        for method in run.methods():
            rows_path = run.seed_dir(seed) / method / "rows.json"
            if rows_path.is_file():
                run.rows += check_rows(rows_path, read_checked(rows_path, list))
            elif method in (config.get("methods") or {}):
                run.missing.append((method, seed))
    return run
