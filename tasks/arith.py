"""Arith: two-digit addition ("What is 37 + 58?"), a tiny smoke-test task.

Not from the paper: it exists so that CPU presets and tests can exercise every method with
a small model in seconds. Items are generated from a fixed seed per split (1000 each, both
addends uniform in 10..99), so no data files are needed and `data_dir` is ignored.
Answer: the last integer in the response; correct if it equals the sum.
"""
from __future__ import annotations

import random
import re

from harness.errors import UserError
from harness.task import Item, Task

SIZE = 1000
_INTEGER = re.compile(r"-?\d+(?:,\d{3})*")


class Arith(Task):
    name = "arith"
    max_new_tokens = 12

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        if split not in self.splits:
            raise UserError(f"arith has no split {split!r}; use one of {', '.join(self.splits)}")
        rng = random.Random(f"arith-{split}")
        items = []
        for i in range(SIZE):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            messages = ({"role": "user", "content": f"What is {a} + {b}? Reply with only the number."},)
            items.append(Item(id=f"arith-{split}-{i}", messages=messages, gold=str(a + b)))
        return items

    def extract(self, response: str) -> str:
        matches = _INTEGER.findall(response)
        if not matches:
            return ""
        try:
            return str(int(matches[-1].replace(",", "")))  # "0105" -> "105"
        except ValueError:  # more digits than int() converts
            return ""

    def is_correct(self, key: str, item: Item) -> bool:
        return key == item.gold


TASK = Arith()
