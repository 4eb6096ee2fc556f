"""The task contract: what every task in `tasks/` provides, and how tasks are found.

A task is one file `tasks/<name>.py` defining `TASK`, an instance of a `Task` subclass.
A dotted path (`mypkg.mytask`) loads a task module from outside the repository.
Reward and correctness share the same extraction, so the RL reward and the reported
score cannot drift apart.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.runs import faults
from harness.errors import UserError
from harness.method import import_plugin


@dataclass(frozen=True)
class Item:
    """One task instance: the prompt as chat messages, the gold answer, extra fields."""

    id: str
    messages: tuple[dict, ...]
    gold: Any
    meta: dict = field(default_factory=dict, compare=False)


class Task:
    """Base class for tasks. Subclasses set the class attributes and override the methods."""

    name: str = ""
    max_new_tokens: int = 1024  # the paper's value; presets may lower it
    splits: tuple[str, ...] = ("train", "test")

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        """All items of `split`, in the paper's order. `data_dir` None means the Hub."""
        raise NotImplementedError

    def extract(self, response: str) -> str:
        """The final answer in a model response, as text ("" when none is found)."""
        raise NotImplementedError

    def vote_key(self, response: str, item: Item) -> str:
        """What members vote on: the normalised extracted answer ("" abstains)."""
        return self.extract(response)

    def is_correct(self, key: str, item: Item) -> bool:
        """Whether a vote key (the output of `vote_key`) answers `item` correctly."""
        raise NotImplementedError

    def reward(self, response: str, item: Item) -> float:
        """Training reward of one response; defaults to correctness (0 or 1)."""
        return float(self.is_correct(self.vote_key(response, item), item))

    # Batched forms: the harness always calls these. Override them when scoring one item at a
    # time is slow (a task that runs code scores a batch in parallel); the defaults loop.

    def rewards(self, responses: list[str], items: list[Item]) -> list[float]:
        """Training rewards of many responses, one per (response, item) pair."""
        return [self.reward(r, it) for r, it in zip(responses, items)]

    def are_correct(self, keys: list[str], items: list[Item]) -> list[bool]:
        """Correctness of many vote keys; an empty key (no answer) is never correct."""
        return [bool(k) and bool(self.is_correct(k, it)) for k, it in zip(keys, items)]


def checked_rewards(task: Task, responses: list[str], items: list[Item]) -> list[float]:
    """`task.rewards`, refusing anything that is not a finite number: a NaN reward would turn
    every ES weight into NaN and every mean into NaN, so it stops the run here, named."""
    import math

    values = task.rewards(list(responses), list(items))
    if len(values) != len(items):
        raise UserError(f"task {task.name!r}: rewards() returned {len(values)} values for {len(items)} responses")
    out = []
    for value, response, item in zip(values, responses, items):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not math.isfinite(number):
            raise UserError(f"task {task.name!r} returned reward {value!r} for item {item.id} "
                            f"(response starts {response[:60]!r}); a reward must be a finite number")
        out.append(number)
    faults.point("rewards-scored")
    return out


def available_tasks() -> list[str]:
    package = importlib.import_module("tasks")  # by name: harness imports no plugin module

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


REQUIRED = ("load", "extract", "is_correct")


def get_task(name: str) -> Task:
    """`gsm8k` -> tasks/gsm8k.py; `pkg.module` -> that module's TASK."""
    module_name = name if "." in name else f"tasks.{name}"
    if "." not in name and name not in available_tasks():
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(available_tasks())} "
                        "or pass a dotted module path that defines TASK")
    module = import_plugin(module_name, "task")
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise UserError(f"task module {module_name!r} defines no TASK (an instance of harness.task.Task)")
    missing = [m for m in REQUIRED if getattr(type(task), m) is getattr(Task, m)]
    if missing:
        raise UserError(f"task module {module_name!r}: {type(task).__name__} does not define "
                        f"{', '.join(missing)}; a task must implement {', '.join(REQUIRED)}")
    return task


def task_module(name: str):
    """A task's module by name (`gsm8k` -> tasks/gsm8k.py), for code that needs more of it than
    its TASK (the analysis wing's lm-eval cross-check reads gsm8k's prompt suffix)."""
    get_task(name)  # the same checks and errors as loading the task
    return import_plugin(name if "." in name else f"tasks.{name}", "task")


def data_file(data_dir: str | None, *parts: str) -> Path:
    """Path of an offline data file, with an error that says how to point at the data."""
    if data_dir is None:
        raise UserError("no data directory given; pass DATA_DIR=... (make) or --data-dir ... "
                        "(a folder laid out like ../shared/data)")
    path = Path(data_dir, *parts)
    if not path.is_file():
        raise UserError(f"data file {path} not found; DATA_DIR should hold {'/'.join(parts)} "
                        "(laid out like ../shared/data)")
    return path


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a JSON-lines file; a malformed row is a one-line error naming file and line."""
    import json

    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 text (byte {exc.start}: {exc.reason}); re-download or "
                        "re-encode the file as UTF-8") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: malformed JSON row ({exc.msg})") from None
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: row lacks field(s) {', '.join(missing)}")
        rows.append(row)
    return rows


def load_hub(dataset: str, config: str | None, split: str) -> list[dict]:
    """Rows of a Hub dataset via `datasets`; offline failures become a one-line error."""
    try:
        import datasets

        return list(datasets.load_dataset(dataset, config, split=split))
    except Exception as exc:  # network, auth, missing split: all end the same way for the user
        raise UserError(f"could not load {dataset} ({split}) from the Hugging Face Hub "
                        f"({type(exc).__name__}); offline, pass DATA_DIR=../shared/data") from None
