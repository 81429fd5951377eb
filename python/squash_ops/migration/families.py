"""Where the norms of each supported Hugging Face architecture feed linear layers.

A ``NormSite`` names one norm, the ``nn.Linear`` layers that read its output (their weights absorb
the migration factor) and, in post-norm blocks, the block outputs that add the norm's output back
as a residual (they must scale it back). Everything is a module path (``model.get_submodule``), so
the description stays valid when the modules at those paths are replaced.

Supported ``config.model_type``:

* ``llama`` (pre-norm RMSNorm): ``input_layernorm -> q,k,v``; ``post_attention_layernorm ->
  gate,up``; the final ``norm -> lm_head`` when the head is not tied to the input embeddings.
* ``opt`` (pre-norm LayerNorm, ``do_layer_norm_before=True``): ``self_attn_layer_norm -> q,k,v``;
  ``final_layer_norm -> fc1``; the decoder's final norm ``-> project_out`` or an untied ``lm_head``.
* ``bert``, ``roberta`` (post-norm LayerNorm): the embeddings' norm and every block's output norm
  feed the next block's ``q,k,v`` and its attention residual; every attention-output norm feeds
  ``intermediate.dense`` and the FFN residual. The last block's output norm is left alone: its
  output leaves the encoder (``last_hidden_state``, pooler, task heads).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "llama", "opt")


class UnsupportedModelError(ValueError):
    """The model's architecture (or one of its options) has no norm-site description here."""


@dataclass(frozen=True)
class NormSite:
    norm: str
    consumers: tuple[str, ...]
    residual_outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedNorm:
    norm: str
    reason: str


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedModelError(
            f"gamma migration needs a Hugging Face PreTrainedModel (with .config.model_type), got "
            f"{type(model).__name__}"
        )
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"gamma migration does not support model_type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def _untied_head(model: nn.Module, embedding: nn.Embedding) -> nn.Linear | None:
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear) and head.weight.data_ptr() != embedding.weight.data_ptr():
        return head
    return None


def _bert_sites(model, base):
    if model.config.add_cross_attention:
        raise UnsupportedModelError(
            f"gamma migration of {model.config.model_type} with cross-attention (add_cross_attention=True) "
            "is not supported: the cross-attention block would need its own residual scaling"
        )
    layers = list(base.encoder.layer)
    if not layers:
        return [], []

    def qkv(layer):
        a = layer.attention.self
        return (a.query, a.key, a.value)

    triples = [(base.embeddings.LayerNorm, qkv(layers[0]), (layers[0].attention.output,))]
    for i, layer in enumerate(layers):
        triples.append((layer.attention.output.LayerNorm, (layer.intermediate.dense,), (layer.output,)))
        if i + 1 < len(layers):
            nxt = layers[i + 1]
            triples.append((layer.output.LayerNorm, qkv(nxt), (nxt.attention.output,)))
    skipped = [(layers[-1].output.LayerNorm,
                "output leaves the encoder (last_hidden_state, pooler, heads): gamma stays in the norm")]
    return triples, skipped


def _llama_sites(model, base):
    triples = []
    for layer in base.layers:
        a, mlp = layer.self_attn, layer.mlp
        triples.append((layer.input_layernorm, (a.q_proj, a.k_proj, a.v_proj), ()))
        triples.append((layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj), ()))
    head = _untied_head(model, base.embed_tokens)
    if head is not None:
        return triples + [(base.norm, (head,), ())], []
    return triples, [(base.norm, "no untied lm_head after it (a tied head shares the input embeddings)")]


def _opt_sites(model, base):
    if not model.config.do_layer_norm_before:
        raise UnsupportedModelError(
            "gamma migration of post-norm OPT (do_layer_norm_before=False, e.g. opt-350m) is not supported"
        )
    dec = base.decoder
    triples = []
    for layer in dec.layers:
        a = layer.self_attn
        triples.append((layer.self_attn_layer_norm, (a.q_proj, a.k_proj, a.v_proj), ()))
        triples.append((layer.final_layer_norm, (layer.fc1,), ()))
    skipped = []
    if dec.final_layer_norm is not None:
        after = dec.project_out if dec.project_out is not None else _untied_head(model, dec.embed_tokens)
        if after is not None:
            triples.append((dec.final_layer_norm, (after,), ()))
        else:
            skipped.append((dec.final_layer_norm,
                            "no untied lm_head after it (a tied head shares the input embeddings)"))
    return triples, skipped


_FAMILIES = {"bert": _bert_sites, "roberta": _bert_sites, "llama": _llama_sites, "opt": _opt_sites}
_BLOCKS = {"bert": "encoder.layer", "roberta": "encoder.layer", "llama": "layers", "opt": "decoder.layers"}


def norm_sites(model: nn.Module) -> tuple[list[NormSite], list[SkippedNorm]]:
    """The norm -> linear sites of ``model`` (a supported HF model, base or with a task head),
    and the norms deliberately left out, with why. Raises ``UnsupportedModelError`` otherwise."""
    model_type = _model_type(model)
    base = getattr(model, "base_model", model)
    triples, skipped = _FAMILIES[model_type](model, base)
    path = {id(m): name for name, m in model.named_modules()}
    sites = [
        NormSite(path[id(norm)], tuple(path[id(c)] for c in consumers), tuple(path[id(r)] for r in residuals))
        for norm, consumers, residuals in triples
    ]
    return sites, [SkippedNorm(path[id(norm)], reason) for norm, reason in skipped]


def block_linears(model: nn.Module) -> list[str]:
    """Paths of every ``nn.Linear`` inside the transformer blocks (not embeddings, pooler or heads)."""
    model_type = _model_type(model)
    base = getattr(model, "base_model", model)
    blocks = base.get_submodule(_BLOCKS[model_type])
    inside = {id(m) for m in blocks.modules()}
    return [name for name, m in model.named_modules() if id(m) in inside and isinstance(m, nn.Linear)]
