"""The one voting rule every reported accuracy goes through (base included, as K=1)."""
from __future__ import annotations

from collections import Counter


def majority(keys: list[str]) -> str:
    """Most common non-empty key; a tie goes to the key seen first (Counter keeps insertion
    order, and `most_common` is stable), i.e. the earliest in rank order. "" if all abstain."""
    non_empty = [k for k in keys if k]
    if not non_empty:
        return ""
    return Counter(non_empty).most_common(1)[0][0]
