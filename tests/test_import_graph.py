"""Import cycles, read from the source (ast), not from what happens to be imported at run time.

Why: a circle between two modules makes each half unreadable without the other and breaks as soon as
someone moves an import to the top of a file. Inside ``d2c/captions`` every import counts, type-checking
and function-level ones included (they are what hides a circle); across ``d2c`` the imports that run
when a module is imported (top-level statements, ``if TYPE_CHECKING:`` blocks left out) must form no
cycle either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("d2c", "mmsar", "sarclip_train")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, top_level_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements of ``tree``: all of them, or those run when the module is imported."""
    if not top_level_only:
        yield from (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.With):
            todo += node.body


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules one import statement names (``from pkg import sub`` names the submodule)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        here = here[: len(here) - node.level + 1]
        base = ".".join([*here, *([base] if base else [])])
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.add(sub)
        elif base in known:
            out.add(base)
    return out


def import_graph(top_level_only: bool, within: str = "") -> dict[str, set[str]]:
    """Module -> project modules it imports, for the modules whose name starts with ``within``."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if not name.startswith(within):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: set[str] = set()
        for node in _imports(tree, top_level_only):
            edges |= _targets(node, name, path.name == "__init__.py", known)
        graph[name] = {t for t in edges if t.startswith(within) and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_parses_and_the_graph_sees_imports() -> None:
    graph = import_graph(top_level_only=False)
    assert set(PACKAGES) <= set(graph)
    assert "d2c.captions.sandbox" in graph["d2c.captions.engine"]  # the graph does see real imports


def test_no_import_cycle_in_captions() -> None:
    assert cycles(import_graph(top_level_only=False, within="d2c.captions")) == []


def test_no_top_level_import_cycle_in_d2c() -> None:
    assert cycles(import_graph(top_level_only=True, within="d2c")) == []


def test_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_packages_import_one_way():
    """``sarclip_train -> mmsar -> d2c``, never back (docs/architecture.md)."""
    rank = {pkg: k for k, pkg in enumerate(PACKAGES)}
    back = [(m, t) for m, targets in import_graph(top_level_only=False).items() for t in targets
            if rank[t.split(".")[0]] > rank[m.split(".")[0]]]
    assert back == []
