"""Fault injection for the kill tests: SIGKILL this process at a named point.

`THICKET_KILL_AT=name` kills the process the first time `point("name")` runs,
`THICKET_KILL_AT=name:3` the third time. Points sit where a real kill does the most harm:
between writing a file and renaming it into place, inside a trainer's checkpoint, after a
unit's record. Unset (always, outside tests), a point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "THICKET_KILL_AT"
_seen: dict[str, int] = {}


def point(name: str) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    wanted, _, nth = target.partition(":")
    if wanted != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
