"""OlympiadBench: open-ended, text-only, English competition maths (subset OE_TO_maths_en_COMP).

Source: docs/paper.md section 5 and the authors' OlympiadBench handler. Data: 675 problems,
offline at DATA_DIR/olympiadbench/test.jsonl (`id`, `problem`, `answer`), online the Hub copy
Hothan/OlympiadBench (config OE_TO_maths_en_COMP, its one split "train"; `question`, and the
first of `final_answer`). Train (selection) split items [:200], test [200:].
Prompt: the problem + "\\n\\n" + "Let’s think step by step and output the final answer after ####."
(the authors' text, curly apostrophe included). Max new tokens 2048 (the authors' handler; the
paper preset's 1024 caps it).

Answer: the last \\boxed{...}, else the answer after the last "####" (tasks/_math_answers.py,
shared with math500). Gold answers lose their `$` delimiters. Comparison, element by element:
- an answer is split at its top-level commas (outside brackets) into values; an answer wrapped
  whole in \\{...\\} is the set of its values;
- the values compare as a multiset, in any order ("$-1$,$2$,$-2$" = "-2, -1, 2"): the official
  OlympiadBench judge does the same, and the data does not say when order matters (the gold of
  "the minimum and maximum values" is "5,1", maximum first);
- a value that is one bracketed group with commas, a tuple "(1,8,19)" or interval "[1/2, 8]",
  compares in order, brackets included; bare values never equal a tuple ("2, 4" is not "(2,4)":
  the key sorts bare values, so their order is gone);
- single values compare as in math500 (`equivalent`: numbers within 1e-6, else normalised text).
The vote key is the canonical answer: normalised values, sorted, joined by commas.

Cases the checker cannot decide (the counts, on all 675 gold answers (493 are decidable), are checked by
tests/test_olympiadbench.py; `undecidable` names a gold answer's case):
- prose (1): the gold holds words ("f(x)=ax+b, where b is an arbitrary integer"); only the
  same words, normalised, count;
- equation (21): a value is an equation ("f(x)=x", "\\angle BEA_1=90"; a lone "a=2" is just 2):
  an equivalent rearrangement or another variable name counts wrong;
- symbolic (107): some value is not a plain number (\\sqrt, \\pi, \\log, powers, variables,
  \\infty, \\pm, unions): equivalent forms written differently count wrong (no symbolic algebra);
- order (53): a flat list of several numbers, compared in any order even where the problem asks
  for named values in turn ("determine a and b"), so a permuted answer counts right.
On the prediction side, a number written unevaluated (2^{10}, \\sqrt{4}, 1e3) never equals a plain
number. Deviation from the authors' checker (strict boxed extraction, else loose patterns such
as "answer is X", then string, numeric and in-order coordinate comparisons): ours is the
math500 checker plus the element-wise rules above.
"""
from __future__ import annotations

import re

from harness.errors import UserError
from harness.task import Item, Task, data_file, load_hub, read_jsonl
from tasks._math_answers import answer_after_hashes, as_number, equivalent, last_boxed, normalize

INSTRUCTION = "Let’s think step by step and output the final answer after ####."
TRAIN_SIZE = 200
HUB = ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")
_BLANKS = re.compile(r"\$|\\left|\\right|\\q?quad\b|\\displaystyle")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def split_top(text: str) -> list[str]:
    """Pieces of `text` between commas that lie outside every bracket ( [ {."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [p.strip() for p in parts + [text[start:]]]


def _group(text: str) -> tuple[str, str, str] | None:
    """(open, inside, close) when `text` is one bracket group ( ), [ ] or \\{ \\} from end to end."""
    for open_, close in (("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")):
        if text.startswith(open_) and text.endswith(close) and len(text) >= len(open_) + len(close):
            inside = text[len(open_):len(text) - len(close)]
            depth = 0
            for char in inside:  # the first bracket must close at the end, not earlier
                depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
                if depth < 0:
                    return None
            return (open_, inside, close) if depth == 0 else None
    return None


def _value(text: str) -> str:
    """Canonical form of one value: a tuple or interval keeps its brackets and order."""
    group = _group(text)
    if group and group[0] != "\\{" and len(split_top(group[1])) > 1:
        return group[0] + ",".join(normalize(x) for x in split_top(group[1])) + group[2]
    return normalize(text)


def values(answer: str) -> list[str]:
    """The canonical values of an answer, in the order written."""
    text = _BLANKS.sub(" ", answer).strip().rstrip(".").strip()
    group = _group(text)
    if group and group[0] == "\\{":  # a set: its values
        text = group[1].strip()
    if not text:
        return []
    if _THOUSANDS.fullmatch(text):  # "10,080" is one number, as in math500; "1, 3" is two
        return [normalize(text)]
    return [v for v in (_value(part) for part in split_top(text)) if v]


def canonical(answer: str) -> str:
    """The vote key and the stored gold: canonical values, sorted, joined by commas."""
    return ",".join(sorted(values(answer)))


def _same_value(a: str, b: str) -> bool:
    ga, gb = _group(a), _group(b)
    if ga and gb and ga[0] == gb[0] and ga[2] == gb[2]:
        xs, ys = split_top(ga[1]), split_top(gb[1])
        return len(xs) == len(ys) and all(equivalent(x, y) for x, y in zip(xs, ys))
    return equivalent(a, b)


def same_answer(key: str, gold: str) -> bool:
    """Whether two canonical answers hold the same values (as multisets, see the docstring)."""
    xs, ys = split_top(key) if key else [], split_top(gold) if gold else []
    if len(xs) != len(ys) or not xs:
        return False
    unmatched = list(ys)
    for x in xs:
        match = next((i for i, y in enumerate(unmatched) if _same_value(x, y)), None)
        if match is None:
            return False
        unmatched.pop(match)
    return True


def undecidable(gold: str) -> str | None:
    """Which case of the docstring's list a raw gold answer falls in (None: decidable)."""
    text = _BLANKS.sub(" ", gold)
    if re.search(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", " ", text)):
        return "prose"
    found = values(gold)
    if any("=" in v for v in found):  # "a=2" lost its "a=" in normalize: only a real equation is left
        return "equation"
    atoms = [x for v in found for x in (split_top(_group(v)[1]) if _group(v) else [v])]
    if any(as_number(a) is None for a in atoms):
        return "symbolic"
    if len(found) > 1 and not any(_group(v) for v in found):
        return "order"
    return None


class OlympiadBench(Task):
    name = "olympiadbench"
    max_new_tokens = 2048

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        if split not in self.splits:
            raise UserError(f"olympiadbench has no split {split!r}; use one of {', '.join(self.splits)}")
        if data_dir is None:
            rows = [{"id": r["id"], "problem": r["question"], "answer": (r["final_answer"] or [""])[0]}
                    for r in load_hub(*HUB)]
        else:
            rows = read_jsonl(data_file(data_dir, "olympiadbench", "test.jsonl"), ("problem", "answer"))
        rows = rows[:TRAIN_SIZE] if split == "train" else rows[TRAIN_SIZE:]
        return [self._item(split, i, row) for i, row in enumerate(rows)]

    def _item(self, split: str, i: int, row: dict) -> Item:
        gold = canonical(row["answer"])
        if not gold:
            raise UserError(f"olympiadbench {split} row {i}: empty answer {row['answer']!r}")
        messages = ({"role": "user", "content": row["problem"] + "\n\n" + INSTRUCTION},)
        return Item(id=f"olympiadbench-{split}-{i}", messages=messages, gold=gold,
                    meta={"answer": row["answer"], "source_id": row.get("id")})

    def extract(self, response: str) -> str:
        return last_boxed(response) or answer_after_hashes(response)

    def vote_key(self, response: str, item: Item) -> str:
        return canonical(self.extract(response))

    def is_correct(self, key: str, item: Item) -> bool:
        return key != "" and same_answer(canonical(key), item.gold)


TASK = OlympiadBench()
