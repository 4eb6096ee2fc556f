"""`thicket list`: the tasks and methods found by file name, and every method's settings.

A setting's meaning is the docstring written under its field in the method's Config
dataclass (the house style); Python does not keep those at run time, so they are read from
the source with `ast`.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

from harness.method import available_methods, get_method
from harness.task import available_tasks


def field_docs(config_cls) -> dict[str, str]:
    """{field: the string literal right under it} for a dataclass defined in a source file."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def settings_text(name: str) -> str:
    config = get_method(name).Config
    fields = dataclasses.fields(config)
    if not fields:
        return f"{name}: no settings"
    docs = field_docs(config)
    lines = [f"{name}:"]
    for f in fields:
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        lines.append(f"  {name}.{f.name} ({kind}, default {f.default!r}): {docs.get(f.name, '')}".rstrip(": "))
    return "\n".join(lines)


def describe(settings: bool = False) -> str:
    text = [f"tasks:   {' '.join(available_tasks())}", f"methods: {' '.join(available_methods())}"]
    if settings:
        text += ["", "settings (--set METHOD.FIELD=VALUE, or --set FIELD=VALUE for every method that has it):"]
        text += [settings_text(m) for m in available_methods()]
    return "\n".join(text)
