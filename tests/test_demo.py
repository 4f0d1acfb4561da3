import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.end_to_end
@pytest.mark.slow
def test_demo_runs_end_to_end_on_pretrained_minilm():
    """The README's main job, shrunk: real MiniLM, real data, real reload."""
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "sentiment_demo.py"),
            "--train-examples=64",
            "--test-examples=64",
            "--epochs=1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "head only (linear probe)" in out
    assert "AdaLink rank" in out
    assert "predictions identical = True" in out
    assert "backbone parameters (frozen): 22,713,216" in out
    # Quiet start: TensorFlow's native start-up lines are not shown.
    for noise in ("absl::InitializeLog", "cuInit", "cudart_stub"):
        assert noise not in result.stderr, result.stderr[:2000]
