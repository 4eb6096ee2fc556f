"""MBPP: write a Python function from a one-line description; scored by running its asserts.

Source: docs/paper.md section 5 and the authors' MBPP handler. Data: the original release,
974 tasks, offline at DATA_DIR/mbpp/mbpp.jsonl, online google-research-datasets/mbpp (config
"full"). The authors concatenate the Hub's train (task_id 601-974), validation (511-600) and
test (11-510) splits, 964 tasks in that order (the 10 prompt tasks are unused), and take
[:200] as the train (selection) split and [200:] as the test split.

Prompt: the authors' system message and user message (the description, the first 3 asserts one
a line, the <think>/<answer> instructions). Code: the content of the last <answer>...</answer>,
else of the last ```python block, else of the last ``` block, stripped ("" if none). Reward 1
when test_setup_code followed by the code runs, and then every assert of test_list passes, each
of these steps within 5 s; else 0 (empty code scores 0). Correct = the vote key passes.

The vote key is the extracted code with trailing whitespace removed from each line. Votes on
code text are weak: two correct programs that differ in a variable name are different keys, so
the vote splits between equivalent programs and a few identical wrong ones can outvote them;
majority voting therefore helps less here than on tasks with a short answer. We keep the
authors' rule because the table compares against their numbers; voting on behaviour would mean
running every member's program on inputs, which for MBPP are the gold asserts.

Deviations from the authors' code, which exec()s the program inside its own process with a
SIGALRM timeout and nothing else:
- every program runs in harness/services/sandbox.py (own process, namespaces, unprivileged uid, no
  network, 1 GiB of address space, 1 MiB of output, no child processes or threads); a correct
  solution that needs more than that scores 0 here; the 5 s per step are the same;
- the key (trailing whitespace per line removed) is what runs, so reward and score cannot
  differ; this changes a program only inside a multi-line string literal with trailing spaces.
As in the authors' code, setup code runs before the solution: tasks 367 and 927, whose setup
builds objects of a class the solution defines, fail even with the reference solution, and code
wrapped in a ``` fence inside <answer> is run fences and all (a syntax error).

Max new tokens: 2048 (the authors' handler); the paper preset (1024) caps it.
"""
from __future__ import annotations

import re

from harness.errors import UserError
from harness.services.sandbox import Limits, Program, mode, run_all
from harness.task import Item, Task, data_file, load_hub, read_jsonl

SYSTEM = "You are a Python programming assistant. Write clean, correct Python code to solve the given problem."
USER = ("{text}\n\nYour code should pass these tests:\n{tests}\n\n"
        "Think through your solution in <think> </think> tags.\n"
        "Return your final Python code in <answer> </answer> tags, e.g.:\n"
        "<answer>\ndef solution(x):\n    return x + 1\n</answer>")
TRAIN_SIZE = 200
ORDER = (range(601, 975), range(511, 601), range(11, 511))  # the Hub's train, validation, test
HUB = ("google-research-datasets/mbpp", "full")
LIMITS = Limits(seconds=5.0)
CACHE_SIZE = 100_000

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PYTHON = re.compile(r"```python\n?(.*?)```", re.DOTALL)
_FENCE = re.compile(r"```\n?(.*?)```", re.DOTALL)


def extract_code(response: str) -> str:
    """The authors' extraction: last <answer>, else last ```python block, else last ``` block."""
    for pattern in (_ANSWER, _PYTHON, _FENCE):
        found = pattern.findall(response)
        if found:
            return found[-1].strip()
    return ""


def normalize_code(code: str) -> str:
    """The vote key: trailing whitespace dropped from every line and from the end."""
    return "\n".join(line.rstrip() for line in code.splitlines()).strip("\n")


def program(code: str, gold: dict) -> Program:
    """What the authors run: setup + code as one step, then each assert as its own step."""
    setup = gold["test_setup_code"]
    source = (setup + "\n" if setup.strip() else "") + code + "\n"
    return Program(source, tuple(gold["test_list"]))


class Mbpp(Task):
    name = "mbpp"
    max_new_tokens = 2048

    def __init__(self, limits: Limits = LIMITS):
        self.limits = limits
        self._passed: dict[tuple, bool] = {}  # (code, setup, asserts) -> passed: members often agree

    def load(self, split: str, data_dir: str | None) -> list[Item]:
        if split not in self.splits:
            raise UserError(f"mbpp has no split {split!r}; use one of {', '.join(self.splits)}")
        rows = self._rows(data_dir)
        mode()  # a machine that cannot run code safely says so now, before any generation
        rows = rows[:TRAIN_SIZE] if split == "train" else rows[TRAIN_SIZE:]
        return [self._item(split, i, row) for i, row in enumerate(rows)]

    def _rows(self, data_dir: str | None) -> list[dict]:
        """The 964 tasks in the authors' order."""
        if data_dir is None:
            return [row for split in ("train", "validation", "test") for row in load_hub(*HUB, split)]
        path = data_file(data_dir, "mbpp", "mbpp.jsonl")
        by_id = {row["task_id"]: row for row in read_jsonl(path, ("task_id", "text", "test_list", "test_setup_code"))}
        wanted = [task_id for part in ORDER for task_id in part]
        missing = [t for t in wanted if t not in by_id]
        if missing:
            raise UserError(f"{path} lacks task_id {missing[0]} (and {len(missing) - 1} more); "
                            "it should be the original 974-task release")
        return [by_id[t] for t in wanted]

    def _item(self, split: str, i: int, row: dict) -> Item:
        tests = list(row["test_list"])
        messages = ({"role": "system", "content": SYSTEM},
                    {"role": "user", "content": USER.format(text=row["text"], tests="\n".join(tests[:3]))})
        gold = {"test_setup_code": row.get("test_setup_code") or "", "test_list": tests}
        return Item(id=f"mbpp-{split}-{i}", messages=messages, gold=gold,
                    meta={"task_id": row["task_id"], "code": row.get("code", "")})

    def extract(self, response: str) -> str:
        return extract_code(response)

    def vote_key(self, response: str, item: Item) -> str:
        return normalize_code(extract_code(response))

    def is_correct(self, key: str, item: Item) -> bool:
        return self.are_correct([key], [item])[0]

    def are_correct(self, keys: list[str], items: list[Item]) -> list[bool]:
        """Run every non-empty key against its item's asserts, the whole batch in parallel."""
        def cache_key(code: str, item: Item) -> tuple:
            return code, item.gold["test_setup_code"], tuple(item.gold["test_list"])

        if len(self._passed) > CACHE_SIZE:
            self._passed.clear()
        todo = {cache_key(k, it): program(k, it.gold) for k, it in zip(keys, items)
                if k.strip() and cache_key(k, it) not in self._passed}
        outcomes = run_all(list(todo.values()), self.limits)
        self._passed.update((key, out.passed) for key, out in zip(todo, outcomes))
        return [bool(k.strip()) and self._passed[cache_key(k, it)] for k, it in zip(keys, items)]

    def rewards(self, responses: list[str], items: list[Item]) -> list[float]:
        keys = [self.vote_key(r, it) for r, it in zip(responses, items)]
        return [float(ok) for ok in self.are_correct(keys, items)]

    def reward(self, response: str, item: Item) -> float:
        return self.rewards([response], [item])[0]


TASK = Mbpp()
