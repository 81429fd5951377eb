"""Prepacked weight-only GEMMs: the canonical int4/int8 weights rearranged once, at load time, into
the layout of the small-M tensor-core kernel (docs/FORMATS.md, "Prepack").

Typical use::

    q, s, z = squash_ops.quantize_int4_weight(w, group_size=128)           # checkpoint format
    packed, sp, zp = squash_ops.prepack_int4_weight(q, s, z, group_size=128)  # once, at load time
    y = squash_ops.w4a16_gemm_prepacked(x, packed, sp, zp, k=K, group_size=128)  # every forward

The prepacked GEMMs compute exactly what ``w4a16_gemm`` / ``w8a16_gemm`` compute on the canonical
weights (float32 accumulation, one rounding to x.dtype); ``unprepack_*`` gives the canonical tensors
back bit for bit. Constraints of the layout: N (out features) and K (in features) are multiples
of 8. The layout pads K to whole tiles (128 for int4, 64 for int8), so the packed tensors cannot
tell K=56 from K=64: every op on them takes the true ``k`` and refuses an ``x`` of another width. The prepacked tensors are an implementation detail of this version: never store them in a
checkpoint, store the canonical ones.
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = [
    "prepack_int4_weight",
    "unprepack_int4_weight",
    "prepack_int8_weight",
    "unprepack_int8_weight",
    "w4a16_gemm_prepacked",
    "w8a16_gemm_prepacked",
]

_TILE_N, _TILE_BYTES = 8, 512


def prepack_int4_weight(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    group_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Canonical int4 weight -> prepacked layout (any device; a pure rearrangement).

    qweight: uint8 [N, K/2] (``quantize_int4_weight``), N and K multiples of 8; scales: [N, K/g]
    float32/float16/bfloat16; zeros: uint8 [N, K/g] or None (symmetric, z = 8); group_size: 32, 64,
    128, -1 (per-channel) or K. Returns ``(packed uint8 [N/8, ceil(K/128), 512],
    scales float32 [N/8, K/g, 8], zeros uint8 [N/8, K/g, 8] or None)``.
    """
    packed, sp, zp = torch.ops.squash.prepack_int4_weight(qweight, scales, zeros, group_size)
    return packed, sp, (zp if zeros is not None else None)


def unprepack_int4_weight(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    k: int,
    group_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inverse of ``prepack_int4_weight`` for in_features ``k``: ``(qweight uint8 [N, K/2],
    scales float32 [N, K/g], zeros uint8 [N, K/g] or None)``."""
    q, s, z = torch.ops.squash.unprepack_int4_weight(packed, scales, zeros, k, group_size)
    return q, s, (z if zeros is not None else None)


def prepack_int8_weight(qweight: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical int8 weight -> prepacked layout (any device).

    qweight: int8 [N, K] (``quantize_int8_weight``), N and K multiples of 8; scales: [N]
    float32/float16/bfloat16. Returns ``(packed uint8 [N/8, ceil(K/64), 512], scales float32 [N])``.
    """
    return torch.ops.squash.prepack_int8_weight(qweight, scales)


def unprepack_int8_weight(packed: torch.Tensor, scales: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``prepack_int8_weight`` for in_features ``k``: ``(qweight int8 [N, K], scales float32 [N])``."""
    return torch.ops.squash.unprepack_int8_weight(packed, scales, k)


def w4a16_gemm_prepacked(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    k: int,
    group_size: int = 128,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``w4a16_gemm`` on prepacked weights: ``x @ W.T + bias``, float32 accumulation, rounded once.

    x: [..., K] float16/bfloat16 with K == k (contiguous last dim); packed, scales, zeros from
    ``prepack_int4_weight`` (zeros None: symmetric); k: the weight's in_features (a multiple of 8);
    bias: [N] x.dtype or None. Returns [..., N] x.dtype with N = 8 * packed.shape[0]. Zeros edited
    after prepacking to a value above 15 are refused on the CPU and make their output channel NaN
    on CUDA (as in ``w4a16_gemm``).
    """
    return torch.ops.squash.w4a16_gemm_prepacked(x, packed, scales, zeros, k, group_size, bias)


def w8a16_gemm_prepacked(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``w8a16_gemm`` on prepacked weights (``prepack_int8_weight``). x: [..., K] float16/bfloat16
    with K == k, the weight's in_features (a multiple of 8); bias: [N] x.dtype or None.
    Returns [..., N] x.dtype."""
    return torch.ops.squash.w8a16_gemm_prepacked(x, packed, scales, k, bias)


# ---- fake (meta) kernels for torch.compile and opcheck: the real kernels' argument checks
# (_checks.py), then the output shapes ----


@torch.library.register_fake("squash::prepack_int4_weight")
def _(qweight, scales, zeros, group_size):
    g = _checks.prepack_int4_weight(qweight, scales, zeros, group_size)
    n, k = qweight.shape[0], 2 * qweight.shape[1]
    groups = k // g
    return (
        qweight.new_empty((n // _TILE_N, _checks.tiles_k(4, k), _TILE_BYTES)),
        qweight.new_empty((n // _TILE_N, groups, _TILE_N), dtype=torch.float32),
        qweight.new_empty((n // _TILE_N, groups, _TILE_N)),
    )


@torch.library.register_fake("squash::unprepack_int4_weight")
def _(packed, scales, zeros, k, group_size):
    groups = k // _checks.unprepack_int4_weight(packed, scales, zeros, k, group_size)
    n = packed.shape[0] * _TILE_N
    return (
        packed.new_empty((n, k // 2)),
        scales.new_empty((n, groups)),
        packed.new_empty((n, groups)),
    )


@torch.library.register_fake("squash::prepack_int8_weight")
def _(qweight, scales):
    _checks.prepack_int8_weight(qweight, scales)
    n, k = qweight.shape
    return (
        qweight.new_empty((n // _TILE_N, _checks.tiles_k(8, k), _TILE_BYTES), dtype=torch.uint8),
        scales.new_empty((n,), dtype=torch.float32),
    )


@torch.library.register_fake("squash::unprepack_int8_weight")
def _(packed, scales, k):
    _checks.unprepack_int8_weight(packed, scales, k)
    return packed.new_empty((packed.shape[0] * _TILE_N, k), dtype=torch.int8), scales.new_empty(scales.shape)


@torch.library.register_fake("squash::w4a16_gemm_prepacked")
def _(x, packed, scales, zeros, k, group_size, bias=None):
    n = _checks.w4a16_gemm_prepacked(x, packed, scales, zeros, k, group_size, bias)
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("squash::w8a16_gemm_prepacked")
def _(x, packed, scales, k, bias=None):
    n = _checks.w8a16_gemm_prepacked(x, packed, scales, k, bias)
    return x.new_empty((*x.shape[:-1], n))
