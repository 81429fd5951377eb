"""``PackedEncoder``: a BERT-family encoder run on its real tokens only.

A padded batch of sentences spends most of its work on padding: 100 real sentences in batches of
32 (``squash_ops.eval`` data, all-MiniLM-L6-v2 tokenizer) hold 1745 tokens in 3276 padded slots,
so a padded forward does 1.88x the work. Every op of an encoder layer but attention is per token,
so the layers can run on the real tokens packed back to back (``[1, T, H]``), with attention
told where each sequence starts (transformers' packed-sequence kwargs ``cu_seq_lens_q/k``, the
FlashAttention-2 convention, routed by squash attention to ``attention_varlen``). The embeddings
run on the padded batch (positions and token types as the model computes them, for any padding
side), the result is scattered back to ``[B, S, H]``.

Outputs at real tokens equal the padded model's up to float rounding (tests/test_hf_packed.py);
at padded positions they are zeros, where the padded model computes values nothing should read
(mean pooling over the attention mask, CLS pooling and token classification never do).

``compile=True`` runs the layers through ``torch.compile(dynamic=True)`` (the packing stays
eager: it is data-dependent): one graph for every token count, compiled on the first call (MiniLM:
9-11 s on 2 cores). It removes most of the per-op Python cost: the W8A8 all-MiniLM-L6-v2, 2
threads, 100 sentences at batch 32 1.19x faster (86.6 -> 73.0 and 90.7 -> 76.2 ms, medians of two
runs), 24 at batch 1 1.25-1.43x (107.5 -> 85.8, 89.9 -> 62.7 ms;
bench/results/2026-12-03_cpu-minilm-compile_probe.log, a slow phase of the VM). Inductor rounds
the float ops between the squash ops (GELU, adds) differently from eager, so a few int8 roundings
differ; the embeddings are as close to float32 as eager's (bench cpu_minilm logs both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutput

from .aot import compile_packed_layers
from .attention import register

__all__ = ["PackedEncoder"]

ATTN = register("squash")


def _encoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    base = getattr(model, "base_model", model)
    emb, enc = getattr(base, "embeddings", None), getattr(base, "encoder", None)
    if emb is None or enc is None or not hasattr(enc, "layer"):
        raise ValueError(
            f"PackedEncoder: {type(model).__name__} is not a BERT-family encoder (needs .embeddings and "
            f".encoder.layer, as BertModel, RobertaModel, XLMRobertaModel, ...)")
    if getattr(base.config, "is_decoder", False) or getattr(base.config, "add_cross_attention", False):
        raise ValueError("PackedEncoder: decoder / cross-attention configurations are not supported")
    return emb, enc


class PackedEncoder(nn.Module):
    """Wraps a BERT-family model (quantized or not); ``forward(input_ids, attention_mask,
    token_type_ids)`` returns ``BaseModelOutput(last_hidden_state [B, S, H])`` computed on the
    real tokens only. The model's attention implementation is switched to squash attention
    (``model.set_attn_implementation("squash")``), which the packed layers need. ``compile``:
    True runs the layers under ``torch.compile(dynamic=True, backend=backend)`` (module
    docstring); "aot" compiles them here, ahead of time, with torch.export + AOTInductor
    (``aot.py``: no Python per call, the fastest at batch 1)."""

    def __init__(self, model: nn.Module, compile: bool | str = False, backend: str = "inductor"):
        super().__init__()
        self.embeddings, self.encoder = _encoder_parts(model)
        model.set_attn_implementation(ATTN)
        self.model = model
        if compile == "aot":
            hidden, dtype = model.config.hidden_size, self.embeddings.word_embeddings.weight.dtype
            self._layers = compile_packed_layers(self.encoder, hidden, dtype)
        elif compile in (True, False):
            self._layers = torch.compile(self._run_layers, dynamic=True, backend=backend) if compile else self._run_layers
        else:
            raise ValueError(f"PackedEncoder: compile must be False, True or \"aot\", got {compile!r}")

    def _run_layers(self, packed: Tensor, cu: Tensor, longest: int) -> Tensor:
        return self.encoder(packed, attention_mask=None, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                            max_length_q=longest, max_length_k=longest).last_hidden_state

    @torch.no_grad()
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, **unused) -> BaseModelOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"PackedEncoder: input_ids must be [batch, seq], got shape {list(input_ids.shape)}")
        B, S = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"PackedEncoder: attention_mask must have input_ids' shape {[B, S]}, "
                             f"got {list(attention_mask.shape)}")
        emb = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # [B, S, H]
        H = emb.shape[-1]
        valid = attention_mask.reshape(-1).bool()
        rows = valid.nonzero().squeeze(1)
        lens = attention_mask.sum(1, dtype=torch.int32)
        cu = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
        longest = int(lens.max()) if B else 0
        packed = emb.reshape(B * S, H).index_select(0, rows).unsqueeze(0)
        hidden = self._layers(packed, cu, longest) if packed.shape[1] else self._run_layers(packed, cu, longest)
        out = hidden.new_zeros(B * S, H).index_copy_(0, rows, hidden[0])
        return BaseModelOutput(last_hidden_state=out.reshape(B, S, H))
