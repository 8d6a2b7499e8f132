"""The house rules: imports go only down the layers declared here, and no import cycle exists.

Every ``import`` in ``tpu_bo/`` counts, at module or function level (``TYPE_CHECKING`` ones
too), and so do the names a package's ``__init__`` exports lazily (:mod:`tpu_bo._lazy`). A unit
is a subpackage (``tpu_bo.search``) or a top-level module (``tpu_bo.config``); a unit may import
only units of lower layers, and units of one layer do not import each other. ``docs/DESIGN.md``
states the same order ("Layout"). Size is a smell, not a rule: a module of more than
``MODULE_LINES`` code lines, or a function of more than ``FUNCTION_LINES`` (docstrings,
comments and blank lines not counted), is reported as a warning, for a reader to judge.
"""

from __future__ import annotations

import ast
import pathlib
import warnings

from tests.conftest import ROOT

# Lowest first. One tuple is one layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("terminal",),
    ("errors", "records", "objectives", "timing", "_lazy"),
    ("search",),
    ("config",),
    ("device",),
    ("data",),
    ("study",),
    ("train",),
    ("report",),
    ("session",),
    ("smoke",),
    ("results",),
    ("keras_tuner",),  # KerasTuner's API over run_study and the read-back of results
    ("main",),
    ("__init__",),  # the package's public face
)
NO_TENSORFLOW = ("search",)  # units that never import TensorFlow or Keras, even lazily
MODULE_LINES = 600
FUNCTION_LINES = 80
PACKAGE = ROOT / "tpu_bo"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _imports(name: str) -> set[str]:
    """The tpu_bo modules ``name`` imports, and the third-party top-level names."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node)
            for alias in node.names:
                # A submodule, else a name the module (or a package's lazy exports) defines.
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "exports"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Dict)
        ):
            found.update(f"{name}.{v.value}" for v in node.args[1].values)
    out = set()
    for target in found:
        if target.split(".")[0] != "tpu_bo":
            out.add(target.split(".")[0])
            continue
        while target not in MODULES:  # ``from tpu_bo.x import name``: the module is tpu_bo.x
            target = target.rpartition(".")[0]
        if target != name:
            out.add(target)
    return out


GRAPH = {name: {t for t in _imports(name) if t.startswith("tpu_bo")} for name in MODULES}


def _unit(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}


def test_every_unit_has_a_layer():
    units = {_unit(name) for name in MODULES}
    assert units == set(RANK), f"declare a layer for {sorted(units - set(RANK))}"


def test_imports_go_only_down():
    wrong = []
    for name, targets in GRAPH.items():
        for target in targets:
            source, dest = _unit(name), _unit(target)
            if dest == "_lazy" or source == dest:
                continue  # every package's __init__ lists its exports through tpu_bo._lazy
            if RANK[dest] >= RANK[source]:
                wrong.append(f"{name} imports {target} ({source} is not above {dest})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle_at_module_or_function_level():
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (cycle := visit(name)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_search_layer_imports_no_tensorflow():
    heavy = {"tensorflow", "keras", "tensorboard"}
    wrong = {
        name: sorted(_imports(name) & heavy)
        for name in MODULES
        if _unit(name) in NO_TENSORFLOW and _imports(name) & heavy
    }
    assert not wrong, wrong


def test_the_house_has_rooms_and_a_small_hall():
    subpackages = {_unit(n) for n in MODULES if n.count(".") == 1 and _is_package(n)}
    top = [n for n in MODULES if n.count(".") == 1 and not _is_package(n)]
    assert len(subpackages) >= 5, subpackages
    assert len(top) <= 10, top


def test_docs_design_states_the_same_layers():
    order = " | ".join(", ".join(layer) for layer in LAYERS)
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    assert f"Layers, lowest first: {order}" in " ".join(design.split()), order


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of ``node`` that hold code: not blank, not a comment, not a docstring."""
    skip: set[int] = set()
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    first, last = getattr(node, "lineno", 1), getattr(node, "end_lineno", len(lines))
    return sum(
        1
        for i in range(first, last + 1)
        if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def test_size_is_reported_not_enforced():
    """Warns (never fails) for a module or function long enough to hold two jobs."""
    notes = []
    for name, path in MODULES.items():
        text = path.read_text()
        tree, lines = ast.parse(text), text.splitlines()
        if (n := _code_lines(tree, lines)) > MODULE_LINES:
            notes.append(f"{name}: {n} code lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := _code_lines(node, lines)) > FUNCTION_LINES:
                    notes.append(f"{name}.{node.name}: {n} code lines")
    for note in notes:
        warnings.warn(f"long, perhaps two jobs in one place: {note}", stacklevel=1)
