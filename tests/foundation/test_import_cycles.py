"""No import cycles in unihema or data_prep, function-level imports included.

A cycle hidden behind an import inside a function still couples the two modules both ways:
each one breaks when the other is refactored, and the order they first load in decides
whether the program starts. This test reads every module with ``ast`` (so nothing is
imported or executed), collects every import wherever it appears, and fails naming each
cycle it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("unihema", "data_prep")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect_modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    return {module_name(path, root): path for pkg in packages for path in sorted((root / pkg).rglob("*.py"))}


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``, which never run."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imported_names(tree: ast.Module, module: str, is_package: bool, modules) -> set[str]:
    """Every module ``module`` imports, anywhere in its body (functions too); relative imports resolved.

    ``import a.b.c`` depends on a.b.c; ``from a.b import c`` on a.b.c when that is a module, else on a.b.
    """
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                names.add(sub if sub in modules else target)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps = imported_names(tree, name, path.name == "__init__.py", modules)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), shortest found."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        # Iterative Tarjan: the import graph is small but recursion depth should not depend on it.
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [shortest_cycle(graph, comp) for comp in components]


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, found by breadth-first search."""
    members = set(component)
    start = component[0]
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for w in sorted(graph[node] & members):
                if w == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = node
                    nxt.append(w)
        frontier = nxt
    return component


def test_no_import_cycles():
    cycles = find_cycles(import_graph(collect_modules()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.fixture
def toy_package(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("import toy.c\n")
    (pkg / "c.py").write_text("from toy.a import f\n")
    (pkg / "d.py").write_text("from . import c\n")
    (pkg / "e.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy import d\n")
    return tmp_path


def test_cycle_through_function_level_and_relative_imports_is_found(toy_package):
    graph = import_graph(collect_modules(toy_package, ("toy",)))
    assert graph["toy.a"] == {"toy.sub.b"}
    assert graph["toy.d"] == {"toy.c"}
    assert graph["toy.e"] == set()  # typing-only imports never run
    assert find_cycles(graph) == [["toy.a", "toy.sub.b", "toy.c", "toy.a"]]


def test_no_cycle_reports_nothing(toy_package):
    (toy_package / "toy" / "c.py").write_text("import os\n")
    assert find_cycles(import_graph(collect_modules(toy_package, ("toy",)))) == []
