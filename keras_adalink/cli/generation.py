"""`--task generation`: instruction tuning a causal LM, or a seq2seq LM, with
AdaLink on a frozen KerasHub model.

Causal LMs see `[start] prompt response [end]`, the prompt and the response
tokenized separately by the preset's own tokenizer; the loss is on the
response tokens (and the end token) only, so the model learns to answer,
not to repeat prompts. Generation then starts from `[start] prompt`, as
KerasHub's `generate` packs it. Seq2seq LMs (T5, BART) take the prompt as
encoder text and the response as decoder text through the preset's own
`Seq2SeqLMPreprocessor`.
"""

import keras
import numpy as np


def is_seq2seq(lm):
    import keras_hub

    return isinstance(lm, keras_hub.models.Seq2SeqLM)


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def _token_ids(tokenizer, texts):
    out = tokenizer(list(texts))
    if hasattr(out, "to_list"):  # a ragged tf tensor
        out = out.to_list()
    return [list(map(int, row)) for row in out]


def causal_examples(preprocessor, prompts, responses, sequence_length):
    """`(x, y, sample_weight)` numpy arrays for next-token training.

    Row `i` is `[start] prompt_i response_i [end]`, cut to
    `sequence_length + 1` tokens and shifted by one for the targets;
    `sample_weight` is 1 exactly where the target is a response or end
    token.

    Example:
    >>> x, y, w = causal_examples(lm.preprocessor, ["2+2="], ["4"], 16)
    """
    if not preprocessor.built:
        preprocessor.build(None)
    packer = preprocessor.packer
    start = _as_list(packer.start_value) if preprocessor.add_start_token else []
    end = _as_list(packer.end_value) if preprocessor.add_end_token else []
    pad = int(packer.pad_value or 0)
    tokenizer = preprocessor.tokenizer
    firsts = _token_ids(tokenizer, prompts)
    seconds = _token_ids(tokenizer, responses)
    size, length = len(firsts), sequence_length
    token_ids = np.full((size, length), pad, "int32")
    targets = np.full((size, length), pad, "int32")
    mask = np.zeros((size, length), "int32")
    weights = np.zeros((size, length), "float32")
    for i, (prompt, response) in enumerate(zip(firsts, seconds)):
        prefix = start + prompt
        sequence = (prefix + response + end)[: length + 1]
        n = len(sequence) - 1
        token_ids[i, :n] = sequence[:-1]
        targets[i, :n] = sequence[1:]
        mask[i, :n] = 1
        weights[i, max(len(prefix) - 1, 0) : n] = 1.0
    x = {"token_ids": token_ids, "padding_mask": mask}
    return x, targets, weights


def seq2seq_examples(preprocessor, prompts, responses, sequence_length):
    """`(x, y, sample_weight)` from the preset's `Seq2SeqLMPreprocessor`."""
    parts = []
    for s in range(0, len(prompts), 1024):
        x, y, w = preprocessor(
            {
                "encoder_text": list(prompts[s : s + 1024]),
                "decoder_text": list(responses[s : s + 1024]),
            },
            encoder_sequence_length=sequence_length,
            decoder_sequence_length=sequence_length,
        )
        parts.append(
            keras.tree.map_structure(
                lambda t: np.asarray(keras.ops.convert_to_numpy(t)), (x, y, w)
            )
        )
    x = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    y = np.concatenate([p[1] for p in parts]).astype("int32")
    w = np.concatenate([p[2] for p in parts]).astype("float32")
    return x, y, w


def examples(lm, preprocessor, prompts, responses, sequence_length):
    make = seq2seq_examples if is_seq2seq(lm) else causal_examples
    return make(preprocessor, prompts, responses, sequence_length)


def token_loss(lm, x, y, weights, batch_size=16):
    """Mean cross-entropy over the weighted target tokens, and perplexity.

    Computed in float64 batch by batch (a `[rows, length, vocabulary]`
    array of logits for a whole file would not fit in memory).
    """
    total, count = 0.0, 0.0
    for s in range(0, len(y), batch_size):
        part = {k: v[s : s + batch_size] for k, v in x.items()}
        logits = np.asarray(
            keras.ops.convert_to_numpy(lm.predict_on_batch(part)), "float64"
        )
        top = logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
        picked = np.take_along_axis(logits, y[s : s + batch_size, :, None], -1)
        loss = log_z - picked[..., 0]
        total += float((loss * weights[s : s + batch_size]).sum())
        count += float(weights[s : s + batch_size].sum())
    mean = total / max(count, 1.0)
    return {"loss": mean, "perplexity": float(np.exp(mean))}


def _text(value):
    """A str from what `detokenize` or `generate` returns for one text."""
    while not isinstance(value, (str, bytes)):
        value = np.asarray(value).reshape(-1)[0]  # tensors, lists of one
    return value.decode() if isinstance(value, bytes) else str(value)


def _causal_answers(lm, preprocessor, prompts, max_length):
    """Generates to `max_length` and cuts each answer at its first end
    token. (KerasHub's own stop check also fires on the padding after a
    prompt where, as in GPT-2, the padding id is the end id: it would
    return every prompt unanswered.)"""
    inputs = preprocessor.generate_preprocess(
        list(prompts), sequence_length=max_length
    )
    out = lm.generate(inputs, stop_token_ids=None)
    ids = np.asarray(keras.ops.convert_to_numpy(out["token_ids"]))
    lengths = np.asarray(keras.ops.convert_to_numpy(inputs["padding_mask"]))
    tokenizer = preprocessor.tokenizer
    stops = set(_stop_ids(tokenizer))
    answers = []
    for row, prompt_length in zip(ids, lengths.sum(-1)):
        new = [int(t) for t in row[int(prompt_length) :]]
        for i, token in enumerate(new):
            if token in stops:
                new = new[:i]
                break
        answers.append(_text(tokenizer.detokenize([new])) if new else "")
    return answers


def _stop_ids(tokenizer):
    """The end ids KerasHub's `generate` stops at (Llama 3 has two)."""
    return [
        getattr(tokenizer, name)
        for name in ("end_token_id", "end_token2_id")
        if getattr(tokenizer, name, None) is not None
    ]


def _seq2seq_answers(lm, preprocessor, prompts, max_length):
    """What `lm.generate(prompts, max_length)` returns with `preprocessor`
    attached, done outside the LM: tokenize, generate to an end id,
    detokenize the decoder's tokens."""
    inputs = preprocessor.generate_preprocess(
        list(prompts), sequence_length=max_length
    )
    out = lm.generate(inputs, stop_token_ids=_stop_ids(preprocessor.tokenizer))
    return [_text(t) for t in preprocessor.generate_postprocess(out)]


def generate(lm, preprocessor, prompts, max_length, sampler="greedy"):
    """The LM's answer to each prompt, as text (the prompt left out).

    `max_length`: tokens in all (causal LMs: prompt included, as
    KerasHub's `generate` counts them; seq2seq: the decoder's).
    """
    lm.compile(sampler=sampler)
    answers = []
    for s in range(0, len(prompts), 32):
        batch = list(prompts[s : s + 32])
        if is_seq2seq(lm):
            answers.extend(
                _seq2seq_answers(lm, preprocessor, batch, max_length)
            )
        else:
            answers.extend(_causal_answers(lm, preprocessor, batch, max_length))
    return answers


def evaluate(lm, preprocessor, prompts, responses, run, max_length=None):
    """Loss and perplexity on the responses, and exact match of greedy
    answers (stripped of surrounding spaces)."""
    length = run["sequence_length"]
    x, y, w = examples(lm, preprocessor, prompts, responses, length)
    result = token_loss(lm, x, y, w)
    answers = generate(lm, preprocessor, prompts, max_length or length)
    matches = [a.strip() == r.strip() for a, r in zip(answers, responses)]
    result["exact_match"] = float(np.mean(matches))
    return result
