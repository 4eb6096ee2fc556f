"""MBPP: the authors' order and prompt, code extraction, vote keys, and scoring through the
sandbox (the real reference solutions of the 200 train tasks pass, of all 974 in a slow test
but tasks 367 and 927; wrong ones fail, and so do programs that fake a pass, with their reason)."""
from __future__ import annotations

import dataclasses
import json

import pytest

import tasks.mbpp as mbpp
from harness.errors import UserError
from harness.services.sandbox import Limits, run_all
from harness.task import Item
from tasks.mbpp import TASK as MBPP, Mbpp, extract_code, normalize_code

GOLD = {"test_setup_code": "", "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0",
                                             "assert add(10, 5) == 15"]}
ITEM = Item(id="t", messages=(), gold=GOLD)
FAST = Mbpp(Limits(seconds=1.0))  # short step limit: the hanging cases take about a second
RIGHT = "def add(a, b):\n    return a + b"


@pytest.mark.parametrize("response, code", [
    ("<answer>\ndef f():\n    return 1\n</answer>", "def f():\n    return 1"),
    ("<answer>a = 1</answer> no, <answer>a = 2</answer>", "a = 2"),                  # the last answer
    ("```python\nx = 1\n```", "x = 1"),
    ("```python\nx = 1\n``` and ```python\nx = 2\n```", "x = 2"),
    ("```\ny = 3\n```", "y = 3"),
    ("<answer>a</answer>\n```python\nb\n```", "a"),                                    # answer beats fences
    ("```python\nb\n```\n```\nc\n```", "b"),                                           # python fence first
    ("<answer>```python\ndef f(): return 1\n```</answer>", "```python\ndef f(): return 1\n```"),  # as the authors
    ("<answer></answer>", ""),
    ("<answer>def f(): unclosed", ""),
    ("<think>hmm</think> plain text", ""),
    ("", ""),
])
def test_extract_code(response, code):
    assert extract_code(response) == code
    assert MBPP.extract(response) == code


@pytest.mark.parametrize("code, key", [
    ("def f():   \n    return 1   \n\n\n", "def f():\n    return 1"),
    ("def f():\r\n    return 1\r\n", "def f():\n    return 1"),
    ("\n\n  x = 1", "  x = 1"),                                                         # leading indent kept
    ("", ""),
])
def test_normalize_code(code, key):
    assert normalize_code(code) == key


def test_vote_keys_ignore_trailing_whitespace():
    a = MBPP.vote_key("<answer>\ndef add(a, b):   \n    return a + b\n\n</answer>", ITEM)
    b = MBPP.vote_key("```python\ndef add(a, b):\n    return a + b  \n```", ITEM)
    assert a == b == RIGHT


@pytest.mark.parametrize("code, reward", [
    (RIGHT, 1.0),
    ("def add(a, b):\n    return a - b", 0.0),                                     # wrong
    ("def add(a, b):\n    return 3", 0.0),                                         # passes the first assert only
    ("def add(a, b) return a + b", 0.0),                                           # syntax error
    ("", 0.0),                                                                     # no code
    ("import sys\nsys.exit(0)\n" + RIGHT, 0.0),                                    # exit 0 is not a pass
    (RIGHT + "\nimport os\nos._exit(0)", 0.0),
    (RIGHT + "\nimport builtins\nbuiltins.AssertionError = None", 1.0),            # still its own asserts
    (RIGHT + "\nif __name__ == '__main__':\n    raise SystemExit(1)", 1.0),        # not run: exec(code, {})
    (RIGHT + "\nprint('x' * 10000)", 1.0),                                         # output under the cap
    ("class A:\n    def __eq__(s, o):\n        return True\ndef add(a, b):\n    return A()", 0.0),  # always equal
    ("class I(int):\n    def __eq__(s, o):\n        return True\ndef add(a, b):\n    return I(0)", 0.0),
    ("import sys\ndef add(a, b):\n    return eval(sys._getframe(1).f_locals.get('step', '0').split('==')[1])", 0.0),
    ("def add(a, b):\n    while True:\n        pass", 0.0),                        # hangs in the asserts
    ("while True:\n    pass\n" + RIGHT, 0.0),                                      # hangs before them
])
def test_reward(code, reward, no_eval):
    response = f"<think>ok</think>\n<answer>\n{code}\n</answer>"
    assert FAST.reward(response, ITEM) == reward
    assert FAST.is_correct(FAST.vote_key(response, ITEM), ITEM) is bool(reward)


def test_setup_code_runs_before_the_code():
    gold = {"test_setup_code": "BASE = 10", "test_list": ["assert f() == 11"]}
    it = Item(id="s", messages=(), gold=gold)
    assert FAST.is_correct("def f():\n    return BASE + 1", it)
    assert not FAST.is_correct("def f():\n    return BASE + 2", it)


def test_batch_scores_in_parallel_and_caches(monkeypatch):
    task = Mbpp(Limits(seconds=1.0))
    responses = [f"<answer>{RIGHT}</answer>", "<answer>def add(a, b): return 0</answer>", "nothing", "<answer>\n"
                 f"{RIGHT}   \n</answer>"]
    assert task.rewards(responses, [ITEM] * 4) == [1.0, 0.0, 0.0, 1.0]
    calls = []
    real = mbpp.run_all
    monkeypatch.setattr(mbpp, "run_all", lambda programs, limits: calls.append(len(programs)) or real(programs, limits))
    assert task.are_correct([RIGHT, "", RIGHT + "\n# new"], [ITEM] * 3) == [True, False, True]
    assert calls == [1]  # the known program is not run again, the empty key never runs


def test_authors_order_and_prompt(data_dir):
    train, test = MBPP.load("train", data_dir), MBPP.load("test", data_dir)
    assert (len(train), len(test)) == (200, 764)
    ids = [it.meta["task_id"] for it in train + test]
    assert ids == list(range(601, 975)) + list(range(511, 601)) + list(range(11, 511))
    first = train[0]
    assert first.messages[0] == {"role": "system", "content": mbpp.SYSTEM}
    user = first.messages[1]["content"]
    assert user.startswith("Write a function to find the longest chain which can be formed from the given set of "
                           "pairs.\n\nYour code should pass these tests:\nassert max_chain_length(")
    assert user.endswith("Think through your solution in <think> </think> tags.\nReturn your final Python code in "
                         "<answer> </answer> tags, e.g.:\n<answer>\ndef solution(x):\n    return x + 1\n</answer>")
    assert user.count("\nassert ") == 3 and MBPP.max_new_tokens == 2048


def test_the_200_train_reference_solutions_pass_and_wrong_ones_fail(data_dir):
    items = MBPP.load("train", data_dir)
    refs = [normalize_code(it.meta["code"]) for it in items]
    failing = [(it.meta["task_id"], why) for it, (ok, why) in zip(items, Mbpp().outcomes(refs, items)) if not ok]
    assert failing == []
    wrong = refs[1:51] + refs[:1]  # each of the first 50 tasks gets its neighbour's solution
    assert MBPP.are_correct(wrong, items[:50]) == [False] * 50
    assert MBPP.rewards([f"<answer>\n{r}\n</answer>" for r in refs[:5]], items[:5]) == [1.0] * 5


@pytest.mark.slow
def test_all_974_reference_solutions_pass_but_the_two_whose_setup_needs_them(data_dir):
    """The whole release, the 10 prompt tasks included; 367 and 927 fail by design (docstring)."""
    rows = [json.loads(line) for line in open(f"{data_dir}/mbpp/mbpp.jsonl", encoding="utf-8")]
    programs = [mbpp.program(normalize_code(r["code"]), {"test_setup_code": r["test_setup_code"] or "",
                                                          "test_list": r["test_list"]}) for r in rows]
    # what is checked here is the checker, not this machine's speed: task 123's reference takes 6.6 s
    # for one assert on a slow day (amicable_numbers_sum(9999)), past the 5 s scoring limit
    generous = dataclasses.replace(mbpp.LIMITS, seconds=60.0)
    failing = {r["task_id"]: out.reason for r, out in zip(rows, run_all(programs, generous)) if not out.passed}
    assert failing == {367: "the code: raised NameError: name 'Node' is not defined",
                       927: "the code: raised NameError: name 'Node' is not defined"}


@pytest.mark.parametrize("code, why", [
    (RIGHT, ""),
    ("def add(a, b):\n    return a - b", "assert 1: wrong value: got -1, expected 3"),
    ("def add(a, b) return a + b", "the code: syntax error: "),
    ("class A:\n    def __eq__(s, o):\n        return True\ndef add(a, b):\n    return A()",
     "assert 1: a value that is not plain data (A)"),
    ("def add(a, b):\n    return [a][2]", "assert 1: raised IndexError: list index out of range"),
    ("def add(a, b):\n    while True:\n        pass", "assert 1 ran past its time limit"),
    ("", "no code"),
])
def test_explain_names_why_a_program_fails(code, why):
    assert FAST.explain(code, ITEM).startswith(why) and bool(FAST.explain(code, ITEM)) is bool(why)
    assert FAST.is_correct(code, ITEM) is (why == "")


def test_load_from_the_hub(monkeypatch):
    def fake_hub(dataset, config, split):
        assert (dataset, config) == ("google-research-datasets/mbpp", "full")
        start = {"train": 601, "validation": 511, "test": 11}[split]
        return [{"task_id": start + i, "text": f"{split} {i}", "code": "", "test_list": ["assert 1"] * 3,
                 "test_setup_code": ""} for i in range(150)]

    monkeypatch.setattr(mbpp, "load_hub", fake_hub)
    train, test = MBPP.load("train", None), MBPP.load("test", None)
    assert [it.meta["task_id"] for it in train[148:152]] == [749, 750, 511, 512]
    assert test[0].meta["task_id"] == 561 and len(test) == 250


def test_an_assert_the_checker_cannot_split_stops_the_load(monkeypatch):
    def fake_hub(dataset, config, split):
        start = {"train": 601, "validation": 511, "test": 11}[split]
        return [{"task_id": start + i, "text": "t", "code": "", "test_setup_code": "",
                 "test_list": ["assert f() == 2 * 3" if start + i == 605 else "assert f() == 6"]} for i in range(400)]

    monkeypatch.setattr(mbpp, "load_hub", fake_hub)
    with pytest.raises(UserError, match=r"task 605: .*cannot evaluate '2 \* 3' outside the program"):
        MBPP.load("train", None)


def test_errors(tmp_path, data_dir):
    with pytest.raises(UserError, match="not found"):
        MBPP.load("test", str(tmp_path))
    with pytest.raises(UserError, match="split"):
        MBPP.load("prompt", data_dir)
    (tmp_path / "mbpp").mkdir()
    row = {"task_id": 601, "text": "t", "code": "", "test_list": [], "test_setup_code": ""}
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match="lacks task_id 602"):
        MBPP.load("train", str(tmp_path))


def test_a_machine_that_cannot_run_code_fails_at_load(monkeypatch, data_dir):
    def refuse():
        raise UserError("cannot run model-written code safely")
    monkeypatch.setattr(mbpp, "mode", refuse)
    with pytest.raises(UserError, match="cannot run model-written code"):
        MBPP.load("train", data_dir)


def test_predictions_say_why_each_wrong_vote_failed(tmp_path):
    """predictions.jsonl carries the checker's reason beside every wrong MBPP vote (and none beside
    a right one, nor for a task that cannot tell)."""
    from types import SimpleNamespace

    from harness.compare import write_predictions

    rows = [{"label": "base", "predictions": [RIGHT, "def add(a, b):\n    return a - b"], "correct": [True, False]}]
    items = [ITEM, Item(id="u", messages=(), gold=GOLD)]
    write_predictions(tmp_path, rows, SimpleNamespace(task=FAST, items=items))
    votes = [json.loads(line)["rows"]["base"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert "why" not in votes[0] and votes[1]["why"] == "assert 1: wrong value: got -1, expected 3"
    write_predictions(tmp_path, rows, SimpleNamespace(task=object(), items=items))
    assert all("why" not in json.loads(line)["rows"]["base"]
               for line in (tmp_path / "predictions.jsonl").read_text().splitlines())
