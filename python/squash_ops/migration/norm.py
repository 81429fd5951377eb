"""The norm modules a migrated model runs: squash norm ops, optionally with an int8 output.

``MigratedNorm`` replaces an ``nn.LayerNorm`` / ``*RMSNorm`` whose gamma was (partly) folded into
the following linears: it computes ``y = x_hat * weight + bias`` with ``weight = gamma / m`` and
``bias = beta / m`` (``weight=None`` when ``m == gamma`` everywhere: the ops' gamma-migrated form).
``m == 1`` is the plain norm, which the W8A8 path uses when migration is off.

With ``act_quant`` set ("dynamic" or "static"), the norm also runs the fused norm + int8 quant op
and attaches the result to its float output (``quant.attach_quantized``); the ``W8A8Linear``
layers that read this output (q, k, v: one quantization for all three) take it instead of
quantizing again. The float output is still returned: post-norm blocks add it back as their
residual, and the HF block code reads its shape. A consumer that does not find the attachment (a
float linear, a tensor rebuilt on the way) quantizes the float output itself: the same numbers.

Both outputs come from ``layer_norm_and_quant`` / ``rms_norm_and_quant`` (one pass on the CPU,
the float op then the quant op on CUDA), exact. A post-norm block needs both (the float one is
the next residual), plus the residual scaled by ``m`` (one more elementwise pass, in
``ResidualScaledOutput``; an op taking ``residual_scale`` would fold that pass in too).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..quant import QuantizedActivation, W8A8Linear, attach_quantized


class MigratedNorm(nn.Module):
    """LayerNorm (``kind="layer"``) or RMSNorm (``kind="rms"``) after gamma migration.

    ``y = normalize(x) * weight + bias`` in float32 (squash norm ops), ``weight = gamma / factor``
    or None (all ones), ``bias = beta / factor`` (LayerNorm with a bias only). ``factor`` is the
    per-channel migration factor that the consumers' weights absorbed; it is kept (not saved in the
    state dict) so evaluations can map activations back to the un-migrated frame.
    """

    def __init__(self, kind: str, eps: float, weight: torch.Tensor | None, bias: torch.Tensor | None,
                 factor: torch.Tensor):
        super().__init__()
        if kind not in ("layer", "rms"):
            raise ValueError(f"MigratedNorm: kind must be 'layer' or 'rms', got {kind!r}")
        if kind == "rms" and bias is not None:
            raise ValueError("MigratedNorm: an RMSNorm has no bias")
        self.kind = kind
        self.eps = float(eps)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("factor", factor, persistent=False)
        self.act_quant: str | None = None
        # Static mode reads the scale of one of its consumers (not a submodule: a plain list), so
        # recalibrating them needs no re-wiring; consumers of one input all calibrate to one scale.
        self._scale_from: list[W8A8Linear] = []

    def extra_repr(self) -> str:
        migrated = int((self.factor != 1).sum())
        return (f"kind={self.kind}, hidden={self.factor.numel()}, eps={self.eps}, migrated_channels={migrated}, "
                f"weight={'None' if self.weight is None else 'gamma/factor'}, act_quant={self.act_quant}")

    def set_act_quant(self, mode: str | None, scale_from: W8A8Linear | None = None) -> None:
        """Also emit the int8 output: ``"dynamic"`` (per token), ``"static"`` (with the
        ``input_scale`` of ``scale_from``, a static consumer) or None (float output only)."""
        if mode not in (None, "dynamic", "static"):
            raise ValueError(f"MigratedNorm: act_quant must be None, 'dynamic' or 'static', got {mode!r}")
        if (mode == "static") != (scale_from is not None):
            raise ValueError("MigratedNorm: a static act_quant takes its scale from a consumer (scale_from), "
                             "and only a static one does")
        self.act_quant = mode
        self._scale_from = [] if scale_from is None else [scale_from]

    def _float(self, x, residual):
        if self.kind == "layer":
            return ops.layer_norm(x, self.weight, self.bias, self.eps, residual=residual)
        return ops.rms_norm(x, self.weight, self.eps, residual=residual)

    def _float_and_quant(self, x, residual):
        scale = self._scale_from[0].input_scale if self._scale_from else None
        if self.kind == "layer":
            return ops.layer_norm_and_quant(x, self.weight, self.bias, self.eps, residual=residual, scale=scale)
        return ops.rms_norm_and_quant(x, self.weight, self.eps, residual=residual, scale=scale)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``norm(x)`` or, with ``residual``, ``norm(x + residual)`` (the sum rounded to x.dtype
        once, as in the unfused model). Returns the float output only (post-norm blocks need no
        pre-norm sum)."""
        x = x.contiguous()
        residual = None if residual is None else residual.contiguous()
        if self.act_quant is None:
            out = self._float(x, residual)  # with a residual: (out, the rounded sum)
            return out if residual is None else out[0]
        # Both outputs of one y (q from the float32 y, not from out): one pass on the CPU.
        out, q, scales = self._float_and_quant(x, residual)
        # Attached to a view: torch.compile breaks the graph on setattr of an element of an op's
        # tuple output, not on a view of it (test_fused_w8a8_block_compiles_without_graph_breaks).
        out = out.view_as(out)
        attach_quantized(out, QuantizedActivation(q, scales, out.dtype))
        return out


class ResidualScaledOutput(nn.Module):
    """A post-norm block output (BERT/RoBERTa ``*SelfOutput`` / ``*Output``) whose residual input
    comes from a migrated norm: ``LayerNorm(dropout(dense(h)) + residual * residual_scale)``.

    The residual is the previous norm's migrated output ``y / m``; multiplying by ``m`` restores
    the original residual (Outlier Suppression's scaled residual branch). The submodules are the
    original block's, so parameter names are unchanged.
    """

    def __init__(self, block: nn.Module, residual_scale: torch.Tensor):
        super().__init__()
        for name in ("dense", "dropout", "LayerNorm"):
            if not hasattr(block, name):
                raise ValueError(f"ResidualScaledOutput: {type(block).__name__} has no {name!r} (not a BERT-style block output)")
        self.dense, self.dropout, self.LayerNorm = block.dense, block.dropout, block.LayerNorm
        self.register_buffer("residual_scale", residual_scale)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden_states))
        residual = input_tensor * self.residual_scale.to(input_tensor.dtype)
        if isinstance(self.LayerNorm, MigratedNorm):
            return self.LayerNorm(h, residual=residual)
        return self.LayerNorm(h + residual)
