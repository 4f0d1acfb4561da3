import keras
import keras_hub
import numpy as np
import pytest

VOCAB = 50
SEQ = 12
_COMMON = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)

# Tiny randomly initialised backbones, one per supported family.
BACKBONES = {
    "bert": lambda: keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, max_sequence_length=SEQ, **_COMMON
    ),
    "distil_bert": lambda: keras_hub.models.DistilBertBackbone(
        vocabulary_size=VOCAB, max_sequence_length=SEQ, **_COMMON
    ),
    "roberta": lambda: keras_hub.models.RobertaBackbone(
        vocabulary_size=VOCAB, max_sequence_length=SEQ, **_COMMON
    ),
    "xlm_roberta": lambda: keras_hub.models.XLMRobertaBackbone(
        vocabulary_size=VOCAB, max_sequence_length=SEQ, **_COMMON
    ),
    "albert": lambda: keras_hub.models.AlbertBackbone(
        vocabulary_size=VOCAB,
        embedding_dim=8,
        num_groups=1,
        num_inner_repetitions=1,
        max_sequence_length=SEQ,
        **_COMMON,
    ),
    "electra": lambda: keras_hub.models.ElectraBackbone(
        vocab_size=VOCAB, embedding_dim=8, max_sequence_length=SEQ, **_COMMON
    ),
    "deberta_v3": lambda: keras_hub.models.DebertaV3Backbone(
        vocabulary_size=VOCAB, max_sequence_length=SEQ, bucket_size=4, **_COMMON
    ),
}


def backbone_inputs(backbone, batch=3, seq=SEQ, seed=0, num_tasks=None):
    """Random valid inputs for a tiny backbone (padding at the end)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype("int32")
    x = {}
    for name in backbone.input:
        if name == "token_ids":
            x[name] = (rng.integers(1, VOCAB, size=(batch, seq)) * mask).astype(
                "int32"
            )
        elif name == "padding_mask":
            x[name] = mask
        elif name == "task_id":
            x[name] = rng.integers(0, num_tasks, size=(batch,)).astype("int32")
        else:
            x[name] = np.zeros((batch, seq), "int32")
    return x


def to_numpy(tree):
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


def randomize_adapter(model, seed=1, scale=0.5):
    """Nonzero adapter weights, so tests see the adapter actually act."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_weights:
        if "adalink" in v.path:
            v.assign(rng.normal(0, scale, size=v.shape).astype("float32"))


def randomize_router_module(router, index, seed=0, scale=0.5):
    """Only module `index` of a router acts: its W_down random, the others'
    zero (W_up random for all)."""
    rng = np.random.default_rng(seed)
    down = np.zeros(router.adalink_down.shape, "float32")
    down[index] = rng.normal(0, scale, down.shape[1:])
    router.adalink_down.assign(down)
    router.adalink_up.assign(
        rng.normal(0, scale, router.adalink_up.shape).astype("float32")
    )


def router_module(router, index):
    """Module `index` of a router (Task/Modality) as a stand-alone AdaLink."""
    import keras_adalink

    single = keras_adalink.AdaLink(rank=router.rank, dropout=0.0)
    single.build((None, None, router.adalink_down.shape[-2]))
    single.adalink_down.assign(router.adalink_down[index])
    single.adalink_up.assign(router.adalink_up[index])
    return single


@pytest.fixture(params=sorted(BACKBONES))
def family(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
