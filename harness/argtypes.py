"""Parsers for command-line values shared by every subcommand."""
from __future__ import annotations

import argparse

from harness.errors import UserError


def ints(text: str) -> tuple[int, ...]:
    """"1,5,10" -> (1, 5, 10)."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    """"0.001,0.002" -> (0.001, 0.002)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def settings(pairs: list[str]) -> dict[str, str]:
    """Repeated `--set KEY=VALUE` -> {KEY: VALUE}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set randopt.population=100")
        out[key.strip()] = value.strip()
    return out
