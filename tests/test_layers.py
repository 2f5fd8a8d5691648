"""The package's layering: no import circle, no import from a lower layer up.

Every ``import`` of a ``pytest_k3s`` module is counted, at module level and
inside functions alike (``TYPE_CHECKING`` blocks too: a type is a
dependency). Only the lazy entry points may import inside functions: the
plugin (pytest loads it with every run) and the package's facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parent.parent / "pytest_k3s"

#: Each module's layer, lowest first; a package's modules share its layer.
#: A module may import from its own layer's other modules and from lower ones.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("spec", "owner", "userdirs"),
    ("labels",),
    ("engine", "kube"),
    ("lifecycle",),
    ("cluster",),
    ("run",),
    ("settings", "marker", "matrix"),
    ("plugin", "__main__", "cli"),
]
#: Where function-local imports of our own modules are the point.
LAZY_ENTRIES = {"pytest_k3s.plugin", "pytest_k3s"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """The ``pytest_k3s`` modules ``path`` imports, each with whether in a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef
            )
            if isinstance(child, ast.Import):
                found.extend((a.name, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:
                    # ``from pytest_k3s.kube import client`` imports a module.
                    candidate = f"{child.module}.{alias.name}"
                    if (
                        (PACKAGE.parent / candidate.replace(".", "/"))
                        .with_suffix(".py")
                        .exists()
                    ):
                        found.append((candidate, nested))
                    else:
                        found.append((child.module, nested))
            visit(child, nested)

    visit(tree, False)
    return [(name, nested) for name, nested in found if name.startswith("pytest_k3s")]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module_name(path)] = {
            name for name, _ in _imports(path) if name != "pytest_k3s"
        }
    return graph


def layer_of(module: str) -> int:
    """The layer of ``pytest_k3s.<top>[...]``; the facade is above everything."""
    if module == "pytest_k3s":
        return len(LAYERS)
    top = module.split(".")[1]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} has no layer: add it to LAYERS")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports in ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle() -> None:
    assert find_cycle(_graph()) is None


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_only_lazy_entries_import_our_modules_in_functions() -> None:
    late = [
        f"{_module_name(path)} imports {name} in a function"
        for path in sorted(PACKAGE.rglob("*.py"))
        if _module_name(path) not in LAZY_ENTRIES
        for name, nested in _imports(path)
        if nested
    ]
    assert late == []


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_the_circle_finder_finds_circles(
    graph: dict[str, set[str]], cycle: list[str] | None
) -> None:
    assert find_cycle(graph) == cycle


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        layer_of(module)
