"""Tiny random Hugging Face models built from configs, shared by the quant test files.

Weights are drawn with ``initializer_range`` = 1/sqrt(hidden) instead of HF's 0.02, so each layer
has roughly unit gain: with 0.02 the residual stream (hence the logits) is dominated by the
embeddings and a wrongly replaced layer would hardly show in the outputs.
"""

import torch
import transformers
from torch import nn


def _build(model_cls, config, seed):
    torch.manual_seed(seed)
    return model_cls(config).eval()


def tiny_llama(seed=0, hidden=128, intermediate=320, tie=True):
    """Llama with grouped-query attention (4 query heads, 2 KV heads, head_dim 32), 2 layers.
    intermediate 320 is a multiple of 64 but not of 128 (down_proj cannot take int4 g128)."""
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie, initializer_range=hidden**-0.5,
    )
    return _build(transformers.LlamaForCausalLM, config, seed)


def tiny_opt(seed=0, hidden=128):
    config = transformers.OPTConfig(
        vocab_size=256, hidden_size=hidden, ffn_dim=256, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=hidden, max_position_embeddings=128, init_std=hidden**-0.5,
    )
    return _build(transformers.OPTForCausalLM, config, seed)


def tiny_bert(seed=0, hidden=128):
    """BertForMaskedLM: its decoder is tied to the word embeddings (weight and bias)."""
    config = transformers.BertConfig(
        vocab_size=256, hidden_size=hidden, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, initializer_range=hidden**-0.5,
    )
    return _build(transformers.BertForMaskedLM, config, seed)


def token_batch(seed=0, batch=2, seq=13, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def random_norms(model):
    """HF initializes gamma to 1 and beta to 0, which migration leaves alone (factor 1): draw them
    so every norm migrates (and a few channels need the tiny-gamma guard)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm"):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.4 + 1)
                m.weight[:2] = 0.01
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model
