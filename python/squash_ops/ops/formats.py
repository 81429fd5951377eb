"""Weight formats: quantize, dequantize, pack and unpack (the canonical layout of docs/FORMATS.md).

A weight ``W`` is ``[N, K]`` like ``nn.Linear.weight`` (``[out_features, in_features]``).
Rounding is round-half-to-even everywhere.

int8 (per output channel)::

    s[n] = max_k |W[n, k]| / 127                        (float32 [N])
    q    = clamp(rne(W * inv), -127, 127), inv = 127 / absmax (0 when absmax == 0)   (int8 [N, K])
    W'   = q * s

int4 (groups of ``g`` consecutive input channels; ``group_size=-1`` means one group of ``K``)::

    symmetric:  s = absmax_group / 7, q = clamp(rne(W / s), -8, 7) + 8 (q = 8 when s == 0),
                zero point 8
    asymmetric: lo = min(min_group, 0), hi = max(max_group, 0), s = (hi - lo) / 15,
                z = clamp(rne(-lo / s), 0, 15), q = clamp(rne(W / s) + z, 0, 15);
                a constant group c gets s = |c| (1 if c == 0), so it dequantizes exactly to c
    W' = (q - z) * s

The 4-bit values are packed two per byte along K: byte ``j`` of a row holds element ``2j`` in its
low nibble and element ``2j + 1`` in its high nibble (``pack_int4``).
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = [
    "quantize_int8_weight",
    "dequantize_int8_weight",
    "quantize_int4_weight",
    "dequantize_int4_weight",
    "pack_int4",
    "unpack_int4",
]


def quantize_int8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel symmetric int8 quantization of ``weight`` [N, K] (float32/float16/bfloat16).

    Returns ``(qweight int8 [N, K], scales float32 [N])`` with ``weight ~= qweight * scales[:, None]``;
    each element is within ``scales[n] / 2`` of the original.
    """
    return torch.ops.squash.quantize_int8_weight(weight)


def dequantize_int8_weight(qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``qweight`` int8 [N, K] times ``scales`` [N] (float32, or float16/bfloat16) -> float32 [N, K]."""
    return torch.ops.squash.dequantize_int8_weight(qweight, scales)


def quantize_int4_weight(
    weight: torch.Tensor, group_size: int = 128, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Group-wise int4 quantization of ``weight`` [N, K] (float32/float16/bfloat16).

    ``group_size`` is 32, 64, 128, -1 (per-channel: one group of K) or K; it must divide K and K
    must be even. Returns ``(qweight uint8 [N, K/2], scales float32 [N, K/g], zeros)`` where
    ``zeros`` is uint8 [N, K/g] (values 0..15) when ``symmetric=False`` and ``None`` when
    symmetric (the zero point is then 8). Each element dequantizes within ``s / 2`` of the
    original (the formulas are in this module's docstring).
    """
    qweight, scales, zeros = torch.ops.squash.quantize_int4_weight(weight, group_size, symmetric)
    return qweight, scales, (None if symmetric else zeros)


def dequantize_int4_weight(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    group_size: int = 128,
) -> torch.Tensor:
    """``(q - z) * s`` as float32 [N, K] from ``qweight`` uint8 [N, K/2] (packed, see ``pack_int4``),
    ``scales`` [N, K/g] (float32, or float16/bfloat16) and ``zeros`` uint8 [N, K/g] (``None``:
    symmetric, z = 8). ``group_size`` as in ``quantize_int4_weight``.
    """
    return torch.ops.squash.dequantize_int4_weight(qweight, scales, zeros, group_size)


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Packs uint8 ``values`` [..., K] in 0..15 (K even) into uint8 [..., K/2]: byte ``j`` is
    ``values[..., 2j] | values[..., 2j + 1] << 4``. Values above 15 raise ValueError."""
    return torch.ops.squash.pack_int4(values)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_int4``: uint8 [..., K/2] -> uint8 [..., K] with values 0..15."""
    return torch.ops.squash.unpack_int4(packed)


# ---- fake (meta) kernels for torch.compile and opcheck: the real kernels' argument checks
# (_checks.py; the values, e.g. a non-finite weight, only the real kernels can see), then the
# output shapes ----


@torch.library.register_fake("squash::quantize_int8_weight")
def _(weight):
    _checks.quantize_weight("quantize_int8_weight", weight)
    n, k = weight.shape
    return weight.new_empty((n, k), dtype=torch.int8), weight.new_empty((n,), dtype=torch.float32)


@torch.library.register_fake("squash::dequantize_int8_weight")
def _(qweight, scales):
    _checks.dequantize_int8_weight(qweight, scales)
    return qweight.new_empty(qweight.shape, dtype=torch.float32)


@torch.library.register_fake("squash::quantize_int4_weight")
def _(weight, group_size, symmetric):
    _checks.quantize_weight("quantize_int4_weight", weight)
    n, k = weight.shape
    groups = k // _checks.check_int4_group_size("quantize_int4_weight", group_size, k)
    return (
        weight.new_empty((n, k // 2), dtype=torch.uint8),
        weight.new_empty((n, groups), dtype=torch.float32),
        weight.new_empty((n, groups), dtype=torch.uint8),
    )


@torch.library.register_fake("squash::dequantize_int4_weight")
def _(qweight, scales, zeros, group_size):
    _checks.dequantize_int4_weight(qweight, scales, zeros, group_size)
    n, half = qweight.shape
    return qweight.new_empty((n, 2 * half), dtype=torch.float32)


@torch.library.register_fake("squash::pack_int4")
def _(values):
    _checks.pack_int4(values)
    return values.new_empty((*values.shape[:-1], values.shape[-1] // 2))


@torch.library.register_fake("squash::unpack_int4")
def _(packed):
    _checks.unpack_int4(packed)
    return packed.new_empty((*packed.shape[:-1], packed.shape[-1] * 2))
