"""MBPP: write a Python function from a one-line description; scored by running its asserts.

Source: docs/paper.md section 5 and the authors' MBPP handler. Data: the original release,
974 tasks, offline at DATA_DIR/mbpp/mbpp.jsonl, online google-research-datasets/mbpp (config
"full"). The authors concatenate the Hub's train (task_id 601-974), validation (511-600) and
test (11-510) splits, 964 tasks in that order (the 10 prompt tasks are unused), and take
[:200] as the train (selection) split and [200:] as the test split.

Prompt: the authors' system message and user message (the description, the first 3 asserts one
a line, the <think>/<answer> instructions). Code: the content of the last <answer>...</answer>,
else of the last ```python block, else of the last ``` block, stripped ("" if none). Reward 1
when test_setup_code followed by the code runs, and then every assert of test_list holds (judged
by the harness on the values the program returns, see below), each of these steps within 5 s;
else 0 (empty code scores 0). Correct = the vote key passes.

The vote key is the extracted code with trailing whitespace removed from each line. Votes on
code text are weak: two correct programs that differ in a variable name are different keys, so
the vote splits between equivalent programs and a few identical wrong ones can outvote them;
majority voting therefore helps less here than on tasks with a short answer. We keep the
authors' rule because the table compares against their numbers; voting on behaviour would mean
running every member's program on inputs, which for MBPP are the gold asserts.

Deviations from the authors' code, which exec()s the program and its asserts inside its own
process with a SIGALRM timeout and nothing else:
- every program runs in harness/services/sandbox.py (own process, namespaces, a minimal root holding only
  the Python runtime, unprivileged uid, no network, 1 GiB of address space, 1 MiB of output, no
  child processes or threads); a correct solution that needs more than that scores 0 here; the
  5 s per step are the same;
- the checker: in the authors' process the program's objects take part in the comparison, so a
  function returning an object whose `__eq__` always says True passes every `==` assert, and a
  program can read the asserts from its caller's frame. Here the assert is split
  (harness/services/sandbox_check.py): the child evaluates only the sub-expression that involves the
  program (`f(x)`, `int(f(x))`) and sends its value as plain data (exact int, float, complex,
  bool, str, bytes, None, list, tuple, set, frozenset, dict; the standard library's Counter,
  defaultdict and OrderedDict as the dict of their items); the harness computes the expected
  side and the comparison. A solution that returns any other object (a map, a generator, a
  class of its own, a numpy number) scores 0 even where the authors' `==` would accept it; none
  of the 974 reference solutions does. Each failure records its reason (`Mbpp.explain`);
- the key (trailing whitespace per line removed) is what runs, so reward and score cannot
  differ; this changes a program only inside a multi-line string literal with trailing spaces.
As in the authors' code, setup code runs before the solution: tasks 367 and 927, whose setup
builds objects of a class the solution defines, fail even with the reference solution, and code
wrapped in a ``` fence inside <answer> is run fences and all (a syntax error). Every other
reference solution of the 974 scores 1.

The 2922 asserts of the 974 tasks (3 each) by shape, as the checker splits them:
- 2913 `assert CALL == LITERAL` (the harness: `ast.literal_eval`): every assert of 968 tasks (in
  task 912 CALL is `int(f(x))`, evaluated whole in the child), the 6 of the 2 tasks with
  test_setup_code (367, 927; the setup runs in the child, before the code), 3 in tasks 313, 362;
- 6 `assert CALL == LITERAL, MESSAGE` (tasks 313, 362, 436: results written `== 1,2`, so the
  tuple's tail became the message): checked as `CALL == LITERAL`, the message never evaluated
  (Python evaluates it only when the assert fails);
- 3 `assert CALL == sys.getsizeof(LITERAL)` (task 596): the harness computes getsizeof itself
  (the children run the same interpreter).
No assert in this release uses math.isclose, set(CALL), a bare call or `not`; the checker splits
those too (the comparison, `not`, `and`/`or` and isclose with its tolerances run in the harness).
Floats compare as the assert says: `==` exactly (the value crosses as float.hex).

Max new tokens: 2048 (the authors' handler); the paper preset (1024) caps it.
"""
from __future__ import annotations

import re

from harness.errors import UserError
from harness.services.sandbox import Limits, Outcome, Program, mode, run_all
from harness.services.sandbox_check import compile_check
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
        self._outcomes: dict[tuple, tuple[bool, str]] = {}  # (code, setup, asserts) -> (passed, why not)

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
        for test in tests:  # an assert the checker cannot split stops the run here, not mid-evaluation
            try:
                compile_check(test)
            except ValueError as exc:
                raise UserError(f"mbpp task {row['task_id']}: {exc}") from None
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
        return [passed for passed, _ in self.outcomes(keys, items)]

    def explain(self, key: str, item: Item) -> str:
        """Why a vote key fails its item ("" when it passes): the reason the sandbox recorded."""
        return self.outcomes([key], [item])[0][1]

    def outcomes(self, keys: list[str], items: list[Item]) -> list[tuple[bool, str]]:
        """(passed, why not) per key; each distinct (code, item) runs once per cache lifetime."""
        if len(self._outcomes) > CACHE_SIZE:
            self._outcomes.clear()
        todo = {_cache_key(k, it): program(k, it.gold) for k, it in zip(keys, items)
                if k.strip() and _cache_key(k, it) not in self._outcomes}
        outcomes: list[Outcome] = run_all(list(todo.values()), self.limits)
        self._outcomes.update((key, (out.passed, out.reason)) for key, out in zip(todo, outcomes))
        return [self._outcomes[_cache_key(k, it)] if k.strip() else (False, "no code")
                for k, it in zip(keys, items)]

    def rewards(self, responses: list[str], items: list[Item]) -> list[float]:
        keys = [self.vote_key(r, it) for r, it in zip(responses, items)]
        return [float(ok) for ok in self.are_correct(keys, items)]

    def reward(self, response: str, item: Item) -> float:
        return self.rewards([response], [item])[0]


def _cache_key(code: str, item: Item) -> tuple:
    return code, item.gold["test_setup_code"], tuple(item.gold["test_list"])


TASK = Mbpp()
