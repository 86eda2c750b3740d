"""The package layering holds: no import cycles, and imports only point down.

`pipelines` wires `assets`, assets call `resources` and `models`, resources use
`models`, and `models` imports none of the others (nor Dagster). Every import
counts, including those inside functions: a lazy import back up is still a cycle
a reader has to hold in their head, and it breaks when the code moves.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "resources", "assets", "pipelines")
# Which top-level packages each may import.
ALLOWED = {
    "models": {"models"},
    "resources": {"resources", "models"},
    "assets": {"assets", "resources", "models"},
    "pipelines": {"pipelines", "assets", "resources", "models"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The first-party modules `path` imports anywhere in its body (a name imported from a package counts as its module when one exists)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        # a module's own packages are not dependencies (`from models import lazy_api` in models.tape)
        graph[name] = {dep for dep in _imports(path, known) if dep != name and not name.startswith(dep + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_imports_point_down():
    wrong = sorted(
        f"{module} imports {dep}"
        for module, deps in _graph().items()
        for dep in deps
        if dep.split(".")[0] not in ALLOWED[module.split(".")[0]]
    )
    assert wrong == []


def test_models_do_not_import_dagster():
    offenders = []
    for name, path in _modules().items():
        if name.split(".")[0] != "models":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if module and module.split(".")[0] == "dagster":
                    offenders.append(name)
    assert offenders == []


def test_assets_do_not_import_each_other():
    # assets exchange typed results (models.results) through the IO manager, never each other's helpers
    shared = {"assets", "assets.common", "assets.partitions", "assets.policies"}
    wrong = sorted(
        f"{module} imports {dep}"
        for module, deps in _graph().items()
        if module.startswith("assets.") and module not in shared
        for dep in deps
        if dep.startswith("assets") and dep not in shared
    )
    assert wrong == []
