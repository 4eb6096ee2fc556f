"""Countdown: combine the given numbers with + - * / to reach a target.

Source: docs/paper.md section 5 and the ES paper's countdown.json (2200 items; items [:200]
are the train/selection split, [200:] the test split), offline at
DATA_DIR/countdown/countdown.json. Prompts are the paper's system and user messages; the
numbers are rendered as in the data's `context` field (numpy style: "[44 19 35]", "[ 8 16 56]").

Rule of the released ES code (countdown_task.py), reproduced here:
- answer: the content of the last <answer>...</answer>; it scores 1 if it uses only digits,
  + - * / ( ) and spaces, uses each given number exactly once (multiset equality), and
  evaluates to within 1e-5 of the target; else 0.
- format_score(text): 1.0 if text is exactly `<think>...</think>\\n<answer>...</answer>`;
  else 0.1 if a <think>...</think> block is present, plus 0.5 if an <answer>...</answer> is.
- reward = 0.1 * format_score("<think>" + response) + answer  (the prompt opens the think block).

Deviations: the formula is evaluated by tasks/_arithmetic.py (never eval()), which also
rejects `**`, `//` and unary signs; the answer is stripped of surrounding whitespace; the
full-format match allows surrounding whitespace. Some data targets are not integers
("27.4"): the target is kept as an exact Fraction of its decimal string.

Offline fallback: the Hugging Face Hub has no copy of this split, so with no data directory
the task generates solvable instances from a fixed seed per split (200 train, 2000 test),
each built from a known formula kept in item.meta["solution"].
"""
from __future__ import annotations

import json
import operator
import random
import re
from fractions import Fraction

from harness.errors import UserError
from harness.task import Item, Task, data_file
from tasks._arithmetic import evaluate, numbers_used

SYSTEM = ("You are a helpful assistant. You first think about the reasoning process in your mind "
          "and then provide the user with the answer.")
USER = ("Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
        "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work "
        "in <think> </think> tags. And return the final answer in <answer> </answer> tags, for "
        "example <answer> (1 + 2) / 3 </answer>.")
TRAIN_SIZE = 200
GENERATED_TEST_SIZE = 2000

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FULL = re.compile(r"\s*<think>.*?</think>\n<answer>.*?</answer>\s*", re.DOTALL)
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def render_numbers(numbers: list[int]) -> str:
    """Numbers as the data's prompts show them: numpy's array print, right-aligned to one width."""
    width = max(len(str(n)) for n in numbers)
    return "[" + " ".join(str(n).rjust(width) for n in numbers) + "]"


def format_score(text: str) -> float:
    """The released ES code's format score (see the module docstring)."""
    if _FULL.fullmatch(text):
        return 1.0
    return (0.1 if _THINK.search(text) else 0.0) + (0.5 if _ANSWER.search(text) else 0.0)


def generate(split: str, count: int) -> list[dict]:
    """`count` solvable rows from a seed fixed per split, shaped like countdown.json's rows."""
    rng = random.Random(f"countdown-{split}")
    rows = []
    while len(rows) < count:
        numbers = [rng.randint(1, 99) for _ in range(rng.choice((3, 4)))]
        built = _combine(rng, numbers)
        if built is not None:
            target, formula = built
            rows.append({"id": len(rows), "numbers": numbers, "target": str(target), "solution": formula})
    return rows


def _combine(rng: random.Random, numbers: list[int]) -> tuple[int, str] | None:
    """Join the numbers pairwise with random operators; None unless the result is in 1..1000."""
    pool = [(Fraction(n), str(n)) for n in numbers]
    rng.shuffle(pool)
    while len(pool) > 1:
        (a, fa), (b, fb) = pool.pop(), pool.pop()
        op = rng.choice("+-*/")
        if op == "/" and (b == 0 or a % b != 0):
            op = "+"  # keep intermediate values whole, as a person would solve it
        pool.append((_OPS[op](a, b), f"({fa} {op} {fb})"))
        rng.shuffle(pool)
    value, formula = pool[0]
    return (int(value), formula) if value.denominator == 1 and 1 <= value <= 1000 else None


def _read(path) -> list[dict]:
    """countdown.json's rows; malformed content is a one-line error naming the file."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON array of items")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"numbers", "target"} <= row.keys():
            raise UserError(f"{path}: item {i} lacks field(s) numbers/target")
        try:
            Fraction(str(row["target"]))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"{path}: item {i} has a non-numeric target {row['target']!r}") from None
    return rows


class Countdown(Task):
    name = "countdown"
    max_new_tokens = 1024

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        if split not in self.splits:
            raise UserError(f"countdown has no split {split!r}; use one of {', '.join(self.splits)}")
        if data_dir is None:
            rows = generate(split, TRAIN_SIZE if split == "train" else GENERATED_TEST_SIZE)
        else:
            rows = _read(data_file(data_dir, "countdown", "countdown.json"))
            rows = rows[:TRAIN_SIZE] if split == "train" else rows[TRAIN_SIZE:]
        return [self._item(split, i, row) for i, row in enumerate(rows)]

    def _item(self, split: str, i: int, row: dict) -> Item:
        numbers, target = [int(n) for n in row["numbers"]], str(row["target"])
        messages = ({"role": "system", "content": SYSTEM},
                    {"role": "user", "content": USER.format(numbers=render_numbers(numbers), target=target)})
        return Item(id=f"countdown-{split}-{i}", messages=messages,
                    gold={"numbers": numbers, "target": Fraction(target)},
                    meta={"solution": row.get("solution"), "source_id": row.get("id")})

    def extract(self, response: str) -> str:
        answers = _ANSWER.findall(response)
        return answers[-1].strip() if answers else ""

    def vote_key(self, response: str, item: Item) -> str:
        formula = self.extract(response)
        value = evaluate(formula)
        if value is None or numbers_used(formula) != sorted(item.gold["numbers"]):
            return ""
        return str(value)  # Fraction's str: "98", "7/2"

    def is_correct(self, key: str, item: Item) -> bool:
        try:
            value = Fraction(key)
        except (ValueError, ZeroDivisionError):  # "" (abstain) or a foreign key
            return False
        return abs(value - item.gold["target"]) <= Fraction(1, 10**5)

    def reward(self, response: str, item: Item) -> float:
        answer = 1.0 if self.is_correct(self.vote_key(response, item), item) else 0.0
        return 0.1 * format_score("<think>" + response) + answer


TASK = Countdown()
