"""The package's import graph has no circles: lower layers never import higher ones, whatever the import's place."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

EDGE = Path(__file__).parents[1] / "edge"


def _module_name(path: Path) -> str:
    parts = path.relative_to(EDGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(EDGE.rglob("*.py"))}


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every edge module ``module`` imports: at the top, inside functions and under TYPE_CHECKING alike (a circle that
    only a deferred import keeps from failing is still a circle), with ``from pkg import name`` counting ``pkg.name``
    when that is a module, else ``pkg``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                # A submodule named this way needs only itself; any other name needs the package's __init__ run.
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def import_graph() -> dict[str, set[str]]:
    """module -> the edge modules it needs loaded. Importing ``a.b.c`` from outside ``a.b`` runs ``a.b``'s __init__
    first, so that package counts too; from inside it is already loading and does not."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        needs: set[str] = set()
        for name in _imported(module, path, known):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                inside = module == target or module.startswith(target + ".")
                if target in known and target != module and (i == len(parts) or not inside):
                    needs.add(target)
        graph[module] = needs
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle_through_a_package_init() -> None:
    """The check itself: a → b.c, where b's __init__ imports a, is a circle; b.c importing b.d is not."""
    graph = {"a": {"b", "b.c"}, "b": {"a", "b.c", "b.d"}, "b.c": {"b.d"}, "b.d": set()}
    assert cycles(graph) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_agent_imports_in_a_circle() -> None:
    """No import circle in edge/ (e.g. api/routes ↔ its route modules, scanners/hid ↔ scanners/ports): each part
    can be imported, tested and replaced on its own."""
    graph = import_graph()
    assert "edge.api.routes" in graph and "edge.store.db" in graph["edge.store.jobs"]  # the walk sees the package
    found = cycles(graph)
    assert found == [], "import circles (each group imports itself through the others): " + "; ".join(
        " ".join(group) for group in found
    )
