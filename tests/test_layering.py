"""The package's imports are acyclic and go downward through its rooms.

Each module is parsed, not imported, so function-level imports count as much as
module-level ones; imports under ``if TYPE_CHECKING:`` are annotations only and are
left out. The rooms, top to bottom (a module may import its own room or any lower
one, never a higher one):

``_selection`` > ``_estimators`` > ``_fit``, ``_frozen_stage``, ``_pretrained`` >
``_skorch`` > ``_torch`` > the root's helpers (``_common``, ``_compat``,
``_version``, ``_legacy``) and ``datasets``. The package root ``__init__``
only re-exports.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sktransfer"
RANK = {
    "_selection": 6,
    "_estimators": 5,
    "_fit": 4,
    "_frozen_stage": 4,
    "_pretrained": 4,
    "_skorch": 3,
    "_torch": 2,
    "_compat": 1,
    "_common": 1,
    "_version": 1,
    "_legacy": 1,
    "datasets": 1,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules that ``path`` imports at run time (any depth)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("sktransfer"):
                        found.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if not target.startswith("sktransfer"):
                    continue
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) for name, path in paths.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_is_in_a_ranked_room():
    unranked = sorted(m for m in _graph() if m != "sktransfer" and _room(m) not in RANK)
    assert not unranked, f"modules outside the rooms of RANK: {unranked}"


def test_no_import_cycle():
    graph = _graph()
    graph.pop("sktransfer")  # the root re-exports: every module is below it
    graph = {m: {d for d in deps if d != "sktransfer"} for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(_graph()))
def test_imports_go_down(module):
    if module == "sktransfer":
        pytest.skip("the root re-exports")
    upward = sorted(
        dep
        for dep in _graph()[module]
        if dep == "sktransfer" or RANK.get(_room(dep), 99) > RANK[_room(module)]
    )
    assert not upward, f"{module} imports higher rooms: {upward}"


def test_the_check_sees_a_function_level_cycle(tmp_path, monkeypatch):
    # The checker itself: a lazy import inside a function is an edge.
    pkg = tmp_path / "sktransfer"
    (pkg / "_torch").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "_torch" / "__init__.py").write_text("")
    (pkg / "_torch" / "_a.py").write_text("def f():\n    from . import _b\n")
    (pkg / "_torch" / "_b.py").write_text("from ._a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = _graph()
    assert graph["sktransfer._torch._a"] == {"sktransfer._torch._b"}
    assert graph["sktransfer._torch._b"] == {"sktransfer._torch._a"}
