"""transformers integration: squash attention as an attention implementation.

Importing this package registers the name ``"squash"`` (``fallback="error"``) with transformers'
``AttentionInterface`` and ``AttentionMaskInterface``; then::

    import squash_ops.hf
    model.set_attn_implementation("squash")

``register(name, fallback="sdpa")`` adds a variant that runs what the ops cannot express (sliding
window, custom masks, softcapping, ...) with SDPA instead of raising. See ``attention.py`` for the
routing of each call to ``attention`` / ``attention_varlen`` / ``attention_decode``.
``PackedEncoder(model)`` runs a BERT-family encoder on its real tokens only (``packed.py``).
"""

from .attention import FALLBACKS, LengthsMask, PaddedMask, SquashMask, register
from .decode import GreedyDecoder
from .packed import PackedEncoder

__all__ = ["register", "GreedyDecoder", "PackedEncoder", "FALLBACKS", "SquashMask", "LengthsMask", "PaddedMask", "ATTN_IMPLEMENTATION"]

ATTN_IMPLEMENTATION = register("squash")
