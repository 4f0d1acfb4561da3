"""The package's layering: floors, no import circles, private API in one
module, and docs/architecture.md up to date (docs/make_architecture.py)."""

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import make_architecture  # noqa: E402

# Backend-independent logic: `make test` runs it once (tensorflow pass).
pytestmark = pytest.mark.once

# Private names of keras_adalink's own classes, which any module may use.
_OURS = {
    node.attr
    for path in (ROOT / "keras_adalink").rglob("*.py")
    for node in ast.walk(ast.parse(path.read_text()))
    if isinstance(node, ast.Attribute)
    and isinstance(node.value, ast.Name)
    and node.value.id == "self"
}


_BY_NAME = ("getattr", "setattr", "hasattr", "delattr", "__setattr__")


def _private_uses(path):
    """`(line, text)` of each use of a private name that is not ours."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", ""))
            in _BY_NAME
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            name = node.args[1].value  # getattr(x, "_name")
        if (
            isinstance(name, str)
            and name.startswith("_")
            and not name.startswith("__")
            and str(name).isidentifier()
            and name not in _OURS
        ):
            found.append((node.lineno, name))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            module = getattr(node, "module", None) or ""
            if any(".src" in n for n in [module, *names]):
                found.append((node.lineno, module or names[0]))
    return found


def test_no_import_from_a_higher_floor():
    assert make_architecture.violations() == []


def test_no_import_circles():
    assert make_architecture.circles() == []


def test_every_module_is_in_a_room():
    for module in make_architecture.modules():
        make_architecture.room_of(module)  # Raises, naming the module.


def test_private_keras_api_only_in_graph_module():
    uses = {}
    for path in sorted((ROOT / "keras_adalink").rglob("*.py")):
        if path.name == "graph.py":
            continue
        found = _private_uses(path)
        if found:
            uses[str(path.relative_to(ROOT))] = found
    assert not uses, (
        "private Keras/KerasHub names outside keras_adalink/graph.py "
        f"(move them there, with a PRIVATE_API entry): {uses}"
    )


def test_the_checker_sees_private_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from keras.src.ops import node\n"
        "x = layer._inbound_nodes\n"
        "y = getattr(layer, '_compute_mask_layer')\n"
    )
    names = [name for _, name in _private_uses(bad)]
    assert names == ["keras.src.ops", "_inbound_nodes", "_compute_mask_layer"]


def test_architecture_page_is_current():
    assert (
        make_architecture.render()
        == (ROOT / "docs" / "architecture.md").read_text()
    ), "run: python docs/make_architecture.py"


def _imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_tests_mirror_the_package_and_share_only_fixtures():
    """Test modules sit beside the package's layout and import shared
    builders from tests/fixtures/ (or conftest), never from each other."""
    tests = ROOT / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir()}
    folders -= {"fixtures", "__pycache__"}
    packages = {
        p.name for p in (ROOT / "keras_adalink").iterdir() if p.is_dir()
    }
    assert folders <= packages, folders - packages
    offenders = []
    for path in tests.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for name in _imported_modules(tree):
            if name.startswith("tests.") and name.split(".")[-1].startswith(
                "test_"
            ):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders
