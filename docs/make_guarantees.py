"""Writes the "backends" column of docs/guarantees.md from the tests.

Each row names the tests that back it; this reads, for each test, the
markers that decide where `make test` runs it: `once` (the tensorflow pass
only), `end_to_end` (the jax pass only) and `skipif` on
`keras.backend.backend()`, on the test or its module. A row's column is
the backends every one of its tests runs on (a whole file counts where any
of its tests runs). Checks inside a test body (a step done on some
backends only) are not read. `tests/test_docs.py`
fails when the committed page differs from what this script writes.

    python docs/make_guarantees.py          # rewrite
    python docs/make_guarantees.py --check  # compare
"""

import ast
import fnmatch
import functools
import pathlib
import re
import sys

import generated_page

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "guarantees.md"
TESTS = ROOT / "tests"
ALL = ("jax", "tensorflow", "torch")


def _read(decorators, source):
    """`(markers, backends its skipifs allow)` of a list of decorators."""
    markers, allowed = set(), set(ALL)
    for node in decorators:
        text = ast.get_source_segment(source, node) or ""
        markers |= set(re.findall(r"\bmark\.(once|end_to_end)\b", text))
        for op, names in re.findall(
            r"backend\(\)\s*(==|!=|not in|in)\s*(\([^)]*\)|\"\w+\")", text
        ):
            named = set(re.findall(r"\"(\w+)\"", names))
            allowed -= named if op in ("==", "in") else set(ALL) - named
    return markers, allowed


def _passes(markers, allowed):
    """Where the Makefile's `test` target runs a test: the jax pass takes
    `not once`, the tensorflow pass `once or not end_to_end`, the torch
    pass `not once and not end_to_end`."""
    once, end_to_end = "once" in markers, "end_to_end" in markers
    runs = {
        "jax": not once,
        "tensorflow": once or not end_to_end,
        "torch": not once and not end_to_end,
    }
    return {b for b in ALL if runs[b] and b in allowed}


@functools.cache
def _module(path):
    """`({test name: backends}, module-level backends)` of one file."""
    source = path.read_text()
    tree = ast.parse(source)
    module = (set(), set(ALL))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "pytestmark" for t in node.targets
        ):
            value = node.value
            items = value.elts if isinstance(value, ast.List) else [value]
            module = _read(items, source)
    tests = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            markers, allowed = _read(node.decorator_list, source)
            tests[node.name] = _passes(markers | module[0], allowed & module[1])
    return tests, _passes(*module)


def _files():
    return sorted(TESTS.rglob("test_*.py"))


def backends_of(reference):
    """Backends of one reference: `file.py`, `file.py::name` (a `*` glob
    allowed) or a bare test name (looked up in every test file)."""
    file, has_name, name = reference.partition("::")
    if not has_name and not file.endswith(".py"):
        file, name = "", file
    paths = [
        p
        for p in _files()
        if not file
        or p.name == file
        or fnmatch.fnmatchcase(p.relative_to(TESTS).as_posix(), file)
    ]
    found = set()
    for path in paths:
        tests, module = _module(path)
        if not name:
            found |= set().union(*tests.values()) if tests else module
            continue
        for test, where in tests.items():
            # A name stands for its parametrized or suffixed variants too
            # (`test_standard_checks` for `test_standard_checks_with_ids`).
            if fnmatch.fnmatchcase(test, name) or test.startswith(name + "_"):
                found |= where
    if not paths or (name and not found and not _named(paths, name)):
        raise ValueError(
            f"docs/guarantees.md names an unknown test {reference}"
        )
    return found


def _named(paths, name):
    return any(
        fnmatch.fnmatchcase(t, name) or t.startswith(name + "_")
        for p in paths
        for t in _module(p)[0]
    )


def column(cell):
    """The backends cell for a row whose test cell is `cell`."""
    found = set(ALL)
    for reference in re.findall(r"`([^`]*test[^`]*)`", cell):
        found &= backends_of(reference.removeprefix("tests/"))
    if found == set(ALL):
        return "all three"
    return ", ".join(b for b in ALL if b in found) or "none"


def render():
    lines, has_column = [], False
    for line in PAGE.read_text().splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            header = cells[0].strip() in ("guarantee", "input")
            if header:
                has_column = cells[-1].strip() == "backends"
            if has_column:
                cells = cells[:-1]
            if header:
                cells.append(" backends ")
            elif set("".join(cells)) <= {"-", " "}:
                cells.append("---")
            else:
                cells.append(f" {column(cells[-1])} ")
            line = "|" + "|".join(cells) + "|"
        lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(generated_page.main(PAGE, render, __doc__.splitlines()[0]))
