"""GSM8K: grade-school math word problems with a numeric answer.

Source: docs/paper.md section 5. Data openai/gsm8k ("main"), offline copy DATA_DIR/gsm8k/{train,test}.jsonl.
Prompt: the question + ` Let's think step by step and output the final answer after "####".`
Answer: strict, the last "#### <number>"; else flexible, the last number anywhere in the response.
Correct: the extracted number equals the number after "####" in the gold solution.

Numbers are compared as normalised decimals: commas, "$", a "+" sign and a trailing period
are dropped and trailing zeros removed, so "$1,800.00", "1800." and "1800" are one answer.

Deviation: `load("train")` returns all 7473 training items; the paper uses the first 200,
and taking that slice is left to the caller (a method's selection budget).
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from harness.errors import UserError
from harness.task import Item, Task, data_file, load_hub, read_jsonl

SUFFIX = ' Let\'s think step by step and output the final answer after "####".'

# A number as models and the data write it: optional sign and "$", digits with commas, decimals.
_NUMBER = r"[-+]?\$?(?:\d[\d,]*(?:\.\d*)?|\.\d+)"
_STRICT = re.compile(r"####\s*(" + _NUMBER + ")")
_ANY = re.compile(_NUMBER)


def normalize_number(text: str) -> str:
    """Canonical decimal string of a number ("$1,234.50" -> "1234.5"); "" if not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", cleaned):
        return ""  # keeps Decimal from accepting "NaN", "Infinity" or "1e999999"
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return ""
    text = format(value.normalize(), "f")  # "f": 1800 stays "1800", not "1.8E+3"
    return "0" if text == "-0" else text


def extract_number(response: str) -> str:
    """Normalised last "#### n" if there is one, else the last number in the response."""
    for pattern in (_STRICT, _ANY):
        for match in reversed(pattern.findall(response)):
            number = normalize_number(match)
            if number:
                return number
    return ""


class Gsm8k(Task):
    name = "gsm8k"
    max_new_tokens = 1024

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        if split not in self.splits:
            raise UserError(f"gsm8k has no split {split!r}; use one of {', '.join(self.splits)}")
        if data_dir is None:
            rows = load_hub("openai/gsm8k", "main", split)
        else:
            rows = read_jsonl(data_file(data_dir, "gsm8k", f"{split}.jsonl"), ("question", "answer"))
        return [self._item(split, i, row) for i, row in enumerate(rows)]

    def _item(self, split: str, i: int, row: dict) -> Item:
        gold = normalize_number(row["answer"].split("####")[-1])
        if not gold:
            raise UserError(f"gsm8k {split} row {i}: answer has no number after '####'")
        messages = ({"role": "user", "content": row["question"] + SUFFIX},)
        return Item(id=f"gsm8k-{split}-{i}", messages=messages, gold=gold)

    def extract(self, response: str) -> str:
        return extract_number(response)

    def is_correct(self, key: str, item: Item) -> bool:
        return key != "" and normalize_number(key) == item.gold


TASK = Gsm8k()
