"""Taking the first n items of a split, with a clear error when the split is too short."""
from __future__ import annotations

from harness.errors import UserError
from harness.task import Item, Task


def first_items(task: Task, split: str, n: int | None, data_dir: str | None) -> list[Item]:
    items = task.load(split, data_dir)
    if n is None:
        return items
    if n > len(items):
        flag = "n_train" if split == "train" else "n_test"
        raise UserError(f"{flag}={n} is larger than the {task.name} {split} split ({len(items)} items); "
                        f"lower {flag}")
    return items[:n]


def train_items(task: Task, protocol) -> list[Item]:
    """The training items every method shares: the first n_train of the train split."""
    return first_items(task, "train", protocol.n_train, protocol.data_dir)


def test_items(task: Task, protocol) -> list[Item]:
    """The test items: the first n_test of the test split (all of it when n_test is None).
    Only the harness's evaluation (and its diagnostics) reads them."""
    return first_items(task, "test", protocol.n_test, protocol.data_dir)
