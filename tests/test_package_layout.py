"""The package's layout rules: a small public top level, imports that only run downward, short
modules, and in-function imports of the package's own modules only where a comment says why.

Every module of ``sce_jax`` belongs to a floor (:data:`FLOORS`, lowest first); a module may
import modules of its own floor or below, never above, so the layers read bottom-up without a
cycle hidden behind an import inside a function. A package or module missing from the table
fails the test: a new one is placed on a floor deliberately.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sce_jax"

# floor -> the top-level modules and packages on it (lowest first)
FLOORS = (
    ("registry", "parallel", "class_names", "assets"),       # leaves: no import of sce_jax
    ("weights",),                                            # PyTorch / diffusers files -> NNX
    ("models",),                                             # the NNX ports and their checkpoints
    ("search", "metrics", "data"),                           # the jitted search, metrics, inputs
    ("generator", "classifier", "prior", "priors", "api_inputs"),
    ("explainer",),                                          # the public search API
    ("workdir", "demos"),                                    # the on-disk format; the demos
    ("saving", "runs"),                                      # writing results; the dataset run
    ("evaluation",),                                         # reads finished workdirs
    ("launch",),                                             # command line and process start-up
)
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 450
MAX_IN_FUNCTION_IMPORTS = 3


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "_configs" not in p.parts)


def _unit(path: pathlib.Path) -> str:
    """The top-level module or package a file belongs to (``runs`` for sce_jax/runs/loop.py)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "__init__" if parts == ("__init__",) else parts[0]


def _own_imports(tree: ast.AST):
    """(line, top-level unit imported, inside a function) for each import of sce_jax itself."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                parts = child.module.split(".")
                if parts[0] == "sce_jax":
                    units = [parts[1]] if len(parts) > 1 else [a.name for a in child.names]
                    found.extend((child.lineno, u, in_function) for u in units)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    parts = alias.name.split(".")
                    if parts[0] == "sce_jax" and len(parts) > 1:
                        found.append((child.lineno, parts[1], in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def test_every_module_is_on_a_floor():
    units = {_unit(p) for p in _modules()} - {"__init__"}
    assert sorted(units - set(FLOOR)) == []


def test_imports_run_downward():
    upward = []
    for path in _modules():
        unit = _unit(path)
        if unit == "__init__":
            continue  # the public API re-exports from every floor
        for line, imported, _ in _own_imports(ast.parse(path.read_text())):
            if imported in FLOOR and FLOOR[imported] > FLOOR[unit]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert upward == []


def test_in_function_imports_of_own_modules_are_few_and_explained():
    inside = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for line, imported, in_function in _own_imports(ast.parse("\n".join(lines))):
            if in_function:
                inside.append((path, line))
                # the reason is a comment on the import's line or the line above it
                assert "#" in lines[line - 1] or lines[line - 2].strip().startswith("#"), (
                    f"{path}:{line}: an in-function import needs a comment saying why")
    assert len(inside) <= MAX_IN_FUNCTION_IMPORTS, inside


def test_top_level_is_the_public_api():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_short(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines; split it by concern"
