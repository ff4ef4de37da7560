"""The pruning layer's own structure (issue 21): no import circle inside `vss_cli/pruning/`, and no
module there other than a method's own files names a method (rules, budgets and the registry are
generic; a method registers its allocation rule beside itself)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from vss_cli.pruning.registry import list_methods

PRUNING = Path(__file__).resolve().parents[1] / "vss_cli" / "pruning"


def module_name(path: Path) -> str:
    parts = path.relative_to(PRUNING.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PRUNING.rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
        if path.name == "__init__.py" and "importlib" in path.read_text():  # a package importing its modules
            graph[name] |= {m for m in modules if m.startswith(name + ".")}
    return graph


def test_no_import_circle_inside_pruning():
    graph = import_graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert [m for m in sorted(graph) if m in reachable(m)] == []


def test_no_generic_pruning_module_names_a_method():
    names = list_methods()
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)
    generic = [p for p in PRUNING.rglob("*.py") if p.parent == PRUNING or p.name == "__init__.py"]
    found = {str(p.relative_to(PRUNING)): sorted({m.group(0) for m in pattern.finditer(p.read_text())})
             for p in generic}
    assert {k: v for k, v in found.items() if v} == {}
