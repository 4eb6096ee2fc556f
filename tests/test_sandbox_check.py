"""The trusted half of the checker without a child process: how asserts are split, that the plain-data
encoding round-trips exactly and refuses everything else, and that the verdict treats the child's
records as untrusted text (forged, cut short, malformed: a failure with its reason, never a pass
and never an exception in the harness)."""
from __future__ import annotations

import ast
import math
import signal

import pytest

from harness.services import sandbox_child
from harness.services.sandbox_check import compile_check
from harness.services.sandbox_records import MALFORMED, _value, verdict


@pytest.mark.parametrize("source, holes, test", [
    ("assert f(1) == [1, 2]", ("f(1)",), ("compare", ("hole", 0), ((ast.Eq, ("const", [1, 2])),))),
    ("assert f(1) == 1, 2", ("f(1)",), ("compare", ("hole", 0), ((ast.Eq, ("const", 1)),))),  # message never runs
    ("assert int(g(5, 3)) == 35", ("int(g(5, 3))",), ("compare", ("hole", 0), ((ast.Eq, ("const", 35)),))),
    ("assert sum(10, 15) == 25", ("sum(10, 15)",), ("compare", ("hole", 0), ((ast.Eq, ("const", 25)),))),
    ("assert size((1, 2)) == sys.getsizeof((1, 2))", ("size((1, 2))",),
     ("compare", ("hole", 0), ((ast.Eq, ("const", __import__("sys").getsizeof((1, 2)))),))),
    ("assert math.isclose(f(x), 0.5, rel_tol=0.01)", ("f(x)",),
     ("call", "math.isclose", (("hole", 0), ("const", 0.5)), (("rel_tol", ("const", 0.01)),))),
    ("assert not f()", ("f()",), ("not", ("hole", 0))),
    ("assert f()", ("f()",), ("hole", 0)),
    ("assert f() == 1 and g() != 2", ("f()", "g()"),
     ("and", (("compare", ("hole", 0), ((ast.Eq, ("const", 1)),)),
              ("compare", ("hole", 1), ((ast.NotEq, ("const", 2)),))))),
    ("assert (f() == 1) == True", ("f()",),
     ("compare", ("compare", ("hole", 0), ((ast.Eq, ("const", 1)),)), ((ast.Eq, ("const", True)),))),
    ("assert f() is None", ("f()",), ("compare", ("hole", 0), ((ast.Is, ("const", None)),))),
])
def test_asserts_split_into_holes_and_a_trusted_skeleton(source, holes, test):
    check = compile_check(source)
    assert check.holes == holes and check.test == test


@pytest.mark.parametrize("source, message", [
    ("x = f()", "not one assert statement"),
    ("assert f() == 1; assert g()", "not one assert statement"),
    ("assert f( == 1", "not valid Python"),
    ("assert f() == 2 * 3", "cannot evaluate '2 \\* 3' outside the program"),  # the program must not compute it
    ("assert g(f() == 1)", "a comparison inside"),                            # would compare in the program
    ("assert f() is 3", "`is` against something other than None/True/False"),
])
def test_shapes_it_cannot_check_strictly_are_refused(source, message):
    with pytest.raises(ValueError, match=message):
        compile_check(source)


def encode(value) -> list:
    import json

    out = []
    sandbox_child._plain(value, out, 0, [1 << 20])
    return json.loads("".join(out))


PLAIN = [None, True, False, 0, -1, 10 ** 5000, -(2 ** 200), 0.1, -0.0, math.inf, -math.inf, 1e-310, 1 - 2j, "",
         "héllo \"quoted\" \\ \n", "\ud800 lone surrogate", b"\x00\xff", [], (), set(), frozenset(), {},
         [1, (2, [3, {"a": {4, 5}}])], {(1, "x"): frozenset({b"y"}), None: [None]}, {True: 1.5}]


@pytest.mark.parametrize("value", PLAIN, ids=range(len(PLAIN)))
def test_plain_data_round_trips_with_its_exact_types(value):
    def shape(v):  # types all the way down, so 1 == True == 1.0 cannot hide a change of type
        if isinstance(v, dict):
            return ("dict", sorted((repr(shape(k)), repr(shape(x))) for k, x in v.items()))
        if isinstance(v, (list, tuple, set, frozenset)):
            return (type(v).__name__, sorted(repr(shape(x)) for x in v))
        return (type(v).__name__, float.hex(v) if type(v) is float else hex(v) if type(v) is int else repr(v))

    back = _value(encode(value))
    assert shape(back) == shape(value)
    assert math.isnan(_value(encode(math.nan)))


class Int(int):
    pass


class Weird(dict):
    def items(self):
        raise AssertionError("the encoder ran the program's method")


@pytest.mark.parametrize("value, why", [
    (Int(1), "Int"), (bytearray(b"x"), "bytearray"), (memoryview(b"x"), "memoryview"),  # marshal takes these two
    (map(int, "1"), "map"), ([1, [Int(2)]], "Int"), (Weird(), "Weird"), (object(), "object"),
])
def test_anything_else_is_refused_without_running_its_code(value, why):
    with pytest.raises(sandbox_child.NotPlain, match=why):
        encode(value)


def test_size_and_depth_are_bounded():
    nested = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(sandbox_child.NotPlain, match="nested deeper"):
        encode(nested)
    with pytest.raises(sandbox_child.NotPlain, match="larger than the output limit"):
        sandbox_child._plain([[]] * 100_000, [], 0, [10_000])


CHECKS = [compile_check("assert f() == 3")]
GOOD = b'["ok"]\n["c",[["v",["i","3"]]]]\n["done"]\n'


@pytest.mark.parametrize("data, returncode, killed, status, reason", [
    (GOOD, 0, False, "passed", ""),
    (GOOD, 1, False, "passed", ""),                                         # the exit code does not count
    (GOOD[:-9], -9, False, "passed", ""),                                   # nor does a missing "done"
    (b'["ok"]\n["c",[["v",["i","4"]]]]\n', 0, False, "failed", "assert 1: wrong value: got 4, expected 3"),
    (b'["ok"]\n["c",[["v",["b",1]]]]\n', 0, False, "failed", "assert 1: wrong value: got True, expected 3"),
    (b"", 0, False, "failed", "exited (status 0) during the code, before its result"),
    (b'["ok"]\n', 0, False, "failed", "exited (status 0) during assert 1, before its result"),
    (b'["ok"]\n["c",[["v",["i"', -signal.SIGKILL, False, "failed", "killed (SIGKILL) during assert 1"),
    (b'["ok"]\n', -signal.SIGXCPU, False, "failed", "CPU time limit (SIGXCPU) during assert 1"),
    (b'["ok"]\n', -signal.SIGKILL, True, "timeout", "killed at its deadline during assert 1"),
    (b'["ok"]\n', 3, False, "failed", "could not write its result during assert 1"),
    (b'["timeout",1]\n', 0, False, "failed", MALFORMED),                    # a timeout of a step not yet run
    (b'["ok"]\n["timeout",1]\n', 0, False, "timeout", "assert 1 ran past its time limit"),
    (b'["ok"]\n["c",[["x","41"]]]\n', 0, False, "failed", "assert 1: a value that is not plain data (A)"),
    (b'["ok"]\n["c",[["e","4b6579457272","6b"]]]\n', 0, False, "failed", "assert 1: raised KeyErr: k"),
    (GOOD + b'["ok"]\n', 0, False, "failed", MALFORMED),                    # records after the last
    (b'["ok"]\n["ok"]\n' + GOOD, 0, False, "failed", MALFORMED),
    (b'["ok"]\n["c",[]]\n', 0, False, "failed", MALFORMED),                 # a hole missing
    (b'["ok"]\n["c",[["v",["i","3"]],["v",["i","3"]]]]\n', 0, False, "failed", MALFORMED),  # one too many
    (b'["ok"]\n["c",[["v",["equal"]]]]\n', 0, False, "failed", MALFORMED),  # no such tag
    (b'["ok"]\n["c",[["v",["S",["l"]]]]]\n', 0, False, "failed", MALFORMED),  # a list in a set
    (b'["ok"]\n["c",[["v",["i","zz"]]]]\n', 0, False, "failed", MALFORMED),
    (b'["ok"]\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", 0, False, "failed", MALFORMED),
    (b'["ok"]\n[1' + b"0" * 10_000 + b"]\n", 0, False, "failed", MALFORMED),  # past int_max_str_digits
    (b"not json\n" + GOOD, 0, False, "failed", MALFORMED),
    (b'\xff\n', 0, False, "failed", MALFORMED),
    (b'["ok"]\n["c",[["v",["S"' + b"".join(b',["i","%x"]' % (i * (2 ** 61 - 1)) for i in range(1, 30_000))
     + b']]]]\n', 0, False, "failed", MALFORMED),                          # colliding hashes: refused, fast
])
def test_the_verdict_takes_only_well_formed_evidence(data, returncode, killed, status, reason):
    got = verdict(CHECKS, data, returncode, killed)
    assert got[0] == status and got[1].startswith(reason), got


def test_a_float_three_equals_three_as_in_python():
    assert verdict(CHECKS, b'["ok"]\n["c",[["v",["f","0x1.8p+1"]]]]\n', 0, False) == ("passed", "")
