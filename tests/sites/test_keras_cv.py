"""KerasCV backbones (the `cv` extra): adapted like KerasHub's.

Skipped, saying so, only where keras-cv is not installed; `make setup`
installs the extra, so CI runs these.
"""

import pathlib

import keras
import numpy as np
import pytest

import keras_adalink
from keras_adalink.sites import find_insertion_sites
from tests.fixtures.checks import check_round_trips
from tests.fixtures.checks import randomize_adapter
from tests.fixtures.checks import randomize_router_module
from tests.fixtures.checks import to_numpy

keras_cv = pytest.importorskip(
    "keras_cv", reason='keras-cv absent: pip install "keras-adalink[cv]"'
)

# Tiny randomly initialised backbones: (build, input shape, first block).
BACKBONES = {
    "ViTDetBackbone": (
        lambda: keras_cv.models.ViTDetBackbone(
            include_rescaling=False,
            input_shape=(32, 32, 3),
            patch_size=8,
            embed_dim=16,
            depth=2,
            mlp_dim=32,
            num_heads=2,
            out_chans=8,
            use_rel_pos=True,
            window_size=2,
            global_attention_indices=[1],
        ),
        (2, 32, 32, 3),
        "WindowedTransformerEncoder",
    ),
    "VideoSwinBackbone": (
        lambda: keras_cv.models.VideoSwinBackbone(
            include_rescaling=False,
            input_shape=(4, 32, 32, 3),
            embed_dim=8,
            patch_size=[2, 4, 4],
            window_size=[2, 4, 4],
            depths=[1, 1],
            num_heads=[1, 2],
            drop_path_rate=0.0,
        ),
        (1, 4, 32, 32, 3),
        "VideoSwinBasicLayer",
    ),
    "MiTBackbone": (
        lambda: keras_cv.models.MiTBackbone(
            include_rescaling=False,
            depths=[1, 1, 1, 1],
            input_shape=(32, 32, 3),
            embedding_dims=[8, 16, 40, 64],
        ),
        (2, 32, 32, 3),
        "HierarchicalTransformerEncoder",
    ),
}


def _flat(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(to_numpy(outputs))]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_keras_cv_backbone_adapts(name, tmp_path):
    """Before the first block (after patches and positions): identity at
    init, then the adapter acts; only it trains; both round trips."""
    build, shape, block = BACKBONES[name]
    backbone = build()
    (site,) = find_insertion_sites(backbone, "block_input")
    assert type(site.layer).__name__ == block
    x = np.random.default_rng(0).uniform(size=shape).astype("float32")
    before = _flat(backbone(x))
    adapted = keras_adalink.adapt(backbone, rank=2)
    assert adapted.insertion == "block_input"
    for want, have in zip(before, _flat(adapted(x))):
        np.testing.assert_allclose(have, want, atol=1e-5)
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    assert not backbone.trainable_weights
    randomize_adapter(adapted)
    after = _flat(adapted(x))
    assert not np.allclose(after[0], before[0], atol=1e-4)
    fresh = keras_adalink.adapt(backbone, rank=2)
    check_round_trips(adapted, fresh, x, tmp_path)


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="KerasCV's CLIP does not build on torch (a '.' in a layer name)",
)
def test_keras_cv_clip_one_module_in_each_tower(tmp_path):
    """Towers of different widths (vision 64, text 16): a module each,
    replayed inside the subclassed towers; identity at init, each module
    moves its own tower only, both round trips."""
    clip = keras_cv.models.CLIP(
        embed_dim=16,
        image_resolution=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=16,
        context_length=8,
        vocab_size=100,
        transformer_width=16,
        transformer_heads=2,
        transformer_layers=1,
    )
    rng = np.random.default_rng(0)
    mask = np.ones((2, 8), "int32")
    mask[1, 5:] = 0
    x = {
        "images": rng.uniform(size=(2, 32, 32, 3)).astype("float32"),
        "token_ids": rng.integers(1, 99, size=(2, 8)).astype("int32"),
        "padding_mask": mask,
    }

    def towers(model):
        image = model.get_layer("image_encoder_adapted")([x["images"]])
        text = model.get_layer("text_encoder_adapted")(
            [x["token_ids"], x["padding_mask"]]
        )
        return np.asarray(image), np.asarray(text)

    own = (
        np.asarray(clip.image_encoder(x["images"])),
        np.asarray(clip.text_encoder(x["token_ids"], attention_mask=mask)),
    )
    before = _flat(clip(x))
    adapted = keras_adalink.adapt(clip, rank=2)
    assert adapted.adapter.modalities == ["image", "text"]
    assert adapted.adapter.adalink_down.shape == (2, 64, 2)
    for want, have in zip(before, _flat(adapted(x))):
        np.testing.assert_allclose(have, want, atol=1e-5)
    for want, have in zip(own, towers(adapted)):  # the replays = the towers
        np.testing.assert_allclose(have, want, atol=1e-5)
    assert [v.path for v in adapted.trainable_weights] == [
        "adalink/adalink_down",
        "adalink/adalink_up",
    ]
    for index, moved in [(0, 0), (1, 1)]:  # image module, then text module
        randomize_router_module(adapted.adapter, index)
        got = towers(adapted)
        assert not np.allclose(got[moved], own[moved], atol=1e-4)
        np.testing.assert_allclose(got[1 - moved], own[1 - moved], atol=1e-5)
    randomize_adapter(adapted)
    check_round_trips(adapted, keras_adalink.adapt(clip, rank=2), x, tmp_path)
    with pytest.raises(ValueError, match="widths \\[16, 64\\]"):
        keras_adalink.adapt(clip, rank=2, num_tasks=2)


def test_coverage_page_lists_these_sites():
    page = (pathlib.Path(__file__).parents[2] / "docs/coverage.md").read_text()
    for name, (_, _, block) in BACKBONES.items():
        assert f"`keras_cv.models.{name}` | `{block}` |" in page, name
