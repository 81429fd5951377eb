"""A differentiable stand-in for a W8A8 model's forward: what QAT of the static scales trains.

``differentiable(model, scales)`` temporarily swaps the forward of every ``W8A8Linear`` and every
``MigratedNorm`` for torch math that autograd can follow (the squash ops have no backward):

* a static ``W8A8Linear`` quantizes its (transformed) input with the scale ``scales[path]`` (a
  float32 tensor that may require grad) through a straight-through round: the LSQ estimator
  (Esser et al., ICLR 2020): ``q = clamp(round(x * (1 / s)), -127, 127) * s``, where the round
  passes the gradient through unchanged and the clamp does not, so ``d q / d s`` is
  ``round(x / s) - x / s`` inside the range and ``+-127`` outside it;
* a dynamic one quantizes per token the same way (scale ``absmax / 127``, no parameter);
* the int8 weight enters dequantized (``qweight * scales``, the transformed frame), frozen;
* a weight-only layer (W8A16, W4A16) runs its dequantized weight on the input rounded to its
  compute dtype, so the gradient reaches the static layers before it;
* a ``MigratedNorm`` runs the same LayerNorm / RMSNorm in torch, without its fused int8 output
  (each consumer quantizes for itself: the same codes, ``migration/norm.py``).

The codes are the ops' codes: ``inv = 1 / s`` (static) or ``127 / absmax`` (dynamic) in float32,
then round half to even (``ops.quantize_activation_int8``); only the float32 accumulation order of
the GEMM differs, so outputs match the real model to float32 rounding (tests/test_qat.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .linear import W8A8Linear, _QuantLinear


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def fake_quant_static(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``clamp(rne(x * (1 / scale)), -127, 127) * scale`` with the LSQ gradient for ``scale``."""
    return torch.clamp(round_ste(x * (1 / scale)), -127, 127) * scale


def fake_quant_dynamic(x: torch.Tensor) -> torch.Tensor:
    """Per-token int8 as ``quantize_activation_int8(x)`` does it, straight-through for ``x``."""
    amax = x.detach().abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    return round_ste(x * inv) * (amax / 127)


def _linear_forward(module: W8A8Linear, scale: torch.Tensor | None):
    weight = (module.qweight.float() * module.scales[:, None]).detach()

    def forward(x):
        x = module.transform_input(x.float())
        xq = fake_quant_dynamic(x) if scale is None else fake_quant_static(x, scale)
        return nn.functional.linear(xq, weight, module.bias)
    return forward


def _weight_only_forward(module: _QuantLinear):
    weight = module.dequantized_weight().detach()
    bias = None if module.bias is None else module.bias.detach().float()

    def forward(x):
        b = None if bias is None else bias.to(x.device)
        return nn.functional.linear(x.to(module.compute_dtype).float(), weight.to(x.device), b).to(x.dtype)
    return forward


def _norm_forward(norm):
    def forward(x, residual=None):
        h = x if residual is None else x + residual
        if norm.kind == "layer":
            y = nn.functional.layer_norm(h.float(), h.shape[-1:], eps=norm.eps)
        else:
            y = h.float() * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + norm.eps)
        if norm.weight is not None:
            y = y * norm.weight
        if norm.bias is not None:
            y = y + norm.bias
        return y.to(x.dtype)
    return forward


@contextmanager
def differentiable(model: nn.Module, scales: dict[str, torch.Tensor]):
    """Within the block, ``model`` runs the differentiable forward (module docs); ``scales``: path
    -> float32 [1] scale of each static ``W8A8Linear`` (missing ones use their ``input_scale``)."""
    from ..migration.norm import MigratedNorm  # migration builds on quant: imported late

    patched = []
    try:
        for path, m in model.named_modules():
            if isinstance(m, W8A8Linear):
                static = m.config.activation == "static"
                m.forward = _linear_forward(m, scales.get(path, m.input_scale) if static else None)
                patched.append(m)
            elif isinstance(m, _QuantLinear):
                m.forward = _weight_only_forward(m)
                patched.append(m)
            elif isinstance(m, MigratedNorm):
                m.forward = _norm_forward(m)
                patched.append(m)
        yield model
    finally:
        for m in patched:
            del m.forward  # back to the class's forward
