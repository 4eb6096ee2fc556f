"""Run a list of independent units (population members, test voters) once each.

Each finished unit is appended as one JSON line to `<tag>.rank<r>.jsonl` and flushed, so a
killed run loses at most the units in flight and resumes where it stopped. Units not yet
done are split across processes (round robin) and the records gathered, so every process
ends with the same complete dict, identical to a single-process run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from harness.runs import distributed as dist
from harness.runs import faults


def run_units(units: list, index: Callable, work: Callable[[object], dict], folder: Path, tag: str,
              desc: str | None = None, on_record: Callable[[dict, bool], None] | None = None) -> dict[int, dict]:
    """{index(unit): record} for every unit; `work(unit)` returns the record of a new unit.

    `on_record(record, resumed)`, if given, sees this process's records as they become known:
    the resumed ones first (resumed=True, in unit order), then each new one as it finishes, so
    a caller can stream progress (RandOpt's learning curve) instead of waiting for the end.
    """
    done = read_records(folder, tag)
    if on_record:
        for record in [done[index(u)] for u in units if index(u) in done]:
            on_record(record, True)
    # every process must shard the same list: none may write a new record before all have read
    dist.barrier()
    todo = dist.shard([u for u in units if index(u) not in done])
    path = folder / f"{tag}.rank{dist.rank()}.jsonl"
    fresh = []
    label = f"{desc or tag} ({len(done)} resumed)" if done else (desc or tag)
    for unit in tqdm(todo, desc=label, unit="unit", disable=not todo, leave=dist.is_main()):
        record = {"index": index(unit), **work(unit)}
        append_record(path, record)
        faults.point("unit-recorded")
        fresh.append(record)
        if on_record:
            on_record(record, False)
    for record in dist.gather(fresh):
        done[record["index"]] = record
    missing = [index(u) for u in units if index(u) not in done]
    if missing:
        raise RuntimeError(f"{tag}: units {missing[:5]} were not run by any process")
    return done


def append_record(path: Path, record: dict) -> None:
    """One JSON line, on disk before returning.

    After a kill mid-write the file ends in a torn line without a newline; start on a fresh
    line then, or this record would be glued to the torn one and lost on the next resume.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(folder: Path, tag: str) -> dict[int, dict]:
    """Finished records of every process by index; a torn last line (killed mid-write) is skipped."""
    records: dict[int, dict] = {}
    for path in sorted(Path(folder).glob(f"{tag}.rank*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):  # else not ours: skip
                records[record["index"]] = record
    return records
