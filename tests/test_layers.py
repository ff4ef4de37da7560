"""The layering of DESIGN §2, checked on the source: imports point down, nothing imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vss_cli"
SHARED = {"errors", "fileio", "signals", "consoles", "threads", "__main__", "__init__"}
# layer -> the vss_cli layers it may import (itself and the shared helpers always)
ALLOWED = {
    "store": set(),
    "report": {"store"},
    "data": set(),
    "models": set(),
    "engine": {"models", "data"},
    "pruning": {"engine", "models", "data"},
    "workflows": {"engine", "pruning", "models", "data", "store", "report"},
    "cli": {"workflows", "engine", "pruning", "models", "data", "store", "report"},
    "lineage": {"store", "report"},  # the Python API for analysis (vss_cli/lineage.py)
}


def _imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vss_cli" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_down(layer):
    bad = {}
    module = PACKAGE / f"{layer}.py"
    for path in [module] if module.is_file() else sorted((PACKAGE / layer).rglob("*.py")):
        wrong = _imported_layers(path) - ALLOWED[layer] - SHARED - {layer}
        if wrong:
            bad[str(path.relative_to(PACKAGE))] = sorted(wrong)
    assert not bad, f"upward imports: {bad}"


def test_store_and_report_never_import_torch():
    for layer in ("store", "report"):
        for path in [*(PACKAGE / layer).rglob("*.py"), PACKAGE / "lineage.py"]:
            tree = ast.parse(path.read_text())
            mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
                   {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            assert not any(m.split(".")[0] in ("torch", "torchvision") for m in mods), path


def test_modules_and_functions_stay_small():
    """Issue 11's bar for a codebase the next person can change: modules ≤ 400 lines, functions ≤ 60."""
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            long_modules.append(str(path.relative_to(PACKAGE)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)
