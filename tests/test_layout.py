"""The house has two wings: the spine (harness/ and its rooms, methods/, tasks/) can change a result,
the analysis wing (harness/analysis/) only reads finished runs. The spine never imports it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPINE = [*sorted(p for p in (ROOT / "harness").rglob("*.py") if "analysis" not in p.relative_to(ROOT).parts),
         *sorted((ROOT / "methods").glob("*.py")), *sorted((ROOT / "tasks").glob("*.py"))]
ENTRY_POINTS = {"cli.py"}  # the command line dispatches to both wings


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_spine_never_imports_the_analysis_wing():
    offenders = {p.relative_to(ROOT).as_posix(): sorted(m for m in imported_modules(p)
                                                         if m.startswith("harness.analysis"))
                 for p in SPINE if p.name not in ENTRY_POINTS}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_analysis_wing_is_a_package_of_its_own():
    wing = {p.stem for p in (ROOT / "harness" / "analysis").glob("*.py")}
    assert {"report", "plots", "stats", "crosscheck", "density", "reproduce", "rundir"} <= wing
    assert not any((ROOT / "harness" / f"{m}.py").exists() for m in wing - {"__init__"})


def test_the_top_level_keeps_only_the_spine():
    """About a dozen modules at the top; the machinery lives in rooms (docs/architecture.md)."""
    top = sorted(p.stem for p in (ROOT / "harness").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 13, top
    rooms = {p.name for p in (ROOT / "harness").iterdir() if (p / "__init__.py").is_file()}
    assert {"engine", "runs", "budget", "services", "analysis"} <= rooms
    for name in rooms:
        assert ast.get_docstring(ast.parse((ROOT / "harness" / name / "__init__.py").read_text())), name
