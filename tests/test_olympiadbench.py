"""OlympiadBench: extraction, element-wise comparison of several-valued answers, the cases the
checker cannot decide (counted on the real data), and loading."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import tasks.math500
import tasks.olympiadbench as ob
from harness.errors import UserError
from harness.task import Item
from tasks import _math_answers
from tasks.olympiadbench import TASK as OB, canonical, same_answer, split_top, undecidable, values


def item(gold_raw: str) -> Item:
    return Item(id="t", messages=(), gold=canonical(gold_raw))


def rows(data_dir) -> list[dict]:
    return [json.loads(line) for line in Path(data_dir, "olympiadbench", "test.jsonl").open()]


def test_one_shared_checker_for_math500_and_olympiadbench():
    for name in ("normalize", "equivalent", "last_boxed"):
        assert getattr(tasks.math500, name) is getattr(_math_answers, name)
    assert ob.normalize is _math_answers.normalize and ob.last_boxed is _math_answers.last_boxed


@pytest.mark.parametrize("response, extracted", [
    (r"so \boxed{(1,8,19), (2,7,13)}", "(1,8,19), (2,7,13)"),
    ("the answer is\n#### 42", "42"),
    ("#### $\\frac{1}{2}$.", "$\\frac{1}{2}$."),
    ("####\n\n  7  \nmore text", "7"),                         # the next non-empty line
    ("#### 3\nthen \\boxed{4}", "4"),                          # a box beats ####
    ("\\boxed{4} then #### 3", "4"),
    ("#### 1\n#### 2", "2"),                                   # the last ####
    ("\\boxed{1 and then it stopped #### 2", "2"),             # an unclosed box: fall back to ####
    ("####", ""),
    ("no answer at all", ""),
    ("", ""),
])
def test_extract(response, extracted):
    assert OB.extract(response) == extracted


@pytest.mark.parametrize("answer, expected", [
    ("$(1,8,19), (2,7,13), (4,5,7)$", ["(1,8,19)", "(2,7,13)", "(4,5,7)"]),
    ("$69$,$84$", ["69", "84"]),
    ("$(2,4)$", ["(2,4)"]),
    ("$[\\frac{1}{2}, 8]$", ["[1/2,8]"]),
    ("$\\left(-\\frac{1}{2}, \\frac{7}{2}\\right)$", ["(-1/2,7/2)"]),
    ("$(45^{\\circ}, 60^{\\circ}),(135^{\\circ}, 60^{\\circ})$", ["(45,60)", "(135,60)"]),
    ("\\{1, 3\\}", ["1", "3"]),                                 # a set: its values
    ("10,080", ["10080"]),                                     # thousands, as in math500
    ("1, 080", ["1", "80"]),                                   # a space: two values
    ("$(-\\infty, 0) \\cup\\{1\\}$.", ["(-\\infty,0)\\cup\\{1\\}"]),
    ("$a=2$, $a=-6-4 \\sqrt{2}$", ["2", "-6-4\\sqrt{2}"]),
    ("1,,2", ["1", "2"]),
    (",,,", []),
    ("", []),
    ("(" * 500 + "1", ["(" * 500 + "1"]),                      # unbalanced: one opaque value
])
def test_values(answer, expected):
    assert values(answer) == expected


@pytest.mark.parametrize("response, gold, correct", [
    ("\\boxed{-2, -1, 2}", "$-1$,$2$,$-2$", True),             # a list in any order
    ("\\boxed{-1, 2}", "$-1$,$2$,$-2$", False),                # a value missing
    ("\\boxed{-1, 2, -2, 3}", "$-1$,$2$,$-2$", False),         # a value too many
    ("\\boxed{-1, -1, 2}", "$-1$,$2$,$-2$", False),            # a multiset, not a set
    ("\\boxed{-2, -2}", "-2,-2", True),
    ("\\boxed{-2}", "-2,-2", False),
    ("\\boxed{(4,5,7), (1,8,19), (2,7,13)}", "$(1,8,19), (2,7,13), (4,5,7)$", True),
    ("\\boxed{(8,1,19), (2,7,13), (4,5,7)}", "$(1,8,19), (2,7,13), (4,5,7)$", False),  # a tuple in order
    ("\\boxed{(2, 4)}", "$(2,4)$", True),
    ("\\boxed{2, 4}", "$(2,4)$", False),                       # a tuple needs its brackets
    ("\\boxed{4, 2}", "$(2,4)$", False),
    ("\\boxed{(4,2)}", "$(2,4)$", False),
    ("\\boxed{(2,4), (2,4)}", "$(2,4)$", False),
    ("\\boxed{[\\frac12, 8]}", "$[\\frac{1}{2}, 8]$", True),
    ("\\boxed{(\\frac12, 8)}", "$[\\frac{1}{2}, 8]$", False),  # an open interval is another answer
    ("\\boxed{\\frac12, 8}", "$[\\frac{1}{2}, 8]$", False),    # bare values are not an interval
    ("\\boxed{\\{1, 3\\}}", "1,3", True),
    ("\\boxed{10,080}", "10080", True),
    ("\\boxed{90^\\circ, 60^\\circ}", "$90^{\\circ}$,$60^{\\circ}$", True),
    ("\\boxed{0.5}", "$\\frac{1}{2}$", True),
    ("\\boxed{0.50000001}", "$\\frac{1}{2}$", True),           # within 1e-6
    ("\\boxed{2^{1009}}", "$2^{1009}$", True),
    ("\\boxed{2^{1009}+0}", "$2^{1009}$", False),              # no symbolic algebra
    ("#### 1.68, 0.45", "$1.68,0.45$", True),
    ("\\boxed{f(x) = 2x}", "$f(x)=2 x$", True),
    ("\\boxed{a=2, a=-6-4\\sqrt{2}}", "$a=2$, $a=-6-4 \\sqrt{2}$", True),
    ("\\boxed{(1,2),(3,4)}", "(1,2,3,4)", False),
    ("\\boxed{(1,2,3,4)}", "(1,2),(3,4)", False),
    ("\\boxed{}", "5", False),
    ("\\boxed{,,,}", "1", False),
    ("\\boxed{(1,2}", "(1,2)", False),
    ("the answer is 5", "5", False),                           # neither a box nor ####
])
def test_is_correct(response, gold, correct):
    it = item(gold)
    key = OB.vote_key(response, it)
    assert OB.is_correct(key, it) is correct
    assert OB.reward(response, it) == float(correct)


def test_vote_key_is_order_free():
    keys = {OB.vote_key(r, item("1")) for r in ("\\boxed{2, 1, 3}", "\\boxed{3,2,1}", "#### 1, 2, 3")}
    assert keys == {"1,2,3"}
    assert OB.vote_key("\\boxed{(2,1)}", item("1")) != OB.vote_key("\\boxed{(1,2)}", item("1"))


def test_split_top_ignores_commas_in_brackets():
    assert split_top("(1,2),[3,4),\\{5,6\\},7") == ["(1,2)", "[3,4)", "\\{5,6\\}", "7"]


def test_several_valued_gold_answers_parse(data_dir):
    """Every gold answer with a comma: parsed, canonical twice the same, right against itself
    (as written and with its values reversed), wrong with one value dropped."""
    several = [r["answer"] for r in rows(data_dir) if "," in r["answer"]]
    assert len(several) == 111
    assert values(several[0]) == ["(1,8,19)", "(2,7,13)", "(4,5,7)"]
    for answer in several:
        gold = canonical(answer)
        assert gold and canonical(gold) == gold, answer
        found = values(answer)
        written = answer.replace("$", "")
        assert same_answer(canonical(written), gold), answer
        assert same_answer(canonical(", ".join(reversed(found))), gold), answer
        if len(found) > 1:
            assert not same_answer(canonical(", ".join(found[1:])), gold), answer


def test_every_gold_answer_is_right_against_itself(data_dir):
    for it in OB.load("train", data_dir) + OB.load("test", data_dir):
        answer = it.meta["answer"]
        assert OB.is_correct(OB.vote_key(f"\\boxed{{{answer.replace('$', '')}}}", it), it), answer
        assert OB.is_correct(OB.vote_key(f"so\n#### {answer}", it), it), answer


def test_undecidable_cases_counted_on_the_data(data_dir):
    counts = Counter(undecidable(r["answer"]) for r in rows(data_dir))
    assert counts == {None: 493, "symbolic": 107, "order": 53, "equation": 21, "prose": 1}
    doc = " ".join(ob.__doc__.split())
    for case, n in counts.items():  # the module docstring states the same numbers
        assert (f"({n} are decidable)" if case is None else f"- {case} ({n})") in doc, case


@pytest.mark.parametrize("gold, case", [
    ("$f(x)=2 x$", "equation"), ("$a=2$", None), ("$2n-2$", "symbolic"), ("$\\sqrt{2}$", "symbolic"),
    ("1,3,5", "order"), ("$(1,1), (3,2)$", None), ("$\\frac{1}{2}$", None), ("$90^{\\circ}$", None),
    ("$x$ where $x$ is arbitrary", "prose"),
])
def test_undecidable(gold, case):
    assert undecidable(gold) == case


def test_load(data_dir):
    train, test = OB.load("train", data_dir), OB.load("test", data_dir)
    assert (len(train), len(test)) == (200, 475)
    first = train[0]
    assert first.messages[0]["role"] == "user"
    assert first.messages[0]["content"].endswith(
        "\n\nLet\u2019s think step by step and output the final answer after ####.")
    assert first.gold == "2" and first.meta["source_id"] == 1606
    assert OB.max_new_tokens == 2048


def test_load_from_the_hub(monkeypatch):
    calls = []

    def fake_hub(dataset, config, split):
        calls.append((dataset, config, split))
        return [{"id": i, "question": f"Q{i}?", "final_answer": [f"${i}$"]} for i in range(210)]

    monkeypatch.setattr(ob, "load_hub", fake_hub)
    test = OB.load("test", None)
    assert calls == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")]
    assert len(test) == 10 and test[0].gold == "200" and test[0].messages[0]["content"].startswith("Q200?\n\n")


def test_errors(tmp_path, data_dir):
    with pytest.raises(UserError, match="not found"):
        OB.load("test", str(tmp_path))
    with pytest.raises(UserError, match="split"):
        OB.load("validation", data_dir)
    (tmp_path / "olympiadbench").mkdir()
    (tmp_path / "olympiadbench" / "test.jsonl").write_text(json.dumps({"problem": "p", "answer": "$ $"}) + "\n")
    with pytest.raises(UserError, match=re.escape("empty answer")):
        OB.load("train", str(tmp_path))
