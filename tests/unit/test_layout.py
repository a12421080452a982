"""The layering drawn from the imports: recslm (the library) < tasks < flows.

The library imports neither Prefect, MLflow, ``tasks`` nor ``flows`` (not at module level,
not inside a function, not by a string); ``tasks`` never imports ``flows``; and the
library's own modules import each other without a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["recslm", "tasks", "flows"]
FORBIDDEN_IN_LIBRARY = ("prefect", "mlflow", "tasks", "flows")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Absolute names a module imports anywhere in it (``from . import x`` resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]  # `from recslm import store` imports recslm.store
    return names


def _python_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", _python_files("recslm"), ids=lambda p: str(p.relative_to(REPO)))
def test_the_library_imports_no_orchestration_or_tracking(path):
    bad = [name for name in _imports(path) if name.split(".")[0] in FORBIDDEN_IN_LIBRARY]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    text = path.read_text()
    for name in FORBIDDEN_IN_LIBRARY:
        assert f'import_module("{name}' not in text and f"import_module('{name}" not in text, f"{path} imports {name} by a string"


def test_no_layer_imports_a_higher_one():
    files = {layer: _python_files(layer) for layer in LAYERS}
    assert all(files.values())
    for rank, layer in enumerate(LAYERS):
        higher = set(LAYERS[rank + 1 :])
        for path in files[layer]:
            bad = [name for name in _imports(path) if name.split(".")[0] in higher]
            assert not bad, f"{path.relative_to(REPO)} ({layer}) imports {bad}"


def test_the_library_has_no_import_loop():
    """Imports inside functions count too: a lazy import is still a dependency, and two modules
    that need each other are one module in two files (the old store / s3store pair)."""
    modules = {_module_name(p): p for p in _python_files("recslm")}
    graph = {
        name: {target for target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }
    # a package's __init__ runs before any of its submodules: importing recslm.a.b imports recslm.a too
    for name in list(graph):
        graph[name] |= {parent for target in list(graph[name]) for parent in _parents(target) if parent in modules and parent != name and not name.startswith(parent + ".")}
    cycles = _cycles(graph)
    assert not cycles, f"import loops: {cycles}"


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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


def test_the_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
