"""The engine's layers and its import graph: no upward import, no plugin by name, no circle.

Layers, lowest first; a module may import its own layer and those below it:

=======  ==============================================================================
base     ``nasflow.errors``, ``.registries``, ``.config``, ``.schema``, ``.atomic``
core     ``nasflow.core`` (ops, mixed ops, cells, spaces, supernet, genotype, derive, compile)
task     ``nasflow.task`` (the task plugin interface)
search   ``nasflow.search`` (strategies, bilevel groups, hypergradients, distributed)
run      ``nasflow.run`` (runner, checkpoints, TensorBoard)
infer    ``nasflow.infer`` (model files, load_model, enhance, image I/O, tiling, export, fastpath)
app      ``nasflow`` itself (the public API), ``.cli``, ``.__main__``, ``.docgen``
=======  ==============================================================================

Every import statement counts: at module level, inside a function, or under ``if TYPE_CHECKING``.
A function-level (lazy) import only defers a dependency to the first call; it neither removes it
nor breaks a circle, so lazy imports obey the same layers and must not close a circle either.
``importlib.import_module("literal")`` counts as an import of that literal.

Plugins (``nasflow.tasks``, ``nasflow.spaces``, ``nasflow.strategies``, whose sources live in the
top-level ``tasks/``, ``spaces/``, ``strategies/``) are never imported by the engine: the
registries load them through entry points or through a ``module:attr`` string from a user's config
(``Registry.get``, which needs no import statement naming them). The only other mention is the
runner reading the bundled YAML configs as package data (``resources.files("nasflow.tasks")``),
which imports no code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "nasflow"

PLUGINS = ("nasflow.tasks", "nasflow.spaces", "nasflow.strategies")

LAYERS: dict[str, int] = {
    "nasflow.errors": 0,
    "nasflow.registries": 0,
    "nasflow.config": 0,
    "nasflow.schema": 0,
    "nasflow.atomic": 0,
    "nasflow.core": 1,
    "nasflow.task": 2,
    "nasflow.search": 3,
    "nasflow.run": 4,
    "nasflow.infer": 5,
    "nasflow": 6,
    "nasflow.cli": 6,
    "nasflow.__main__": 6,
    "nasflow.docgen": 6,
}
"""Layer of each engine module, by its longest listed prefix."""


@dataclass(frozen=True)
class Import:
    """One import in an engine module: what it names, where, and whether it runs at import time."""

    source: str
    target: str
    line: int
    lazy: bool


def layer_of(module: str) -> int:
    """The layer of ``module`` (its longest prefix in :data:`LAYERS`); unlisted modules fail."""
    name = module
    while name not in LAYERS or (name == "nasflow" and module != "nasflow"):  # no root module by default
        if "." not in name:
            raise AssertionError(f"{module} is in no layer: add its package to LAYERS in {__file__}")
        name = name.rsplit(".", 1)[0]
    return LAYERS[name]


def engine_sources(root: Path = ENGINE) -> dict[str, tuple[str, bool]]:
    """``{module name: (source text, is a package __init__)}`` for every module under ``root``."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("nasflow",) + path.relative_to(root).with_suffix("").parts
        if ".".join(parts[:2]) in PLUGINS:  # a plugin folder linked into the package: not the engine
            continue
        package = parts[-1] == "__init__"
        sources[".".join(parts[:-1] if package else parts)] = (path.read_text(encoding="utf-8"), package)
    return sources


def imports_of(module: str, text: str, package: bool, known: set[str]) -> list[Import]:
    """Every ``nasflow`` import in one module's source (relative imports resolved)."""
    found: list[Import] = []

    def absolute(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = module.split(".") if package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = absolute(child)
                for alias in child.names:  # ``from pkg import submodule`` names the submodule
                    sub = f"{base}.{alias.name}"
                    found.append(Import(module, sub if sub in known else base, child.lineno, lazy))
            elif (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                  and child.func.attr == "import_module" and child.args
                  and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str)):
                found.append(Import(module, child.args[0].value, child.lineno, lazy))
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(text), False)
    return [i for i in found if i.target == "nasflow" or i.target.startswith("nasflow.")]


def import_graph(sources: dict[str, tuple[str, bool]]) -> list[Import]:
    """All imports of all modules in ``sources``."""
    known = set(sources)
    return [i for name, (text, package) in sources.items() for i in imports_of(name, text, package, known)]


def forbidden(imports: list[Import]) -> list[str]:
    """One line per import of a plugin or of a higher layer."""
    bad = []
    for i in imports:
        where = f"{i.source}:{i.line} imports {i.target}" + (" (inside a function)" if i.lazy else "")
        if i.target.startswith(PLUGINS):
            bad.append(f"{where}: the engine reaches plugins only through the registries")
        elif layer_of(i.target) > layer_of(i.source):
            bad.append(f"{where}: a lower layer may not import a higher one")
    return bad


def circles(imports: list[Import], modules: set[str]) -> list[list[str]]:
    """Every import circle among ``modules``, each as the modules on it (Tarjan's strongly connected
    components with more than one module, or a module importing itself)."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for i in imports:
        if i.target in modules:
            edges[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # recursive; the engine's import depth is small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


# -- the engine as it is ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine() -> tuple[dict[str, tuple[str, bool]], list[Import]]:
    sources = engine_sources()
    return sources, import_graph(sources)


def test_the_engine_has_the_documented_layers(engine) -> None:
    sources, _ = engine
    for module in sources:
        layer_of(module)  # every module sits in a layer
    root = sorted(m for m in sources if m.count(".") == 1 and m.split(".")[1] not in ("core", "search", "run", "infer"))
    assert len(root) + 1 <= 10, f"the nasflow/ root holds at most 10 modules (with __init__): {root}"


def test_no_engine_module_imports_a_higher_layer_or_a_plugin(engine) -> None:
    _, imports = engine
    assert forbidden(imports) == []


def test_the_engine_has_no_import_circle(engine) -> None:
    sources, imports = engine
    assert circles(imports, set(sources)) == []


def test_imports_are_found_at_every_depth(engine) -> None:
    """The scanner sees module-level, function-level and TYPE_CHECKING imports of the real tree."""
    _, imports = engine
    pairs = {(i.source, i.target, i.lazy) for i in imports}
    assert ("nasflow.core.compile", "nasflow.core.cell", False) in pairs
    assert ("nasflow.core.supernet", "nasflow.core.compile", True) in pairs
    assert ("nasflow.cli", "nasflow.run.runner", True) in pairs


# -- the checks bite -------------------------------------------------------------------------------
def _fake(**modules: str) -> dict[str, tuple[str, bool]]:
    return {name.replace("__", "."): (text, False) for name, text in modules.items()}


def test_an_upward_import_is_reported_even_inside_a_function() -> None:
    sources = _fake(
        nasflow__core__ops="from nasflow.errors import SpaceError\n",
        nasflow__core__cell="def f():\n    from nasflow.run.runner import build_task\n",
        nasflow__run__runner="from nasflow.core import ops\n",
    )
    bad = forbidden(import_graph(sources))
    assert len(bad) == 1 and bad[0].startswith("nasflow.core.cell:2 imports nasflow.run.runner (inside a function)")


def test_core_importing_infer_and_a_plugin_import_are_reported() -> None:
    sources = _fake(
        nasflow__core__space=(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nasflow.infer.tiling import tiled_apply\n"),
        nasflow__run__runner="import importlib\nimportlib.import_module('nasflow.tasks.ruas.task')\n",
        nasflow__search__bilevel="from nasflow.spaces.darts_cell import DartsCellSpace\n",
    )
    bad = "\n".join(forbidden(import_graph(sources)))
    assert "nasflow.core.space:3 imports nasflow.infer.tiling: a lower layer" in bad
    assert "nasflow.run.runner:2 imports nasflow.tasks.ruas.task: the engine reaches plugins" in bad
    assert "nasflow.search.bilevel:1 imports nasflow.spaces.darts_cell" in bad


def test_a_circle_is_reported_also_through_a_lazy_or_relative_import() -> None:
    sources = _fake(
        nasflow__core__compile="from nasflow.core.supernet import Supernet\n",
        nasflow__core__supernet="class Supernet:\n    def compile(self):\n        from .compile import compile_model\n",
        nasflow__core__ops="from nasflow.core import mixed\n",
        nasflow__core__mixed="import nasflow.errors\n",
    )
    imports = import_graph(sources)
    assert circles(imports, set(sources)) == [["nasflow.core.compile", "nasflow.core.supernet"]]
    assert forbidden(imports) == []


def test_an_unlisted_package_is_an_error() -> None:
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("nasflow.newcomer")
