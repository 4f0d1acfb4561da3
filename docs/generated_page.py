"""Writes a generated docs page, or checks the committed one against it."""

import argparse
import difflib
import sys


def main(page, render, description, after_write=None):
    """`--check`: exit 1 with a diff where `page` differs from `render()`;
    otherwise write it (and run `after_write`). Returns the exit status."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if not args.check:
        page.write_text(text)
        if after_write is not None:
            after_write()
        return 0
    old = page.read_text() if page.exists() else ""
    if old == text:
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            old.splitlines(True), text.splitlines(True), "committed", "code"
        )
    )
    return 1
