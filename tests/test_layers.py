"""The layers of DESIGN.md stay visible in the imports: nothing imports a layer above it.

Lowest first: errors, model (value types), formats (documents parsed into model
types), catalog, engine, qemu, lifecycle, fleet, cli.  Imports used only for type checking
(``if TYPE_CHECKING:``) do not count: they cost nothing at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "guestcpu"
RANK = {
    "__init__": 0, "errors": 0, "schemas": 1, "model": 1, "formats": 2, "catalog": 3, "engine": 4,
    "qemu": 5, "lifecycle": 6, "fleet": 7, "cli": 8,
    "service": 8,  # the HTTP face of the same functions as cli
}


def runtime_imports(tree: ast.AST) -> list[str]:
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(sub) for sub in ast.walk(node))
    return [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("guestcpu.")
        and id(node) not in type_only
    ]


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    layer = path.relative_to(SRC).parts[0].removesuffix(".py")
    assert layer in RANK, f"{path}: new top-level package {layer!r} needs a place in the layering"
    upward = [
        module for module in runtime_imports(ast.parse(path.read_text()))
        if RANK.get(module.split(".")[1], 0) > RANK[layer]
    ]
    assert upward == [], f"{layer} must not import {upward}"


def test_the_engine_does_no_io() -> None:
    """Pure functions: no files, processes or sockets in engine/."""
    forbidden = {"os", "subprocess", "socket", "pathlib", "shutil", "tempfile", "asyncio"}
    for path in sorted((SRC / "engine").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & forbidden, f"{path.name} imports {sorted(names & forbidden)}"
        assert "open(" not in path.read_text(), f"{path.name} opens files"
