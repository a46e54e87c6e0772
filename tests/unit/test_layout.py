"""The house's rules, read from the code's imports (DESIGN: one folder per machine or job).

- every folder's ``__init__.py`` is empty;
- ``base/`` imports nothing from the folders that build on it;
- click only under ``cli/``, asyncssh only under ``laptop/``, GitPython only in the updater;
- no import runs in a circle between modules at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import interactive_slurm

PACKAGE = Path(interactive_slurm.__file__).parent
FOLDERS = ("base", "cli", "connect", "install", "laptop", "login", "node")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_every_folder_is_a_package_whose_init_imports_nothing() -> None:
    for folder in FOLDERS:
        init = PACKAGE / folder / "__init__.py"
        assert init.exists(), folder
        assert not imports(init), f"{init} imports something"


@pytest.mark.parametrize(("where", "forbidden"), [
    ("base", ("interactive_slurm.laptop", "interactive_slurm.login", "interactive_slurm.node",
              "interactive_slurm.cli", "interactive_slurm.install", "interactive_slurm.connect",
              "interactive_slurm.entry")),
    ("connect", ("interactive_slurm.laptop", "interactive_slurm.login", "interactive_slurm.node",
                 "interactive_slurm.cli", "interactive_slurm.install")),
])
def test_no_import_runs_back_up(where: str, forbidden: tuple[str, ...]) -> None:
    for name, path in modules().items():
        if name.startswith(f"interactive_slurm.{where}."):
            bad = sorted(m for m in imports(path) if m.startswith(forbidden))
            assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize(("library", "allowed"), [
    ("click", ("interactive_slurm.cli.",)),
    ("asyncssh", ("interactive_slurm.laptop.",)),
    ("git", ("interactive_slurm.install.updater",)),
])
def test_heavy_libraries_stay_in_their_folder(library: str, allowed: tuple[str, ...]) -> None:
    for name, path in modules().items():
        uses = {m for m in imports(path) if m == library or m.startswith(library + ".")}
        if uses:
            assert name.startswith(allowed), f"{name} imports {sorted(uses)}"


def test_no_circle_of_imports_at_import_time() -> None:
    names = modules()
    graph = {
        name: {m for m in imports(path, top_level_only=True) if m in names and m != name}
        for name, path in names.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
