"""An adapter saved on one backend loads on the others with equal outputs.

Each backend's test run saves here and loads on the next backend in a
subprocess (jax -> tensorflow -> torch -> jax), so a CI run over all three
backends has every backend save and load once. The file is backend-free
(safetensors of numpy arrays), so the cycle covers what the six
directions would, at half the cost.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_adalink
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.encoders import backbone_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("jax", "tensorflow", "torch")

_BUILD = textwrap.dedent(
    """
    import keras, keras_hub, keras_adalink
    from keras_adalink.heads import mean_pooled_classifier

    def build():
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=12)
        return backbone, mean_pooled_classifier(
            keras_adalink.adapt(backbone, rank=3, num_tasks=2), 3)
    """
)

_LOAD = _BUILD + textwrap.dedent(
    """
    import sys, numpy as np
    folder = sys.argv[1]
    backbone, model = build()
    backbone.load_weights(folder + "/backbone.weights.h5")
    keras_adalink.load_adapter(model, folder + "/adapter.safetensors")
    data = np.load(folder + "/io.npz")
    x = {k[2:]: data[k] for k in data.files if k.startswith("x_")}
    got = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(got, data["y"], rtol=1e-5, atol=1e-5)
    print("loaded on", keras.backend.backend(), "max diff",
          float(np.abs(got - data["y"]).max()))
    """
)


@pytest.mark.slow
def test_adapter_loads_on_the_other_backends(tmp_path):
    namespace = {}
    exec(_BUILD, namespace)
    backbone, model = namespace["build"]()
    randomize_adapter(model)
    head = model.get_layer("head")
    head.kernel.assign(np.linspace(-1, 1, 48).reshape(16, 3).astype("f4"))
    backbone.save_weights(str(tmp_path / "backbone.weights.h5"))
    keras_adalink.save_adapter(model, tmp_path / "adapter.safetensors")
    x = backbone_inputs(model, num_tasks=2)
    y = keras.ops.convert_to_numpy(model(x))
    np.savez(tmp_path / "io.npz", y=y, **{f"x_{k}": v for k, v in x.items()})
    (tmp_path / "load.py").write_text(_LOAD)
    # Each backend's run loads on the next one (jax -> tensorflow -> torch
    # -> jax): over the three CI runs every backend saves and loads once.
    here = keras.backend.backend()
    for other in [BACKENDS[(BACKENDS.index(here) + 1) % len(BACKENDS)]]:
        result = subprocess.run(
            [sys.executable, str(tmp_path / "load.py"), str(tmp_path)],
            env={**os.environ, "KERAS_BACKEND": other, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, (other, result.stderr[-3000:])
        assert f"loaded on {other}" in result.stdout
