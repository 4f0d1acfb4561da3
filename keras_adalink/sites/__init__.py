"""Where AdaLink goes in a backbone: sites found by a rule, and exceptions.

`rule.py` reads the sites off any backbone's functional graph;
`families.py` holds the one table of families that need more (sites of
their own, text-only, refused, layout rules), each with its reason;
`site.py` the `Site` record. docs/coverage.md is generated from these.
"""

from keras_adalink.sites.families import FAMILIES
from keras_adalink.sites.families import Family
from keras_adalink.sites.families import lookup
from keras_adalink.sites.families import named
from keras_adalink.sites.rule import readers
from keras_adalink.sites.rule import rule_sites
from keras_adalink.sites.rule import two_towers
from keras_adalink.sites.site import Site

INSERTIONS = ("token_embedding", "block_input")

# Encoders whose embeddings join the sequence after the token lookup, which
# the rule (reading the text path) would bypass.
_ENCODERS = ("vision_encoder", "audio_encoder")


def _sites_function(backbone, insertion):
    """`sites(backbone)` for `insertion`, or the family's refusal."""
    name = type(backbone).__name__
    entry = lookup(type(backbone))
    if entry is not None and entry.refused:
        raise ValueError(
            f"keras_adalink does not adapt {name}: it is {entry.why}. "
            "docs/coverage.md lists every KerasHub backbone."
        )
    if entry is not None and entry.has_sites:
        return getattr(entry, insertion)
    if two_towers(backbone) is None:
        towers = [e for e in _ENCODERS if getattr(backbone, e, None)]
        if towers:
            why = f": {entry.why}" if entry is not None and entry.why else ""
            raise ValueError(
                f"keras_adalink adapts {name} text-only: this one has a "
                f"{' and '.join(towers)} whose embeddings join the sequence "
                "after the token lookup, and per-modality sites for it are "
                f"not mapped{why}. Build it without them to adapt the text "
                "path."
            )
    return lambda b: rule_sites(b, insertion)


def find_insertion_sites(backbone, insertion):
    """The list of `Site`s for `insertion` in `backbone`."""
    if insertion not in INSERTIONS:
        raise ValueError(
            f"`insertion` must be one of {INSERTIONS}. "
            f"Received: insertion={insertion!r}"
        )
    return _sites_function(backbone, insertion)(backbone)


def default_insertion(backbone):
    """`"token_embedding"` where the model has one, else `"block_input"`.

    On text models the token-embedding point measured better than the block
    input and can be folded into the vocabulary table (docs/concepts.md).
    """
    sites = _sites_function(backbone, "token_embedding")
    try:
        sites(backbone)
    except ValueError:
        return "block_input"
    return "token_embedding"


def default_modalities(backbone, insertion=None):
    """The modalities of `backbone`'s sites, when there is more than one.

    `["image", "text"]` for PaliGemma or Gemma3 with a vision encoder: the
    paper adapts each modality with its own module, so `adapt()` makes a
    `ModalityRouter` over them by default. `None` for one-modality models
    (optional sites, such as a decoder stack, do not count).
    """
    insertion = insertion or default_insertion(backbone)
    found = []
    for site in find_insertion_sites(backbone, insertion):
        if site.optional:
            continue
        for modality in site.streams or [site.modality]:
            if modality and modality not in found:
                found.append(modality)
    return found if len(found) > 1 else None


__all__ = [
    "FAMILIES",
    "INSERTIONS",
    "Family",
    "Site",
    "default_insertion",
    "default_modalities",
    "find_insertion_sites",
    "lookup",
    "named",
    "readers",
    "two_towers",
]
