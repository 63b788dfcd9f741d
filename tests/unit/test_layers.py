"""The package's import graph keeps its layers (DESIGN §6): no module imports one of a layer
above its own, no import circle between modules, and no import of a streamer module inside a
function (the usual way of dodging a circle).

Read from the source with :mod:`ast`, imports under ``if TYPE_CHECKING:`` included: a circle
that only the type checker sees still ties the modules together for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import streamer

ROOT = Path(streamer.__file__).parent

# Top to bottom. A module may import its own layer (without a circle) or any layer below.
# ops sits over worker: its tools may use the worker's data types (a replay plan), never
# the reverse. The app layer holds what reads a whole App's declarations (acls too).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry", ("streamer", "streamer.__main__", "streamer.cli", "streamer.testing")),
    ("ops", ("streamer.ops",)),
    ("worker", ("streamer.worker",)),
    ("app", ("streamer.app", "streamer.acls")),
    (
        "declarations",
        (
            "streamer.state",
            "streamer.joins",
            "streamer.agents",
            "streamer.topics",
            "streamer.timers",
            "streamer.delays",
            "streamer.outside",
            "streamer.replies",
            "streamer.policy",
            "streamer.ratelimit",
            "streamer._context",
        ),
    ),
    (
        "clients and formats",
        (
            "streamer.serde",
            "streamer.kafka",
            "streamer.settings",
            "streamer.events",
            "streamer.clock",
            "streamer.threads",
            "streamer.progress",
            "streamer.logs",
        ),
    ),
    ("errors", ("streamer.errors",)),
]

# Imports inside a function that are allowed, each with why: `app.run()` is a convenience for
# scripts; declaring an app must not load the runtime.
FUNCTION_IMPORTS = {("streamer.app", "streamer.worker")}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module ``name`` (a module, or a name inside one) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported inside a function)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top: set[str] = set()
    inner: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            targets: list[str | None] = []
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.split(".")[0] == "streamer":
                    targets = [_resolve(f"{child.module}.{alias.name}") for alias in child.names]
            elif isinstance(child, ast.Import):
                targets = [
                    _resolve(a.name) for a in child.names if a.name.split(".")[0] == "streamer"
                ]
            for target in targets:
                if target is not None and target != module:
                    (inner if nested else top).add(target)
            visit(child, nested)

    visit(tree, False)
    return top, inner


GRAPH = {module: _imports(module) for module in MODULES}


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # The package itself is named alone: a new top-level module must get a layer.
            inside = prefix != "streamer" and module.startswith(prefix + ".")
            if (module == prefix or inside) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise AssertionError(f"module {module} has no layer: add it to LAYERS in this test")
    return best[1]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, (top, inner) in sorted(GRAPH.items())
        for target in sorted(top | inner)
        if layer_of(target) < layer_of(module) and (module, target) not in FUNCTION_IMPORTS
    ]
    assert upward == []


def test_no_import_inside_a_function() -> None:
    found = sorted(
        (module, target)
        for module, (_, inner) in GRAPH.items()
        for target in inner
        if (module, target) not in FUNCTION_IMPORTS
    )
    assert found == [], "import at module level (a circle it dodges must be broken instead)"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles({module: top for module, (top, _) in GRAPH.items()}) == []


def test_the_checks_catch_what_they_are_for() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("streamer.kafka.backend") > layer_of("streamer.worker.runner")
    assert layer_of("streamer.cli.loader") < layer_of("streamer.ops.offsets")
    for unknown in ("elsewhere.module", "streamer.new_module"):
        with pytest.raises(AssertionError, match="has no layer"):
            layer_of(unknown)
