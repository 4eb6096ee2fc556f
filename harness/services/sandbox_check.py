"""The trusted half of checking a program: the harness splits each assert, decodes what the child
reports, and decides; the child (harness/services/sandbox_child.py) only evaluates the program's side.

`compile_check(assert_source)` splits an assert into a skeleton that the harness evaluates
(comparisons, `and`/`or`/`not`, `math.isclose`, and the expected values, computed here from the
test's source by `ast.literal_eval` or a few whitelisted pure functions such as `sys.getsizeof`)
and holes: the maximal sub-expressions that involve the program (`f(x)`, `set(f(x))`), which the
child evaluates and reports as plain data. The expected values never enter the child, and none
of the program's code (its `__eq__`, `__bool__`, `__repr__`) ever runs here: the skeleton only
ever sees exact builtin values decoded from text.

`judge(check, holes)` evaluates the skeleton on the decoded values of the holes (the verdict over
a whole program is harness/services/sandbox_records.py's).
"""
from __future__ import annotations

import ast
import cmath
import math
import operator
import sys
from dataclasses import dataclass
from functools import lru_cache

# Pure functions the harness applies itself: to the test's own values (an expected value written
# `sys.getsizeof((1, 2))`), and the comparers also to decoded values (`math.isclose(f(x), 0.3)`).
# Dotted names only: a bare `sum(10, 15)` may be the program's own `sum` (MBPP task 126 defines
# one), so it is the program's side, a hole.
TRUSTED = {"sys.getsizeof": sys.getsizeof}
COMPARERS = {"math.isclose": math.isclose, "cmath.isclose": cmath.isclose}
OPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
       ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
       ast.Is: operator.is_, ast.IsNot: operator.is_not}
SINGLETONS = (None, True, False)  # `is` on decoded values means something only for these


@dataclass(frozen=True)
class Check:
    source: str
    holes: tuple[str, ...]
    """The program's sub-expressions, in evaluation order: all the child sees of this assert."""
    test: tuple
    """The skeleton: ("const", v), ("hole", i), ("compare", left, ((op, right), ...)),
    ("and" | "or", parts), ("not", part), ("call", name, args, kwargs)."""


@lru_cache(maxsize=1 << 16)
def compile_check(source: str) -> Check:
    """The split of one assert statement; ValueError for a shape it cannot check strictly."""
    try:
        tree = ast.parse(source.strip())
    except SyntaxError as exc:
        raise ValueError(f"check {source!r} is not valid Python ({exc.msg})") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError(f"check {source!r} is not one assert statement")
    holes: list[str] = []
    test = _test(tree.body[0].test, source.strip(), holes)  # the message (`assert a == b, msg`) never runs
    return Check(source, tuple(holes), test)


def _test(node: ast.expr, source: str, holes: list[str]) -> tuple:
    if isinstance(node, ast.BoolOp):
        return ("and" if isinstance(node.op, ast.And) else "or", tuple(_test(v, source, holes) for v in node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ("not", _test(node.operand, source, holes))
    if isinstance(node, ast.Compare):
        left = _test(node.left, source, holes)
        rights = tuple((type(op), _test(c, source, holes)) for op, c in zip(node.ops, node.comparators))
        for (op, right), before in zip(rights, (left, *[r for _, r in rights])):
            if op in (ast.Is, ast.IsNot) and not any(p[0] == "const" and any(p[1] is s for s in SINGLETONS)
                                                     for p in (before, right)):
                raise ValueError(f"check {source!r}: `is` against something other than None/True/False")
        return ("compare", left, rights)
    if isinstance(node, ast.Call) and _dotted(node.func) in COMPARERS and not _starred(node):
        return ("call", _dotted(node.func), tuple(_test(a, source, holes) for a in node.args),
                tuple((k.arg, _test(k.value, source, holes)) for k in node.keywords))
    try:
        return ("const", _trusted(node))
    except _Untrusted:
        pass
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    if not names:  # a constant we cannot compute here must not be computed by the program instead
        raise ValueError(f"check {source!r}: cannot evaluate {ast.unparse(node)!r} outside the program")
    if any(isinstance(n, ast.Compare) or (isinstance(n, ast.Call) and _dotted(n.func) in COMPARERS)
           for n in ast.walk(node)):
        raise ValueError(f"check {source!r}: a comparison inside {ast.unparse(node)!r} would run in the program")
    holes.append(ast.get_source_segment(source, node) or ast.unparse(node))
    return ("hole", len(holes) - 1)


class _Untrusted(Exception):
    pass


def _trusted(node: ast.expr):
    """The value of an expression that involves no program: a literal, or a whitelisted pure
    function of such values."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, ast.Call) and _dotted(node.func) in TRUSTED and not _starred(node):
        args, kwargs = [_trusted(a) for a in node.args], {k.arg: _trusted(k.value) for k in node.keywords}
        try:
            return TRUSTED[_dotted(node.func)](*args, **kwargs)
        except Exception as exc:
            raise ValueError(f"cannot evaluate {ast.unparse(node)!r}: {exc}") from None
    raise _Untrusted


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return ""


def _starred(call: ast.Call) -> bool:
    return any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)


def judge(check: Check, holes: list[tuple]) -> str:
    """"" when the assert holds on these values, else why not. `holes`: ("value", v) or
    ("failure", reason) per hole. Only builtin operations on decoded plain values run here."""
    def value(node):
        kind = node[0]
        if kind == "const":
            return node[1]
        if kind == "hole":
            status, v = holes[node[1]]
            if status == "failure":
                raise _HoleFailed(v)
            return v
        if kind in ("and", "or"):
            for part in node[1]:
                result = value(part)
                if bool(result) is (kind == "or"):
                    return result
            return result
        if kind == "not":
            return not value(node[1])
        if kind == "call":
            return COMPARERS[node[1]](*[value(a) for a in node[2]], **{k: value(v) for k, v in node[3]})
        left = value(node[1])  # compare, chained as Python chains it
        for op, right_node in node[2]:
            right = value(right_node)
            if not OPS[op](left, right):
                return False
            left = right
        return True

    try:
        if bool(value(check.test)):
            return ""
    except _HoleFailed as exc:
        return str(exc)
    except Exception as exc:
        return f"the comparison raised {type(exc).__name__}: {str(exc)[:120]}"
    test, got = check.test, [_short(v) for status, v in holes if status == "value"]
    if test[0] == "compare" and test[1][0] == "hole" and len(test[2]) == 1 and test[2][0][1][0] == "const":
        return f"wrong value: got {got[0]}, expected {_short(test[2][0][1][1])}"
    return f"false for the program's value{'s' if len(got) != 1 else ''} {', '.join(got)}"


class _HoleFailed(Exception):
    pass


def _short(v) -> str:
    try:
        text = repr(v)
    except (ValueError, RecursionError):  # an int past int_max_str_digits, a value nested too deep
        return f"<{type(v).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."
