"""A JSON-lines run log: each finished run is one line, keyed, appended.

The long benchmarks (evidence.py, multimodal.py) record every run as it
finishes, skip runs already logged, and rebuild their tables from the log,
so an interrupted session loses at most the run in flight.
"""

import json
import os


class RunLog:
    def __init__(self, path):
        self.path = path

    def rows(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def keys(self):
        return {row["key"] for row in self.rows()}

    def row(self, key):
        """The logged row of `key`, without its key (to log it again)."""
        (row,) = [r for r in self.rows() if r["key"] == key]
        return {k: v for k, v in row.items() if k != "key"}

    def record(self, key, row):
        row = {"key": key, **row}
        print(json.dumps(row), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
