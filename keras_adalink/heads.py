"""Task heads for frozen (or adapted) encoders."""

import keras


def mean_pooled_classifier(backbone, num_outputs, name=None):
    """`backbone -> masked mean over tokens -> Dense(num_outputs)` model.

    Sentence-embedding checkpoints such as all-MiniLM-L6-v2 were trained
    with mean pooling; their [CLS] pooler (what KerasHub's
    `BertTextClassifier` reads) was never tuned and stays near the majority
    class when frozen. The head is a `Dense` named `"head"`, so adapter
    files find it by path. Outputs are logits (or raw values for
    regression).

    Args:
        backbone: a KerasHub BERT-family backbone, adapted or not, with a
            `padding_mask` input.
        num_outputs: int. Classes (logits) or regression targets.
        name: optional model name.

    Example:
    >>> model = mean_pooled_classifier(keras_adalink.adapt(backbone), 2)
    """
    inputs = backbone.input
    tokens = backbone(inputs)
    if isinstance(tokens, dict):
        tokens = tokens["sequence_output"]
    mask = keras.ops.cast(inputs["padding_mask"], "bool")
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(
        tokens, mask=mask
    )
    outputs = keras.layers.Dense(num_outputs, name="head")(pooled)
    return keras.Model(inputs, outputs, name=name)
