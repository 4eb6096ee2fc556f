"""The import rule (docs/architecture.md), read from the source with `ast` (nothing is imported):

- methods/ and tasks/ import harness; harness imports no method or task module (plugins are
  found by name through the loaders in harness/method.py and harness/task.py);
- each room of harness/ imports only the rooms its __init__ docstring allows (ALLOWED below);
- no module imports another that imports it back, directly or around a longer circle; imports
  inside functions count too, so a circle cannot hide in one.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "tasks")

# room -> rooms (and top-level spine modules) it may import; a room may always import itself
ALLOWED = {
    "harness.runs": {"harness.errors"},
    "harness.engine": {"harness.errors", "harness.runs"},
    "harness.services": {"harness.errors", "harness.runs", "harness.engine", "harness.vote"},
    "harness.budget": {"harness.errors", "harness.runs", "harness.engine", "harness.config", "harness.splits",
                       "harness.task", "harness.method"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            # `from harness.runs import faults` names the module harness.runs.faults; a class or
            # function name falls back to its module
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {m: imports(p, known) - {m} - {m.rpartition(".")[0]} for m, p in modules.items()}


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or module in ALLOWED else module


def test_harness_imports_no_method_or_task_module():
    offending = sorted((m, d) for m, deps in graph().items() if m.startswith("harness")
                       for d in deps if d.split(".")[0] in ("methods", "tasks"))
    assert offending == [], "harness must reach plugins through the loaders: " + \
        ", ".join(f"{m} imports {d}" for m, d in offending)


def test_every_room_imports_only_what_it_may():
    offending = []
    for m, deps in graph().items():
        own = room(m)
        if own not in ALLOWED:
            continue
        for d in deps:
            target = room(d)
            if target != own and target not in ALLOWED[own] and d.split(".")[0] == "harness":
                offending.append(f"{m} imports {d}")
    assert offending == [], "imports against the room rule: " + ", ".join(sorted(offending))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(g):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(g[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(g.get(nxt, ()))))
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_and_names_it():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from harness.runs import faults\n    import methods.randopt\n")
    assert imports(source, {"harness.runs.faults", "harness.runs", "methods.randopt"}) == {
        "harness.runs.faults", "harness.runs", "methods.randopt"}
