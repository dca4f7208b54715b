"""The import graph of the ``workbench`` package, read from the source (nothing is imported).

Run ``python tests/layout/import_graph.py`` from the repository root for the rooms (the package's
sub-packages and top-level modules), the arrows between them, and every import circle between
modules; ``--modules`` lists module-level arrows as well. Imports inside functions count like any other
(deferring an import hides a dependency, it does not remove it); imports under ``if TYPE_CHECKING:``
do not, since they never run.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "workbench"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Workbench modules that ``path`` imports (a ``from package import name`` of a sub-module counts
    as importing that sub-module)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree)
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            # `from package import submodule` reads the submodule; a name that is no module comes from `base`
            targets = submodules + ([base] if len(submodules) < len(node.names) else [])
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != this:
                found.add(target)
    # importing a.b.c runs a/__init__ and a/b/__init__ too, but those are the package's business, not an arrow
    return found


def module_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        rooms[room(module)]
        for target in targets:
            if room(target) != room(module) and room(target) != PACKAGE:
                rooms[room(module)].add(room(target))
    return dict(rooms)


def main(argv: list[str]) -> int:
    graph = module_graph()
    rooms = room_graph(graph)
    print(f"{len(graph)} modules in {len(rooms)} rooms")
    for name in sorted(rooms):
        print(f"{name} -> {', '.join(sorted(t.removeprefix(PACKAGE + '.') for t in rooms[name])) or '-'}")
    if "--modules" in argv:
        for name in sorted(graph):
            print(f"  {name} -> {', '.join(sorted(graph[name])) or '-'}")
    found = circles(graph)
    print(f"{len(found)} import circles between modules")
    for members in found:
        print("  " + " <-> ".join(members))
    room_circles = circles(rooms)
    print(f"{len(room_circles)} circles between rooms")
    for members in room_circles:
        print("  " + " <-> ".join(members))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
