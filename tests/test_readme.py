import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(path):
    with open(path) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.end_to_end
@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's first-screen example runs as written."""
    monkeypatch.chdir(tmp_path)
    block = _python_blocks(os.path.join(ROOT, "README.md"))[0]
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "sentiment.safetensors").stat().st_size < 50_000


def test_readme_first_screen_has_the_two_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        first_screen = "\n".join(f.read().splitlines()[:20])
    assert re.search(r"^make demo\b", first_screen, re.M)
    assert re.search(r"^make test\b", first_screen, re.M)
