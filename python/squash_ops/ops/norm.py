"""Fused LayerNorm / RMSNorm, with an optional residual add and an optional int8 output.

Eight raw ops live under ``torch.ops.squash`` (``layer_norm``, ``add_layer_norm``,
``layer_norm_quant``, ``add_layer_norm_quant`` and the same four for ``rms_norm``); the four
wrappers below pick the right one from their arguments. ``layer_norm_and_quant`` /
``rms_norm_and_quant`` return the float ``out`` and the int8 output of one norm together.

Common rules (every op):

* ``x``: ``[..., H]`` float16, bfloat16 or float32, contiguous (call ``.contiguous()`` on a
  strided view), ``H > 0``. Zero tokens (``x`` of shape ``[0, H]``) give empty outputs.
* ``weight``, ``bias``: ``[H]``, dtype ``x.dtype`` or float32, contiguous, on ``x``'s device.
* ``residual``: same shape and dtype as ``x``. The sum ``h = x + residual`` is computed in
  float32, rounded once to ``x.dtype`` and returned as ``residual_out``; the norm is applied to
  that rounded ``h``, so the fused op equals the unfused PyTorch sequence
  ``h = x + residual; norm(h)``.
* Statistics and ``y`` are float32 or better (the CPU reference evaluates them in float64 and
  rounds ``y`` to float32 once; the CUDA kernels use float32). ``out`` is ``y`` rounded once to
  ``x.dtype``.
* ``*_quant``: ``q = clamp(round_half_even(y * inv), -127, 127)`` as int8, from the float32 ``y``
  (not rounded to ``x.dtype`` first). Dynamic (``scale=None``), per token:
  ``s = absmax(y) / 127``, ``inv = 127 / absmax(y)`` (``0`` when ``absmax == 0``), exactly as
  ``quantize_activation_int8``. Static: ``scale`` is a float32 tensor with one element,
  ``inv = 1 / scale``, and the returned ``scales`` are filled with ``scale``. ``scales`` is
  float32 of shape ``x.shape[:-1]``; dequantize with ``q * scales[..., None]``.

Gamma migration (Outlier Suppression): ``y * gamma + beta == (y + beta / gamma) * gamma``, so a
LayerNorm may run with ``weight=None, bias=beta / gamma`` while ``gamma`` is folded into the
columns of the following Linear's weight (``W' = W * gamma``). The int8 output then quantizes the
un-scaled ``y + beta / gamma``, whose outlier channels (large ``gamma``) are no longer amplified.
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = ["layer_norm", "rms_norm", "layer_norm_quant", "rms_norm_quant", "layer_norm_and_quant", "rms_norm_and_quant"]

_ops = torch.ops.squash


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dimension, optionally after a residual add.

    ``h = x`` (or ``h = to_dtype(fp32(x) + fp32(residual))`` when ``residual`` is given),
    ``y = (h - mean(h)) / sqrt(var(h) + eps)`` with the biased variance, then
    ``y = y * weight`` (if given) ``+ bias`` (if given); ``out = to_dtype(y)``.

    ``weight=None`` with ``bias = beta / gamma`` is the gamma-migrated form (module docstring).

    Args:
        x: ``[..., H]`` float16/bfloat16/float32, contiguous.
        weight, bias: ``[H]``, ``x.dtype`` or float32, or None.
        eps: finite, ``>= 0``.
        residual: ``[..., H]`` like ``x``, or None.

    Returns:
        ``out`` (``x.shape``, ``x.dtype``), or ``(out, residual_out)`` when ``residual`` is
        given (``residual_out`` is ``h``, ``x.shape``, ``x.dtype``).
    """
    if residual is None:
        return _ops.layer_norm(x, weight, bias, float(eps))
    return _ops.add_layer_norm(x, residual, weight, bias, float(eps))


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dimension, optionally after a residual add.

    ``h`` as in :func:`layer_norm`; ``y = h / sqrt(mean(h^2) + eps) * weight`` (no weight:
    factor 1); ``out = to_dtype(y)``.

    Args:
        x: ``[..., H]`` float16/bfloat16/float32, contiguous.
        weight: ``[H]``, ``x.dtype`` or float32, or None.
        eps: finite, ``>= 0``.
        residual: ``[..., H]`` like ``x``, or None.

    Returns:
        ``out``, or ``(out, residual_out)`` when ``residual`` is given.
    """
    if residual is None:
        return _ops.rms_norm(x, weight, float(eps))
    return _ops.add_rms_norm(x, residual, weight, float(eps))


def layer_norm_quant(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm (as :func:`layer_norm`) whose float32 ``y`` is quantized to int8 per token.

    ``q = clamp(round_half_even(y * inv), -127, 127)``; ``scale=None``: dynamic per token,
    ``s = absmax(y) / 127``, ``inv = 127 / absmax(y)`` (0 for an all-zero row); else static,
    ``scale`` float32 with one element, ``inv = 1 / scale``, ``s = scale``.
    ``y ~= q * s[..., None]``. Special rows, on the CPU and on CUDA alike (one rule,
    ``csrc/kernels/common/row_quant.h``): a row whose ``y`` holds a NaN gets ``s = NaN`` (``q = 0``
    at the NaN), so the NaN shows downstream; a row with ``absmax(y)`` below ~4e-37 is scaled by
    2^64 first and still quantizes within half a step.

    Returns:
        ``(q, scales)``: ``q`` int8 ``x.shape``, ``scales`` float32 ``x.shape[:-1]``; or
        ``(q, scales, residual_out)`` when ``residual`` is given.
    """
    if residual is None:
        return _ops.layer_norm_quant(x, weight, bias, float(eps), scale)
    return _ops.add_layer_norm_quant(x, residual, weight, bias, float(eps), scale)


def rms_norm_quant(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMSNorm (as :func:`rms_norm`) whose float32 ``y`` is quantized to int8 per token.

    Quantization as in :func:`layer_norm_quant`.

    Returns:
        ``(q, scales)`` or ``(q, scales, residual_out)`` when ``residual`` is given.
    """
    if residual is None:
        return _ops.rms_norm_quant(x, weight, float(eps), scale)
    return _ops.add_rms_norm_quant(x, residual, weight, float(eps), scale)


def layer_norm_and_quant(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, q, scales)``: :func:`layer_norm`'s ``out`` and :func:`layer_norm_quant`'s int8
    output of the same ``y`` (of ``x + residual`` when given; the sum itself is not returned).
    On the CPU one pass computes both (the statistics once); on CUDA the two ops run in turn. The
    results equal ``layer_norm(x, ..., residual)`` and ``layer_norm_quant`` of its sum exactly."""
    return _ops.layer_norm_and_quant(x, residual, weight, bias, float(eps), scale)


def rms_norm_and_quant(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out, q, scales)`` of one RMSNorm, as :func:`layer_norm_and_quant`."""
    return _ops.rms_norm_and_quant(x, residual, weight, float(eps), scale)


# ---- fake (meta) kernels for torch.compile and opcheck: the real kernels' argument checks
# (_checks.py; the static scale's value only the real kernels can read), then the output shapes ----


def _like(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)


def _quant_outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.register_fake("squash::layer_norm")
def _layer_norm_fake(x, weight, bias, eps):
    _checks.norm("layer_norm", x, None, weight, bias, eps, None)
    return _like(x)


@torch.library.register_fake("squash::add_layer_norm")
def _add_layer_norm_fake(x, residual, weight, bias, eps):
    _checks.norm("add_layer_norm", x, residual, weight, bias, eps, None)
    return _like(x), _like(x)


@torch.library.register_fake("squash::layer_norm_quant")
def _layer_norm_quant_fake(x, weight, bias, eps, scale=None):
    _checks.norm("layer_norm_quant", x, None, weight, bias, eps, scale)
    return _quant_outputs(x)


@torch.library.register_fake("squash::add_layer_norm_quant")
def _add_layer_norm_quant_fake(x, residual, weight, bias, eps, scale=None):
    _checks.norm("add_layer_norm_quant", x, residual, weight, bias, eps, scale)
    return (*_quant_outputs(x), _like(x))


@torch.library.register_fake("squash::rms_norm")
def _rms_norm_fake(x, weight, eps):
    _checks.norm("rms_norm", x, None, weight, None, eps, None)
    return _like(x)


@torch.library.register_fake("squash::add_rms_norm")
def _add_rms_norm_fake(x, residual, weight, eps):
    _checks.norm("add_rms_norm", x, residual, weight, None, eps, None)
    return _like(x), _like(x)


@torch.library.register_fake("squash::rms_norm_quant")
def _rms_norm_quant_fake(x, weight, eps, scale=None):
    _checks.norm("rms_norm_quant", x, None, weight, None, eps, scale)
    return _quant_outputs(x)


@torch.library.register_fake("squash::add_rms_norm_quant")
def _add_rms_norm_quant_fake(x, residual, weight, eps, scale=None):
    _checks.norm("add_rms_norm_quant", x, residual, weight, None, eps, scale)
    return (*_quant_outputs(x), _like(x))


@torch.library.register_fake("squash::layer_norm_and_quant")
def _layer_norm_and_quant_fake(x, residual, weight, bias, eps, scale=None):
    _checks.norm("layer_norm_and_quant", x, residual, weight, bias, eps, scale)
    return (_like(x), *_quant_outputs(x))


@torch.library.register_fake("squash::rms_norm_and_quant")
def _rms_norm_and_quant_fake(x, residual, weight, eps, scale=None):
    _checks.norm("rms_norm_and_quant", x, residual, weight, None, eps, scale)
    return (_like(x), *_quant_outputs(x))


# CUDA: the float op (with the residual add) then the quant op on its rounded sum, which is what
# the CPU's single pass computes (the same y feeds both outputs).
@torch.library.register_kernel("squash::layer_norm_and_quant", "cuda")
def _layer_norm_and_quant_cuda(x, residual, weight, bias, eps, scale=None):
    _checks.norm("layer_norm_and_quant", x, residual, weight, bias, eps, scale)
    out, h = (_ops.layer_norm(x, weight, bias, eps), x) if residual is None else \
        _ops.add_layer_norm(x, residual, weight, bias, eps)
    return (out, *_ops.layer_norm_quant(h, weight, bias, eps, scale))


@torch.library.register_kernel("squash::rms_norm_and_quant", "cuda")
def _rms_norm_and_quant_cuda(x, residual, weight, eps, scale=None):
    _checks.norm("rms_norm_and_quant", x, residual, weight, None, eps, scale)
    out, h = (_ops.rms_norm(x, weight, eps), x) if residual is None else _ops.add_rms_norm(x, residual, weight, eps)
    return (out, *_ops.rms_norm_quant(h, weight, eps, scale))
