"""The layers of docs/architecture.md hold for every import in src/userloop, including imports inside functions.

A module may import its own unit (package or core module) and units of lower layers; an import of a unit of
the same layer is allowed while the graph of units stays acyclic. The layer table is read from the ``layers``
block of docs/architecture.md, its only copy.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "userloop"
DOC = ROOT / "docs" / "architecture.md"
FACADE = "userloop"     # the unit of src/userloop/__init__.py


@dataclass(frozen=True, slots=True)
class Import:
    source: str         # the importing unit
    target: str         # the imported unit
    where: str          # path:line
    statement: str      # the import as written

    def __str__(self) -> str:
        return f"{self.where}: {self.statement}  ({self.source} -> {self.target})"


def read_layers() -> dict[str, int]:
    """Unit -> layer number, from the ``layers`` block of docs/architecture.md."""
    block = re.search(r"^```layers\n(.*?)^```", DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert block, f"{DOC} has no ```layers block"
    layers: dict[str, int] = {}
    for line in block.group(1).splitlines():
        number, _, units = line.partition(":")
        for unit in filter(None, (u.strip() for u in units.split(","))):
            assert unit not in layers, f"{unit} is listed twice in the layer table of {DOC}"
            layers[unit] = int(number)
    return layers


def unit_of(module: str) -> str:
    """``userloop.rlhi.loop`` -> ``rlhi``; ``userloop`` -> the façade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """The userloop modules an import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    # ``from userloop import cli`` loads userloop.cli, ``from userloop import __version__`` the façade
    return [f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names]


def imports_in(path: Path, text: str) -> list[Import]:
    """Every import of a userloop module in ``text``, the source of ``path``: at the top, in functions, anywhere."""
    source, found = unit_of(module_name(path)), []
    for node in ast.walk(ast.parse(text, str(path))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for module in dict.fromkeys(imported_modules(node, path)):
            if module == "userloop" or module.startswith("userloop."):
                found.append(Import(source, unit_of(module), f"{path.relative_to(ROOT)}:{node.lineno}",
                                    ast.unparse(node)))
    return found


def all_imports() -> list[Import]:
    return [i for path in sorted(PACKAGE.rglob("*.py")) for i in imports_in(path, path.read_text())]


def cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components (more than one unit) of the graph of units (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in imports:
        if i.source != i.target:
            graph[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for other in sorted(graph[unit]):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return components


@pytest.fixture(scope="module")
def layers() -> dict[str, int]:
    return read_layers()


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


def test_every_unit_has_a_layer(layers):
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(units - layers.keys())
    stale = sorted(layers.keys() - units)
    assert not missing, f"units of src/userloop missing from the layer table of {DOC.relative_to(ROOT)}: {missing}"
    assert not stale, f"the layer table of {DOC.relative_to(ROOT)} lists units that do not exist: {stale}"


def test_the_walk_sees_imports_inside_functions_and_relative_imports():
    """Guards the walker itself, on a made-up module: imports in functions and methods, relative imports,
    ``from userloop import <submodule>`` and the façade are all found and mapped to their units."""
    text = ("import json\nfrom userloop.errors import UserError\n"
            "def f():\n    from userloop.demo import run_demo\n"
            "class C:\n    def m(self):\n        from ..simulate import runs\n        from . import manifest\n"
            "from userloop import cli, __version__\n")
    found = imports_in(PACKAGE / "report" / "made_up.py", text)
    assert sorted((int(i.where.rsplit(":", 1)[1]), i.source, i.target) for i in found) == [
        (2, "report", "errors"), (4, "report", "demo"), (7, "report", "simulate"), (8, "report", "report"),
        (9, "report", "cli"), (9, "report", "userloop")]


def test_cycles_are_found():
    def imp(source, target):
        return Import(source, target, "x.py:1", "import")

    assert cycles([imp("a", "b"), imp("b", "c"), imp("c", "a"), imp("c", "d"), imp("a", "a")]) == [["a", "b", "c"]]
    assert cycles([imp("a", "b"), imp("b", "c")]) == []


def upward(layers: dict[str, int], imports: list[Import]) -> list[Import]:
    return [i for i in imports if i.target in layers and i.source in layers and layers[i.target] > layers[i.source]]


def test_an_upward_import_in_a_function_is_caught(layers):
    text = "def build():\n    from userloop.demo import read_manifest\n"
    [caught] = upward(layers, imports_in(PACKAGE / "report" / "made_up.py", text))
    assert str(caught) == ("src/userloop/report/made_up.py:2: from userloop.demo import read_manifest  "
                           "(report -> demo)")


def test_no_import_goes_up_a_layer(layers, imports):
    upward_imports = upward(layers, imports)
    assert not upward_imports, "imports that go up a layer (move the code down, see docs/architecture.md):\n" + "\n".join(
        f"  {i}  [layer {layers[i.source]} imports layer {layers[i.target]}]" for i in upward_imports)


def test_no_cycle_between_units(layers, imports):
    found = cycles(imports)
    lines = []
    for component in found:
        lines.append(f"  cycle between {', '.join(component)}; its imports that do not go down a layer:")
        lines += [f"    {i}" for i in imports if i.source != i.target and {i.source, i.target} <= set(component)
                  and layers.get(i.target, -1) >= layers.get(i.source, -1)]
    assert not found, ("imports that close a cycle between units (move the shared code down a layer):\n"
                       + "\n".join(lines))


def test_the_command_line_stays_a_thin_layer():
    """cli.py declares commands; options come from the configs (cli_options), display from display.py. At 500
    lines it has started to hold logic again: move it to the module that does the work (docs/architecture.md)."""
    lines = (ROOT / "src" / "userloop" / "cli.py").read_text(encoding="utf-8").count("\n")
    assert lines < 500, f"src/userloop/cli.py has {lines} lines"
