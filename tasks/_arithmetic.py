"""A safe evaluator for Countdown formulas such as "(44 + 19) + 35".

Model output is never given to eval(), exec() or compile() to run: the formula is parsed
with `ast.parse(..., mode="eval")`, which only builds a syntax tree, and the tree is walked
here, accepting only integer literals and the binary operators + - * /. Arithmetic is
exact (fractions.Fraction), so "7 / 2" is 7/2, not 3.5000000000000004.

Source: the ES paper's Countdown rule (docs/paper.md section 5): an answer may use only digits,
+ - * / ( ) and spaces. Deviation from the released ES code, which eval()s the string once
that character check passes: operators Python would also accept from those characters are
rejected here: `**` and `//` (not basic arithmetic) and unary minus or plus ("-3", "1 -- 2";
no given number is negative, so a sign cannot be a number of the list).

Size guards, so a model cannot make us do unbounded work: at most 200 characters, and
no number longer than 6 digits.
"""
from __future__ import annotations

import ast
import operator
import re
from fractions import Fraction

MAX_CHARS = 200
MAX_DIGITS = 6

_ALLOWED = re.compile(r"[0-9+\-*/() ]+")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _parse(expr: str) -> ast.expr | None:
    """The syntax tree of `expr` if it passes the character and size checks, else None."""
    expr = expr.strip()
    if not expr or len(expr) > MAX_CHARS or not _ALLOWED.fullmatch(expr):
        return None
    if any(len(run) > MAX_DIGITS for run in re.findall(r"\d+", expr)):
        return None
    try:
        return ast.parse(expr, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # "1 +", "07", deep nesting
        return None


def _value(node: ast.expr) -> Fraction | None:
    """Exact value of an accepted tree; None for any other node or a division by zero."""
    if isinstance(node, ast.Constant):
        # bool is a subclass of int; the character check already excludes it, but be exact
        return Fraction(node.value) if type(node.value) is int else None
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _value(node.left), _value(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Div) and right == 0:
            return None
        return _OPS[type(node.op)](left, right)
    return None  # UnaryOp, Pow, FloorDiv, Call, ...: not part of the formula language


def evaluate(expr: str) -> Fraction | None:
    """Exact value of a formula, or None if it is not a valid formula or divides by zero."""
    node = _parse(expr)
    return None if node is None else _value(node)


def numbers_used(expr: str) -> list[int]:
    """The integer literals of a valid formula, sorted (a multiset); [] if `expr` is not one."""
    node = _parse(expr)
    if node is None or _value(node) is None:
        return []
    return sorted(n.value for n in ast.walk(node) if isinstance(n, ast.Constant))
