"""Tiny HF models with awkward norms, and the references the migration and smoothing tests share."""

import copy

import torch
from torch import nn

from squash_ops.quant import W8A8Linear, attached_quantized

VOCAB = 128


# ---- tiny models ----


def spread_norms(model: nn.Module) -> nn.Module:
    """Give every norm gamma/beta that exercise the transform: signs, a zero, a 1e-6, a large
    gamma, and betas whose beta/gamma exceeds the guard's max_shift."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm"):
                h = m.weight.numel()
                gamma = torch.rand(h, generator=g) * 1.5 + 0.05
                gamma[torch.rand(h, generator=g) < 0.25] *= -1
                gamma[:3] = torch.tensor([0.0, 1e-6, 8.0])
                m.weight.copy_(gamma)
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(torch.randn(h, generator=g) * 0.5)
    return model


def tiny(family: str) -> nn.Module:
    import transformers as t
    common = dict(num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=64)
    if family.startswith("llama"):
        cfg = t.LlamaConfig(hidden_size=96, intermediate_size=160, num_attention_heads=6, num_key_value_heads=2,
                            tie_word_embeddings=family == "llama_tied", **common)
        model = t.LlamaForCausalLM(cfg)
    elif family.startswith("opt"):
        cfg = t.OPTConfig(hidden_size=64, ffn_dim=128, num_attention_heads=4,
                          word_embed_proj_dim=48 if family == "opt_project_out" else 64, **common)
        model = t.OPTForCausalLM(cfg)
    elif family == "bert":
        model = t.BertModel(t.BertConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, **common))
    else:
        model = t.RobertaModel(t.RobertaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, **common))
    return spread_norms(model.eval())


def inputs(seq=11):
    ids = torch.randint(3, VOCAB, (2, seq))
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0  # a padded sequence
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def outputs(model, batch) -> dict[str, torch.Tensor]:
    out = model(**batch)
    if hasattr(out, "logits"):
        return {"logits": out.logits}
    return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}


def assert_as_exact_as_fp32(original, migrated, batch):
    """Error of ``migrated`` (float32) vs a float64 copy of ``original``, relative to the original
    float32 model's own error: mean |error| <= 2x (FlashAttention's rule) and max |error| <= 4x.
    Migration adds one float32 rounding per folded weight, per beta/m and per residual product,
    each the size of the model's own roundings. Measured over 150 tiny-model cases: mean ratio
    <= 1.2, max ratio <= 1.7 (2.7 seen once: a maximum of a few thousand errors is a noisy
    statistic, hence the looser bound); MiniLM: 0.7-1.2."""
    ref = outputs(copy.deepcopy(original).double(), batch)
    base, got = outputs(original, batch), outputs(migrated, batch)
    for key, r in ref.items():
        e_fp32, e_mig = (base[key].double() - r).abs(), (got[key].double() - r).abs()
        for stat, bound in ((torch.mean, 2.0), (torch.max, 4.0)):
            ratio = (stat(e_mig) / stat(e_fp32)).item()
            assert ratio <= bound, f"{key}: migrated error {stat.__name__} is {ratio:.3g}x float32's own"


def int8_reference(lin: W8A8Linear, x: torch.Tensor) -> torch.Tensor:
    """float64 output of ``lin`` for input ``x``.

    Without an attachment: x quantized here as the ops' contract says, in float32: ``inv`` is
    ``127 / absmax`` per token (dynamic) or ``1 / input_scale`` (static), ``q = clamp(rne(x * inv),
    -127, 127)`` (float32 products: a float64 ``x / s`` would round a few ties the other way). With one (from a fused norm, which quantizes the
    float32 norm output, not ``x`` rounded to a half dtype): the attached int8, after checking it
    is ``x`` quantized, i.e. within half a step of ``x`` clamped to the range, plus ``x``'s own
    rounding to its dtype. Then times the dequantized int8 weight, plus bias."""
    x64 = x.double()
    pre = attached_quantized(x)
    if pre is None:
        x32 = x.float()
        if lin.config.activation == "static":
            s, inv = lin.input_scale, 1 / lin.input_scale
        else:
            absmax = x32.abs().amax(-1, keepdim=True)
            # A tensor numerator: Python's 127 / t is reciprocal(t) * 127, two roundings.
            s, inv = absmax / 127, torch.where(absmax > 0, torch.full_like(absmax, 127) / absmax, 0.0)
        xq = torch.clamp(torch.round(x32 * inv), -127, 127).double() * s.double()
    else:
        s = pre.scales.double()[..., None]
        xq = pre.q.double() * s
        clamped = torch.minimum(torch.maximum(x64, -127 * s), 127 * s)
        slack = s / 2 + x64.abs() * torch.finfo(x.dtype).eps + 1e-12
        assert bool(((xq - clamped).abs() <= slack).all())
    out = xq @ (lin.qweight.double() * lin.scales.double()[:, None]).T
    return out if lin.bias is None else out + lin.bias.double()


