"""The package's shape: no import cycle among peergrid's modules, no private names across them
from the API modules.

Every import of a peergrid module counts: at module level, under ``TYPE_CHECKING``
and inside functions (a lazy import is still a dependency, and a cycle of them is
a knot a reader has to untie). ``from package import name`` counts as importing
``package.name`` when that is a module, else ``package`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import peergrid

ROOT = Path(peergrid.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> set[tuple[str, str]]:
    """``(module imported, name taken from it or "")`` for every import in ``path``."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[tuple[str, str]] = set()

    def owner(name: str) -> str:
        while name and name not in known:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update((owner(alias.name), "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add((sub, "") if sub in known else (owner(base), alias.name))
    return {(m, name) for m, name in found if m.startswith("peergrid") and m != module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {target for target, _ in imports(m, path, known)} for m, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_api_modules_take_no_private_name_of_another_module() -> None:
    known = modules()
    for module in ("peergrid.maps.sync", "peergrid.maps.aio", "peergrid.aio", "peergrid.grid"):
        private = sorted(
            f"{target}.{name}"
            for target, name in imports(module, known[module], known)
            if name.startswith("_")
        )
        assert private == [], f"{module} imports private names: {private}"
