"""Table tests of the tasks: extraction, vote keys, correctness and rewards, adversarial
inputs included, and loading of the offline data in ../shared/data when it is present."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.task import Item, available_tasks, get_task
from tasks import _arithmetic
from tasks.arith import TASK as ARITH
from tasks.countdown import TASK as COUNTDOWN, format_score, render_numbers
from tasks.gsm8k import TASK as GSM8K, normalize_number
from tasks.math500 import TASK as MATH500, last_boxed, normalize


# data_dir (the offline data folder) and no_eval: from conftest.py


def item(gold) -> Item:
    return Item(id="t", messages=(), gold=gold)


# --- the safe evaluator -------------------------------------------------------------------

@pytest.mark.parametrize("expr, value", [
    ("1 + 2 * 3", Fraction(7)),
    ("(1 + 2) * 3", Fraction(9)),
    ("7 / 2", Fraction(7, 2)),
    ("  ((44 + 19) + 35) ", Fraction(98)),
    ("(83 - (78 / 39)) + 1", Fraction(82)),
    ("999999 * 999999", Fraction(999999 * 999999)),
    ("1 / 0", None),                      # division by zero
    ("5 / (3 - 3)", None),
    ("2 ** 100", None),                   # power is not basic arithmetic
    ("7 // 2", None),                     # floor division neither
    ("-1 + 2", None),                     # unary minus
    ("1 -- 2", None),
    ("+1", None),
    ("(1)(2)", None),                     # a call, built from allowed characters
    ("__import__('os').system('echo hacked')", None),
    ("abs(1)", None),
    ("1.5 + 1", None),
    ("1e3", None),
    ("True", None),
    ("07", None),
    ("1 +", None),
    ("", None),
    ("   ", None),
    ("9" * 50, None),                     # more than 6 digits
    ("1234567", None),
    ("1 + " * 60 + "1", None),           # longer than 200 characters
    ("(" * 99 + "1" + ")" * 99, Fraction(1)),
    ("1 +\n2", None),                     # only spaces are allowed as whitespace
])
def test_evaluate(expr, value, no_eval):
    assert _arithmetic.evaluate(expr) == value


@pytest.mark.parametrize("expr, used", [
    ("(44 + 19) + 35", [19, 35, 44]),
    ("3 * 3 - 1", [1, 3, 3]),
    ("2 ** 3", []),
    ("1 / 0", []),
    ("oops", []),
])
def test_numbers_used(expr, used):
    assert _arithmetic.numbers_used(expr) == used


# --- gsm8k --------------------------------------------------------------------------------

@pytest.mark.parametrize("response, key", [
    ("#### 1,234", "1234"),
    ("So she makes $18.00 every day.", "18"),
    ("#### 3\nwait, no\n#### 4", "4"),                 # several "####": the last
    ("the answer is 5. #### 7", "7"),                  # strict beats a later-looking flexible match
    ("#### 7\nthe answer is 5.", "7"),                 # strict even when a number follows
    ("no number at all", ""),
    ("####", ""),
    ("#### ", ""),
    ("the answer is 5 ####", "5"),                     # empty "####": fall back to the last number
    ("#### -3", "-3"),
    ("It dropped to -3.50 degrees", "-3.5"),
    ("#### +7", "7"),
    ("#### $1,000.00.", "1000"),
    ("#### 18.0", "18"),
    ("The total is 1800", "1800"),                     # not "1.8E+3"
    ("#### 0.50", "0.5"),
    ("#### -0", "0"),
    ("Infinity and NaN", ""),
])
def test_gsm8k_extract(response, key):
    assert GSM8K.extract(response) == key
    assert GSM8K.vote_key(response, item("18")) == key


@pytest.mark.parametrize("text, number", [
    ("18.00", "18"), ("1,234", "1234"), ("$5", "5"), ("5.", "5"), (" 42 ", "42"),
    ("-2.50", "-2.5"), ("abc", ""), ("1e5", ""), ("", ""), ("NaN", ""),
])
def test_gsm8k_normalize_number(text, number):
    assert normalize_number(text) == number


@pytest.mark.parametrize("key, correct", [("18", True), ("18.0", True), ("17", False), ("", False)])
def test_gsm8k_is_correct(key, correct):
    assert GSM8K.is_correct(key, item("18")) is correct


@pytest.mark.parametrize("response, reward", [("#### 18", 1.0), ("#### 17", 0.0), ("I give up", 0.0)])
def test_gsm8k_reward(response, reward):
    assert GSM8K.reward(response, item("18")) == reward


# --- countdown ----------------------------------------------------------------------------

CD = item({"numbers": [44, 19, 35], "target": Fraction(98)})


def answer(formula: str) -> str:
    return f"<answer>{formula}</answer>"


@pytest.mark.parametrize("response, extracted", [
    ("<answer> (44 + 19) + 35 </answer>", "(44 + 19) + 35"),
    ("<answer>1</answer> then <answer>\n2\n</answer>", "2"),
    ("no answer tags", ""),
    ("<answer>unclosed", ""),
])
def test_countdown_extract(response, extracted):
    assert COUNTDOWN.extract(response) == extracted


@pytest.mark.parametrize("response, numbers, key", [
    (answer("(44 + 19) + 35"), [44, 19, 35], "98"),
    (answer("((44 + (19)) + 35)"), [44, 19, 35], "98"),           # nested and redundant parens
    (answer("35 + 44 + 19"), [44, 19, 35], "98"),                  # any order
    (answer("44 + 44 + 35"), [44, 19, 35], ""),                    # a number used twice
    (answer("44 + 19"), [44, 19, 35], ""),                         # a number missing
    (answer("44 + 19 + 35 + 1"), [44, 19, 35], ""),                # a foreign number
    (answer("44 + 19 + 36"), [44, 19, 35], ""),                    # a number changed
    (answer("7 / 2"), [7, 2], "7/2"),                              # exact fractions
    (answer("3 / (5 - 5)"), [3, 5, 5], ""),                        # division by zero
    (answer("2**100"), [2, 100], ""),
    (answer("__import__('os').system('echo hacked')"), [44, 19, 35], ""),
    (answer("9" * 50), [int("9" * 50)], ""),
    (answer("-44 + 19 + 35"), [44, 19, 35], ""),
    (answer("44 + 19 + 35 = 98"), [44, 19, 35], ""),
    (answer(""), [44, 19, 35], ""),
    (answer("44 + 19 + 35") + " or maybe " + answer("44 - 19 - 35"), [44, 19, 35], "-10"),
    (answer("44 - 19 - 35") + " no: " + answer("44 + 19 + 35"), [44, 19, 35], "98"),
])
def test_countdown_vote_key(response, numbers, key, no_eval):
    assert COUNTDOWN.vote_key(response, item({"numbers": numbers, "target": Fraction(98)})) == key


@pytest.mark.parametrize("key, target, correct", [
    ("98", Fraction(98), True),
    ("97", Fraction(98), False),
    ("", Fraction(98), False),
    ("not a number", Fraction(98), False),
    ("7/2", Fraction(7, 2), True),
    ("173/11", Fraction("15.727272727272727"), True),               # a float target, within 1e-5
    ("15727/1000", Fraction("15.727272727272727"), False),
])
def test_countdown_is_correct(key, target, correct):
    assert COUNTDOWN.is_correct(key, item({"numbers": [], "target": target})) is correct


@pytest.mark.parametrize("text, score", [
    ("<think>reasoning</think>\n<answer>1 + 2</answer>", 1.0),
    ("\n<think>a\nb</think>\n<answer>1</answer>\n", 1.0),              # surrounding whitespace
    ("<think>reasoning</think> <answer>1 + 2</answer>", 0.6),          # no newline between
    ("<think>a</think>\n<answer>1</answer> trailing text", 0.6),
    ("<think>reasoning</think>", 0.1),
    ("<answer>1 + 2</answer>", 0.5),
    ("<think>unclosed <answer>1</answer>", 0.5),
    ("plain text", 0.0),
])
def test_countdown_format_score(text, score):
    assert format_score(text) == pytest.approx(score)


@pytest.mark.parametrize("response, reward", [
    ("Add them.</think>\n<answer>(44 + 19) + 35</answer>", 1.1),       # full format, correct
    ("Try.</think>\n<answer>44 + 19 - 35</answer>", 0.1),              # full format, wrong
    ("Add them.</think> <answer>44 + 19 + 35</answer>", 1.06),         # think + answer, correct
    ("<answer>44 + 19 + 35</answer>", 1.05),                          # answer only, correct
    ("<answer>44 + 44 + 35</answer>", 0.05),
    ("I am still thinking</think>", 0.01),
    ("nothing useful", 0.0),
])
def test_countdown_reward(response, reward):
    assert COUNTDOWN.reward(response, CD) == pytest.approx(reward)


@pytest.mark.parametrize("numbers, text", [
    ([44, 19, 35], "[44 19 35]"), ([8, 16, 56], "[ 8 16 56]"), ([5, 7, 100], "[  5   7 100]"),
])
def test_countdown_render_numbers(numbers, text):
    assert render_numbers(numbers) == text


def test_countdown_generator_is_solvable_and_seeded():
    train, test = COUNTDOWN.load("train", None), COUNTDOWN.load("test", None)
    assert (len(train), len(test)) == (200, 2000)
    assert COUNTDOWN.load("train", None) == train                        # deterministic
    assert [i.gold for i in train[:20]] != [i.gold for i in test[:20]]   # seeds differ per split
    for it in train + test:
        assert len(it.gold["numbers"]) in (3, 4) and all(1 <= n <= 99 for n in it.gold["numbers"])
        assert 1 <= it.gold["target"] <= 1000 and it.gold["target"].denominator == 1
        assert COUNTDOWN.reward(f"ok</think>\n{answer(it.meta['solution'])}", it) == pytest.approx(1.1)


# --- math500 ------------------------------------------------------------------------------

@pytest.mark.parametrize("response, boxed", [
    (r"so the answer is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),             # nested braces
    (r"\boxed{1} no wait \boxed{2}", "2"),
    (r"\fbox{7}", "7"),
    (r"\boxed{ 5 }", "5"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    ("no box at all", ""),
    (r"\boxed{\frac{1}{2}", ""),                                        # cut off inside the box
    (r"\boxed 5", ""),
])
def test_math500_last_boxed(response, boxed):
    assert last_boxed(response) == boxed
    assert MATH500.extract(response) == boxed


@pytest.mark.parametrize("answer_, normal", [
    (r"\frac12", "1/2"), (r"\dfrac{1}{2}", "1/2"), (r"\tfrac1{2}", "1/2"), ("0.5", "1/2"),
    ("5.", "5"), ("-3", "-3"), (r"\text{(C)}", "(C)"), (r"10,\!080", "10080"), ("1,-2", "1,-2"),
    (r"90^\circ", "90"), (r"x = 5", "5"), (r"\$18.90", "189/10"), (r"5.4 \text{ cents}", "27/5"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"), (r"11\sqrt2", r"11\sqrt{2}"),
    (r"\frac{1}{0}", r"\frac{1}{0}"), ("", ""),
])
def test_math500_normalize(answer_, normal):
    assert normalize(answer_) == normal


@pytest.mark.parametrize("response, gold, correct", [
    (r"\boxed{\frac{1}{2}}", r"\frac12", True),
    (r"\boxed{0.5}", r"\frac12", True),
    (r"\boxed{5.}", "5", True),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True),
    (r"\boxed{Evelyn}", r"\text{Evelyn}", True),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", True),
    (r"\boxed{x=5}", "5", True),
    (r"\boxed{90^{\circ}}", r"90^\circ", True),
    (r"\boxed{10,000}", "10000", True),
    (r"\boxed{0.3333333}", r"\frac13", True),                         # within 1e-6
    (r"\boxed{0.33}", r"\frac13", False),
    (r"\boxed{-2,1}", "1,-2", False),
    (r"\boxed{4}", "5", False),
    ("no box, the answer is 5", "5", False),
])
def test_math500_is_correct(response, gold, correct):
    it = item(normalize(gold))
    key = MATH500.vote_key(response, it)
    assert MATH500.is_correct(key, it) is correct
    assert MATH500.reward(response, it) == float(correct)


# --- arith --------------------------------------------------------------------------------

@pytest.mark.parametrize("response, key", [
    ("95", "95"), ("57 + 38 = 95", "95"), ("The answer is 1,234.", "1234"), ("-5", "-5"),
    ("0105", "105"), ("no digits", ""), ("", ""),
])
def test_arith_extract(response, key):
    assert ARITH.extract(response) == key


@pytest.mark.parametrize("response, reward", [("95", 1.0), ("95.", 1.0), ("96", 0.0), ("", 0.0)])
def test_arith_reward(response, reward):
    assert ARITH.reward(response, item("95")) == reward


def test_arith_items_are_seeded_sums():
    train, test = ARITH.load("train", None), ARITH.load("test", "/ignored")
    assert (len(train), len(test)) == (1000, 1000) and train != test
    assert ARITH.load("train", None) == train
    for it in train:
        a, b = (int(w.strip("?")) for w in it.messages[0]["content"].split()[2:5:2])
        assert 10 <= a <= 99 and 10 <= b <= 99 and it.gold == str(a + b)


# --- loading, registry and errors -----------------------------------------------------------

@pytest.mark.parametrize("name, sizes", [
    ("gsm8k", (7473, 1319)), ("countdown", (200, 2000)), ("math500", (200, 300)), ("arith", (1000, 1000)),
])
def test_split_sizes(name, sizes, data_dir):
    task = get_task(name)
    assert tuple(len(task.load(split, data_dir)) for split in ("train", "test")) == sizes


def test_gsm8k_data(data_dir):
    items = GSM8K.load("train", data_dir) + GSM8K.load("test", data_dir)
    assert all(it.gold and normalize_number(it.gold) == it.gold for it in items)
    first = GSM8K.load("test", data_dir)[0]
    assert first.gold == "18" and first.messages[0]["content"].endswith('after "####".')


def test_countdown_data(data_dir):
    rows = json.loads(Path(data_dir, "countdown", "countdown.json").read_text())
    items = COUNTDOWN.load("train", data_dir) + COUNTDOWN.load("test", data_dir)
    for row, it in zip(rows, items):
        # the prompt is the data's own context: system + user + an assistant prefix
        assert row["context"].startswith(it.messages[0]["content"] + it.messages[1]["content"])
    # the data's reference solutions score correct, except the few that misuse the numbers
    usable = [it for it in items if it.meta["solution"]
              and _arithmetic.numbers_used(it.meta["solution"]) == sorted(it.gold["numbers"])]
    assert len(usable) > 2100
    assert all(COUNTDOWN.is_correct(COUNTDOWN.vote_key(answer(it.meta["solution"]), it), it) for it in usable)
    train = items[:200]
    assert all(COUNTDOWN.is_correct(COUNTDOWN.vote_key(answer(it.meta["solution"]), it), it) for it in train)


def test_math500_data(data_dir):
    rows = [json.loads(line) for line in Path(data_dir, "math500", "test.jsonl").open()]
    items = MATH500.load("train", data_dir) + MATH500.load("test", data_dir)
    assert all(it.gold for it in items)
    # the last \boxed{} of each reference solution matches its answer
    assert all(MATH500.is_correct(MATH500.vote_key(r["solution"], it), it) for r, it in zip(rows, items))


def test_malformed_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "q", "answer": "#### 1"})
    (tmp_path / "gsm8k" / "train.jsonl").write_text(good + "\n{not json\n")
    with pytest.raises(UserError, match=r"train\.jsonl:2"):
        GSM8K.load("train", str(tmp_path))


def test_malformed_countdown_json_names_file(tmp_path):
    (tmp_path / "countdown").mkdir()
    (tmp_path / "countdown" / "countdown.json").write_text("[{oops")
    with pytest.raises(UserError, match="countdown.json"):
        COUNTDOWN.load("train", str(tmp_path))


@pytest.mark.parametrize("name", ["gsm8k", "countdown", "math500"])
def test_missing_data_dir(name, tmp_path):
    with pytest.raises(UserError, match="not found"):
        get_task(name).load("test", str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name", ["gsm8k", "countdown", "math500", "arith"])
def test_unknown_split(name):
    with pytest.raises(UserError, match="split"):
        get_task(name).load("validation", "/nowhere")


def test_registry():
    assert {"arith", "countdown", "gsm8k", "math500"} <= set(available_tasks())
    assert "_arithmetic" not in available_tasks()
    assert get_task("gsm8k") is GSM8K and get_task("countdown").name == "countdown"
    with pytest.raises(UserError, match="unknown task"):
        get_task("nope")
