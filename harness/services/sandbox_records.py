"""The child's result records, decoded strictly, and the verdict over one program.

The child (harness/services/sandbox_child.py) writes one JSON line per step: ["ok"] after the code, then
["c", [hole, ...]] per assert, each hole ["v", value] (plain data, tagged, every string and number
as hex text), ["x", type] (not plain data) or ["e", type, message] (it raised); ["raised", step,
exception] or ["timeout", step] end the run early, ["done"] ends it. Whatever the child wrote is
the program's to forge, so it is parsed as untrusted text: `json` and the decoder below, nothing
that can build an object other than plain data (never marshal or pickle).

`verdict(checks, data, returncode, killed)`: a pass is a record for every assert whose skeleton,
evaluated here (harness/services/sandbox_check.py), is true; anything else (a missing, malformed or
failing record, whatever the exit code) fails, with the reason.
"""
from __future__ import annotations

import errno
import json
import signal

from harness.services.sandbox_check import Check, judge

RESULT_BYTES = 4 << 20  # read no more of the result file than this
RESULT_UNWRITABLE = 3   # the child's exit status when it cannot write a record (sandbox_child.py)
MAX_COLLISIONS = 8      # elements of one set or dict that may share a hash


class _Bad(Exception):
    """A record that is not in the child's format (a program that wrote to the result channel)."""


_LEAF = {"i": lambda h: int(h, 16), "f": float.fromhex, "y": bytes.fromhex,
         "s": lambda h: bytes.fromhex(h).decode("utf-8", "surrogatepass")}
_SEQ = {"l": list, "t": tuple, "S": set, "F": frozenset}


def _value(node):
    """Plain data from its tagged form (harness/services/sandbox_child.py `_plain`); _Bad if malformed."""
    if type(node) is not list or not node or type(node[0]) is not str:
        raise _Bad
    tag, rest = node[0], node[1:]
    if tag == "n" and not rest:
        return None
    if tag == "b" and rest in ([0], [1]):
        return rest == [1]
    if tag in _LEAF and len(rest) == 1 and type(rest[0]) is str:
        return _LEAF[tag](rest[0])
    if tag == "c" and len(rest) == 2 and type(rest[0]) is str and type(rest[1]) is str:
        return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
    if tag in ("l", "t"):
        return _SEQ[tag](_value(x) for x in rest)
    if tag in ("S", "F"):
        items = [_value(x) for x in rest]
        return _SEQ[tag](_spread(items, items))
    if tag == "d" and len(rest) % 2 == 0:
        keys, values = [_value(k) for k in rest[::2]], [_value(v) for v in rest[1::2]]
        return dict(zip(_spread(keys, keys), values))
    raise _Bad


def _spread(keys: list, items: list) -> list:
    """`items`, unless many `keys` share a hash: a forged set of ints that all collide would take
    the harness quadratic time to build, and honest data never collides more than a few times."""
    counts: dict[int, int] = {}
    for key in keys:
        h = hash(key)  # TypeError for a list or dict inside a set: malformed
        counts[h] = counts.get(h, 0) + 1
        if counts[h] > MAX_COLLISIONS:
            raise _Bad
    return items


def _text(h) -> str:
    if type(h) is not str:
        raise _Bad
    return bytes.fromhex(h).decode("utf-8", "replace")


def _hole(node):
    """One hole's result: ("value", v) | ("failure", reason)."""
    if type(node) is list and len(node) == 2 and node[0] == "v":
        return ("value", _value(node[1]))
    if type(node) is list and len(node) == 2 and node[0] == "x":
        return ("failure", f"a value that is not plain data ({_text(node[1])})")
    if type(node) is list and len(node) == 3 and node[0] == "e":
        return ("failure", _exception(node))
    raise _Bad


def _exception(node) -> str:
    name, message = _text(node[1]), _text(node[2])
    if name in ("SyntaxError", "IndentationError", "TabError"):
        return f"syntax error: {message}"
    if name == "MemoryError":
        return "memory limit (MemoryError)"
    if message.startswith(f"[Errno {errno.EFBIG}]"):
        return f"output limit ({name}: {message})"
    return f"raised {name}" + (f": {message}" if message else "")


def verdict(checks: list[Check], data: bytes, returncode: int | None, killed: bool) -> tuple[str, str]:
    """(status, reason) from the child's result records: "passed" only when every check has its
    record and is true on the values in it; else failed or timeout, and why."""
    try:
        records = _records(data)
    except _Bad:
        return "failed", MALFORMED
    for step in range(len(checks) + 1):
        where = "the code" if step == 0 else f"assert {step}"
        if step >= len(records):
            return _ended(where, returncode, killed)
        record = records[step]
        try:
            if record == ["timeout", step]:
                return "timeout", f"{where} ran past its time limit"
            if len(record) == 3 and record[:2] == ["raised", step] and _is_exception(record[2]):
                return "failed", f"{where}: {_exception(record[2])}"
            if step == 0 and record == ["ok"]:
                continue
            check = checks[step - 1] if step else None
            if (check and len(record) == 2 and record[0] == "c" and type(record[1]) is list
                    and len(record[1]) == len(check.holes)):
                wrong = judge(check, [_hole(h) for h in record[1]])
                if wrong:
                    return "failed", f"{where}: {wrong}"
                continue
        except (_Bad, ValueError, TypeError, RecursionError, OverflowError, MemoryError):
            pass
        return "failed", MALFORMED
    if records[len(checks) + 1:] not in ([], [["done"]]):
        return "failed", MALFORMED
    return "passed", ""


MALFORMED = "its result records are not the child's (the program wrote to the result channel)"


def _records(data: bytes) -> list[list]:
    lines = data[:RESULT_BYTES].split(b"\n")  # a longer file is cut: its last record goes missing
    records = []
    for line in lines[:-1]:  # the last piece is "" or a record cut short by a kill: not a record
        try:
            record = json.loads(line.decode("ascii"))
        except (ValueError, RecursionError):
            raise _Bad from None
        if type(record) is not list or not record:
            raise _Bad
        records.append(record)
    return records


def _ended(where: str, returncode: int | None, killed: bool) -> tuple[str, str]:
    """Why the records stop before `where` finished: the process ended or was killed."""
    if killed:
        return "timeout", f"killed at its deadline during {where}"
    if returncode is not None and returncode < 0:
        name = {signal.SIGXCPU: "CPU time limit (SIGXCPU)", signal.SIGXFSZ: "output limit (SIGXFSZ)",
                signal.SIGKILL: "killed (SIGKILL)", signal.SIGSEGV: "crashed (SIGSEGV)"}
        return "failed", f"{name.get(-returncode, f'killed by signal {-returncode}')} during {where}"
    if returncode == RESULT_UNWRITABLE:
        return "failed", f"could not write its result during {where} (output limit, or the program closed the channel)"
    return "failed", f"exited (status {returncode}) during {where}, before its result"


def _is_exception(node) -> bool:
    return type(node) is list and len(node) == 3 and node[0] == "e"
