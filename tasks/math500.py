"""MATH-500: competition math problems with a LaTeX answer.

Source: docs/paper.md section 5. Data HuggingFaceH4/MATH-500 (one "test" split of 500), offline
at DATA_DIR/math500/test.jsonl. Our "train" (selection) split is items [:200], "test" [200:].
Prompt: the problem + "\\n\\nLet's think step by step and output the final answer after ####",
verbatim from the paper, although the scorer looks for the last \\boxed{...} (as the paper's does).

Answers are compared by tasks/_math_answers.py (shared with olympiadbench): a light LaTeX
normalisation (`normalize`), plain numbers compared exactly as fractions within 1e-6, all other
answers as normalised strings.
Deviation: this is simpler than a symbolic checker (no sympy), so equivalent forms such as
"\\frac{\\sqrt3}{2}" vs "\\frac{1}{2}\\sqrt3" are not recognised as equal.
"""
from __future__ import annotations

from harness.errors import UserError
from harness.task import Item, Task, data_file, load_hub, read_jsonl
from tasks._math_answers import equivalent, last_boxed, normalize

__all__ = ["TASK", "equivalent", "last_boxed", "normalize"]  # the scorer, re-exported for callers

SUFFIX = "\n\nLet's think step by step and output the final answer after ####"
TRAIN_SIZE = 200


class Math500(Task):
    name = "math500"
    max_new_tokens = 1024

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        if split not in self.splits:
            raise UserError(f"math500 has no split {split!r}; use one of {', '.join(self.splits)}")
        if data_dir is None:
            rows = load_hub("HuggingFaceH4/MATH-500", None, "test")
        else:
            rows = read_jsonl(data_file(data_dir, "math500", "test.jsonl"), ("problem", "answer"))
        rows = rows[:TRAIN_SIZE] if split == "train" else rows[TRAIN_SIZE:]
        return [self._item(split, i, row) for i, row in enumerate(rows)]

    def _item(self, split: str, i: int, row: dict) -> Item:
        messages = ({"role": "user", "content": row["problem"] + SUFFIX},)
        return Item(id=f"math500-{split}-{i}", messages=messages, gold=normalize(row["answer"]),
                    meta={"answer": row["answer"], "unique_id": row.get("unique_id")})

    def extract(self, response: str) -> str:
        return last_boxed(response)

    def vote_key(self, response: str, item: Item) -> str:
        return normalize(self.extract(response))

    def is_correct(self, key: str, item: Item) -> bool:
        return key != "" and equivalent(normalize(key), item.gold)


TASK = Math500()
