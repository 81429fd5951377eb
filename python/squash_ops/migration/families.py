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

Channel smoothing (``smoothing.py``) also needs the linears no norm feeds: ``value_sites`` (the
value projection, whose output rows reach the attention-output projection's input columns through
attention, which is linear in V) and ``ffn_down_paths`` (the FFN down-projection, after the
activation function).
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


@dataclass(frozen=True)
class ValueSite:
    """``value``'s output channel ``kv * head_dim + d`` is the attention output's channel
    ``h * head_dim + d`` for every query head ``h`` of kv head ``kv`` (``heads // kv_heads`` of
    them: grouped-query attention) and ``output`` reads those channels."""

    value: str
    output: str
    heads: int
    kv_heads: int
    head_dim: int

    def output_channel_source(self) -> "torch.Tensor":
        """int64 [heads * head_dim]: the value channel behind each input channel of ``output``."""
        import torch

        c = torch.arange(self.heads * self.head_dim)
        group = self.heads // self.kv_heads
        return (c // self.head_dim // group) * self.head_dim + c % self.head_dim


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


def _attention(model_type: str, layer: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(the attention module holding the head counts, value projection, output projection)."""
    if model_type in ("bert", "roberta"):
        return layer.attention.self, layer.attention.self.value, layer.attention.output.dense
    if model_type == "opt":
        return layer.self_attn, layer.self_attn.v_proj, layer.self_attn.out_proj
    return layer.self_attn, layer.self_attn.v_proj, layer.self_attn.o_proj


def _ffn_down(model_type: str, layer: nn.Module) -> nn.Module:
    if model_type in ("bert", "roberta"):
        return layer.output.dense
    return layer.fc2 if model_type == "opt" else layer.mlp.down_proj


def value_sites(model: nn.Module) -> list[ValueSite]:
    """Every block's value -> attention-output projection pair (see ``ValueSite``)."""
    model_type = _model_type(model)
    base = getattr(model, "base_model", model)
    path = {id(m): name for name, m in model.named_modules()}
    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    sites = []
    for layer in base.get_submodule(_BLOCKS[model_type]):
        _, value, output = _attention(model_type, layer)
        head_dim = value.out_features // kv_heads
        if value.out_features != kv_heads * head_dim or output.in_features != heads * head_dim:
            raise UnsupportedModelError(
                f"{path[id(value)]}: {value.out_features} value channels and {output.in_features} output "
                f"inputs do not match {heads} heads / {kv_heads} kv heads")
        sites.append(ValueSite(path[id(value)], path[id(output)], heads, kv_heads, head_dim))
    return sites


def ffn_down_paths(model: nn.Module) -> list[str]:
    """Every block's FFN down-projection (its input is the activation function's output)."""
    model_type = _model_type(model)
    base = getattr(model, "base_model", model)
    path = {id(m): name for name, m in model.named_modules()}
    return [path[id(_ffn_down(model_type, layer))] for layer in base.get_submodule(_BLOCKS[model_type])]


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
