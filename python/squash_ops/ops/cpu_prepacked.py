"""CPU prepacked weight-only GEMMs: the canonical int4/int8 weights rearranged once, at load time,
into the layout of the AVX2 / scalar CPU kernels (docs/FORMATS.md, "CPU prepacked layout").

Typical use::

    q, s, z = squash_ops.quantize_int4_weight(w, group_size=128)                 # checkpoint format
    packed, sp, zp = squash_ops.cpu_prepack_int4_weight(q, s, z, group_size=128)  # once, at load time
    y = squash_ops.w4a16_gemm_cpu_prepacked(x, packed, sp, zp, n=N, group_size=128)  # every forward

The GEMMs compute what ``w4a16_gemm`` / ``w8a16_gemm`` compute on the canonical weights (float32
accumulation, bias added in float32, one rounding to x.dtype); ``cpu_unprepack_*`` gives the
canonical tensors back bit for bit. Any N and K the canonical format allows (N is padded to whole
16-column panels); CPU tensors only. The CPU path the kernels take (AVX2 or scalar) is chosen at run
time; ``squash_ops.cpu.use_isa`` forces one. Never store these tensors in a checkpoint.
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = [
    "cpu_prepack_int4_weight",
    "cpu_unprepack_int4_weight",
    "cpu_prepack_int8_weight",
    "cpu_unprepack_int8_weight",
    "w4a16_gemm_cpu_prepacked",
    "w8a16_gemm_cpu_prepacked",
]

_PANEL = 16  # output columns per panel (csrc/kernels/cpu/woq.h)


def cpu_prepack_int4_weight(
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    group_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Canonical int4 weight -> CPU prepacked layout.

    qweight: uint8 [N, K/2] (``quantize_int4_weight``); scales: [N, K/g] float32/float16/bfloat16;
    zeros: uint8 [N, K/g] or None (symmetric, z = 8); group_size: 32, 64, 128, -1 or K. Returns
    ``(packed uint8 [ceil(N/16), K, 8], scales float32 [ceil(N/16), K/g, 16],
    zeros uint8 [ceil(N/16), K/g, 16] or None)``.
    """
    packed, sp, zp = torch.ops.squash.cpu_prepack_int4_weight(qweight, scales, zeros, group_size)
    return packed, sp, (zp if zeros is not None else None)


def cpu_unprepack_int4_weight(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    n: int,
    k: int,
    group_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inverse of ``cpu_prepack_int4_weight`` for an [n, k] weight: ``(qweight uint8 [n, k/2],
    scales float32 [n, k/g], zeros uint8 [n, k/g] or None)``."""
    q, s, z = torch.ops.squash.cpu_unprepack_int4_weight(packed, scales, zeros, n, k, group_size)
    return q, s, (z if zeros is not None else None)


def cpu_prepack_int8_weight(qweight: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical int8 weight -> CPU prepacked layout. qweight: int8 [N, K]; scales: [N]
    float32/float16/bfloat16. Returns ``(packed int8 [ceil(N/16), K, 16], scales float32 [ceil(N/16), 16])``."""
    return torch.ops.squash.cpu_prepack_int8_weight(qweight, scales)


def cpu_unprepack_int8_weight(packed: torch.Tensor, scales: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``cpu_prepack_int8_weight`` for N = ``n``: ``(qweight int8 [n, K], scales float32 [n])``."""
    return torch.ops.squash.cpu_unprepack_int8_weight(packed, scales, n)


def w4a16_gemm_cpu_prepacked(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    n: int,
    group_size: int = 128,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``w4a16_gemm`` on CPU-prepacked weights: ``x @ W.T + bias``, float32 accumulation, rounded once.

    x: [..., K] float16/bfloat16 (contiguous last dim); packed, scales, zeros from
    ``cpu_prepack_int4_weight`` (zeros None: symmetric); n: out features N; bias: [N] x.dtype or
    None. Returns [..., N] x.dtype. Zeros edited after prepacking to a value above 15 make their
    output channel NaN (the kernels check them once per group, no per-call scan), as on CUDA.
    """
    return torch.ops.squash.w4a16_gemm_cpu_prepacked(x, packed, scales, zeros, n, group_size, bias)


def w8a16_gemm_cpu_prepacked(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    n: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``w8a16_gemm`` on CPU-prepacked weights (``cpu_prepack_int8_weight``). x: [..., K]
    float16/bfloat16; n: out features N; bias: [N] x.dtype or None. Returns [..., N] x.dtype."""
    return torch.ops.squash.w8a16_gemm_cpu_prepacked(x, packed, scales, n, bias)


# ---- fake (meta) kernels: shapes and dtypes only, for torch.compile and opcheck ----


def _panels(n: int) -> int:
    return -(-n // _PANEL)


def _groups(group_size: int, k: int) -> int:
    return 1 if group_size == -1 else k // group_size


@torch.library.register_fake("squash::cpu_prepack_int4_weight")
def _(qweight, scales, zeros, group_size):
    _checks.cpu_prepack_int4_weight(qweight, scales, zeros, group_size)
    n, k = qweight.shape[0], 2 * qweight.shape[1]
    p, groups = _panels(n), _groups(group_size, k)
    return (
        qweight.new_empty((p, k, 8)),
        qweight.new_empty((p, groups, _PANEL), dtype=torch.float32),
        qweight.new_empty((p, groups, _PANEL)),
    )


@torch.library.register_fake("squash::cpu_unprepack_int4_weight")
def _(packed, scales, zeros, n, k, group_size):
    _checks.cpu_unprepack_int4_weight(packed, scales, zeros, n, k, group_size)
    groups = _groups(group_size, k)
    return packed.new_empty((n, k // 2)), scales.new_empty((n, groups)), packed.new_empty((n, groups))


@torch.library.register_fake("squash::cpu_prepack_int8_weight")
def _(qweight, scales):
    _checks.cpu_prepack_int8_weight(qweight, scales)
    n, k = qweight.shape
    return qweight.new_empty((_panels(n), k, _PANEL)), qweight.new_empty((_panels(n), _PANEL), dtype=torch.float32)


@torch.library.register_fake("squash::cpu_unprepack_int8_weight")
def _(packed, scales, n):
    _checks.cpu_unprepack_int8_weight(packed, scales, n)
    return packed.new_empty((n, packed.shape[1])), scales.new_empty((n,))


@torch.library.register_fake("squash::w4a16_gemm_cpu_prepacked")
def _(x, packed, scales, zeros, n, group_size, bias=None):
    _checks.w4a16_gemm_cpu_prepacked(x, packed, scales, zeros, n, group_size, bias)
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("squash::w8a16_gemm_cpu_prepacked")
def _(x, packed, scales, n, bias=None):
    _checks.w8a16_gemm_cpu_prepacked(x, packed, scales, n, bias)
    return x.new_empty((*x.shape[:-1], n))
