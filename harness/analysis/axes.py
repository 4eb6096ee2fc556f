"""Axes that stay readable on degenerate data: all-equal accuracies get the whole 0-100 scale,
FLOPs axes span whole decades with ticks written like 2e13 (matplotlib's default shows 10^13
only, or no label at all when every row sits within one decade), NaN is never plotted."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.analysis.rundir import is_number

TIE = 1e-9
"""Differences within this are ties: equal means can differ in the last bit."""


def sci(x: float, _=None) -> str:
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def flops_axis(ax, values) -> None:
    """Log FLOPs axis over whole decades around the data, ticks written like 2e13 (the
    default writes 10^13 only, or nothing when every row sits within one decade)."""
    values = [v for v in values if is_number(v) and v > 0]
    lo, hi = (min(values), max(values)) if values else (1.0, 10.0)
    lo, hi = 10.0 ** np.floor(np.log10(lo / 1.2)), 10.0 ** np.ceil(np.log10(hi * 1.2))
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(sci))
    few = np.log10(hi / lo) <= 2  # label 2x and 5x too when there are only a couple of decades
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0) if few else ()))
    ax.xaxis.set_minor_formatter(FuncFormatter(sci) if few else NullFormatter())


def value_axis(ax, values, full: tuple[float, float], pad: float) -> None:
    """y limits: the data with some room, clipped to `full`; all-equal (or no) data gets `full`."""
    values = [v for v in values if is_number(v)]
    if not values or max(values) - min(values) < TIE:
        lo, hi = min(full[0], *values) if values else full[0], max(full[1], *values) if values else full[1]
    else:
        room = max(pad, 0.1 * (max(values) - min(values)))
        lo, hi = max(full[0], min(values) - room), min(full[1], max(values) + room)
    ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))  # room for markers at 0 and 100
