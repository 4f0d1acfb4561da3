"""Tiny randomly initialised KerasHub presets saved to folders, for driving
`keras-adalink --backbone FOLDER` as a user with a downloaded preset
would (no real weights exist offline for these families)."""

import keras_hub
import numpy as np

WORDS = ["good", "bad", "film", "plot", "yes", "no", "red", "blue", "is"]
_TINY = dict(num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32)


def _byte_pair_vocabulary(specials):
    """A byte-level BPE vocabulary with each of WORDS (with and without
    its leading space) as one token."""
    vocabulary = {token: i for i, token in enumerate(specials)}
    merges = []
    for word in WORDS:
        for prefix in ("", "Ġ"):
            pieces = [prefix] + list(word) if prefix else list(word)
            for piece in pieces:
                vocabulary.setdefault(piece, len(vocabulary))
            merged = pieces[0]
            for piece in pieces[1:]:
                merge = f"{merged} {piece}"
                if merge not in merges:
                    merges.append(merge)
                merged += piece
                vocabulary.setdefault(merged, len(vocabulary))
    return vocabulary, merges


def _expressive(backbone):
    """Token embeddings at unit scale, not KerasHub's 0.02: with a tied
    output and a final layer norm, a tiny random LM could otherwise not
    put more than ~0.3 of logit on any token, so no adapter could teach
    it an answer."""
    table = backbone.token_embedding.embeddings
    rng = np.random.default_rng(0)
    table.assign(rng.normal(size=table.shape).astype("float32"))
    return backbone


def bert(folder):
    """A BERT text classifier preset (WordPiece vocabulary of WORDS)."""
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), max_sequence_length=32, **_TINY
    )
    backbone.save_to_preset(folder)
    keras_hub.models.BertTextClassifierPreprocessor(tokenizer).save_to_preset(
        folder
    )
    return folder


def roberta(folder):
    """A RoBERTa text classifier preset (byte-level BPE of WORDS)."""
    vocabulary, merges = _byte_pair_vocabulary(
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    tokenizer = keras_hub.models.RobertaTokenizer(
        vocabulary=vocabulary, merges=merges
    )
    backbone = keras_hub.models.RobertaBackbone(
        vocabulary_size=len(vocabulary), max_sequence_length=40, **_TINY
    )
    backbone.save_to_preset(folder)
    keras_hub.models.RobertaTextClassifierPreprocessor(
        tokenizer
    ).save_to_preset(folder)
    return folder


def gpt2(folder):
    """A GPT-2 causal LM preset (byte-level BPE of WORDS)."""
    vocabulary, merges = _byte_pair_vocabulary(["<|endoftext|>"])
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=vocabulary, merges=merges
    )
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocabulary), max_sequence_length=32, **_TINY
    )
    keras_hub.models.GPT2CausalLM(
        _expressive(backbone),
        keras_hub.models.GPT2CausalLMPreprocessor(tokenizer),
    ).save_to_preset(folder)
    return folder


def bart(folder):
    """A BART seq2seq LM preset (byte-level BPE of WORDS)."""
    vocabulary, merges = _byte_pair_vocabulary(
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    tokenizer = keras_hub.models.BartTokenizer(
        vocabulary=vocabulary, merges=merges
    )
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=len(vocabulary), max_sequence_length=32, **_TINY
    )
    keras_hub.models.BartSeq2SeqLM(
        _expressive(backbone),
        keras_hub.models.BartSeq2SeqLMPreprocessor(tokenizer),
    ).save_to_preset(folder)
    return folder
