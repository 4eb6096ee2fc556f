"""Uncertainty of test accuracies over test items: exact binomial intervals for one accuracy,
paired bootstrap intervals for differences, and McNemar's exact test.

Pure functions of per-item correctness lists, deterministic for a fixed `seed`.

A single accuracy gets the exact Clopper-Pearson interval (`binomial_ci`): it never collapses
to [0, 0] or [1, 1] when every item is wrong or right, which a percentile bootstrap does (every
resample of all-wrong items is all wrong). The bootstrap stays for paired differences, where
both rows see the same resampled items.

The bootstraps draw resampled *counts* instead of resampled index arrays: resampling n items
with replacement from a 0/1 list gives a True count ~ Binomial(n, mean), and resampling pairs
gives category counts (both right, only a, only b, neither) ~ Multinomial(n, frequencies).
That is exactly the distribution of the index bootstrap, in O(n_boot) memory instead of
O(n_boot * n), which matters for 10,000 resamples of 1,319 GSM8K items per row.
"""
from __future__ import annotations

from math import comb, lgamma, log

import numpy as np


def _as_bools(values, name: str) -> np.ndarray:
    x = np.asarray(list(values), dtype=bool)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name}: expected a non-empty list of booleans")
    return x


def _percentiles(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def binomial_ci(correct, alpha: float = 0.05) -> tuple[float, float]:
    """Exact Clopper-Pearson interval of the accuracy: the p whose binomial tails at the observed
    count are alpha/2 (closed form at 0 and n, bisection on the exact tail elsewhere)."""
    x = _as_bools(correct, "correct")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    k, n = int(x.sum()), int(x.size)
    log_comb = np.array([lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) for i in range(n + 1)])
    lo = 0.0 if k == 0 else _bisect(lambda p: _tail_at_least(log_comb, k, p) < alpha / 2)
    hi = 1.0 if k == n else _bisect(lambda p: _tail_at_least(log_comb, k + 1, p) < 1 - alpha / 2)
    return lo, hi


def _tail_at_least(log_comb: np.ndarray, k: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), n = len(log_comb) - 1, summed in log space (n may be
    thousands: the terms underflow one by one, not their sum)."""
    n = log_comb.size - 1
    i = np.arange(k, n + 1)
    logs = log_comb[k:] + i * log(p) + (n - i) * log(1 - p)
    top = logs.max()
    return float(np.exp(top) * np.exp(logs - top).sum())


def _bisect(below, lo: float = 0.0, hi: float = 1.0) -> float:
    """The boundary p in (0, 1) where `below(p)` (true for small p) turns false."""
    for _ in range(60):  # 2**-60: far below any printed digit
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if below(mid) else (lo, mid)
    return (lo + hi) / 2


def bootstrap_ci(correct, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy, resampling test items."""
    x = _as_bools(correct, "correct")
    rng = np.random.default_rng(seed)
    return _percentiles(rng.binomial(x.size, x.mean(), n_boot) / x.size, alpha)


def discordant(a, b) -> tuple[int, int]:
    """(b01, b10): items only b gets right, items only a gets right."""
    a, b = _as_bools(a, "a"), _as_bools(b, "b")
    if a.size != b.size:
        raise ValueError(f"paired lists differ in length: {a.size} vs {b.size}")
    return int(np.sum(~a & b)), int(np.sum(a & ~b))


def paired_bootstrap_diff(a, b, n_boot: int = 10000, alpha: float = 0.05,
                          seed: int = 0) -> tuple[float, float, float]:
    """(acc(a) - acc(b), lo, hi): items resampled jointly, so both lists see the same draw."""
    b01, b10 = discordant(a, b)
    n = len(a)
    rng = np.random.default_rng(seed)
    # Only the discordant cells move the difference; the concordant ones are lumped together.
    counts = rng.multinomial(n, [b10 / n, b01 / n, (n - b01 - b10) / n], n_boot)
    lo, hi = _percentiles((counts[:, 0] - counts[:, 1]) / n, alpha)
    return (b10 - b01) / n, lo, hi


def mcnemar_exact(a, b) -> float:
    """Exact two-sided McNemar p-value: a binomial(n, 1/2) test on the discordant pairs."""
    b01, b10 = discordant(a, b)
    n = b01 + b10
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b01, b10) + 1))  # exact integers, no float drift
    return min(1.0, 2 * tail / 2**n)
