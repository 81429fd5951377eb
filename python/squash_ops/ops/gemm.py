"""Quantized GEMMs: weight-only int8/int4 (``x`` in float16/bfloat16) and W8A8 (int8 x int8).

Weights use the canonical layout of docs/FORMATS.md (produced by ``squash_ops.quantize_*``):
``W`` is ``[N, K]`` like ``nn.Linear.weight``; ``x`` is ``[..., K]`` with any leading dims (0 rows
allowed) and a contiguous last dimension; the outputs are ``[..., N]``. Weight tensors must be
contiguous and on ``x``'s device. Accumulation is float32 (int32 for W8A8); the output is rounded
once.
"""

from __future__ import annotations

import functools

import torch

from . import _checks

__all__ = ["w8a16_gemm", "w4a16_gemm", "quantize_activation_int8", "quantize_activation_int8_transformed", "w8a8_gemm"]


def w8a16_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ (qweight * scales[:, None]).T + bias``, computed in float32, rounded once to x.dtype.

    x: [..., K] float16/bfloat16; qweight: int8 [N, K]; scales: [N] float32 or x.dtype;
    bias: [N] x.dtype or None. Returns [..., N] x.dtype.
    """
    return torch.ops.squash.w8a16_gemm(x, qweight, scales, bias)


def w4a16_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    group_size: int = 128,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ W.T + bias`` with ``W[n, k] = (q[n, k] - z[n, k // g]) * s[n, k // g]``, in float32,
    rounded once to x.dtype.

    x: [..., K] float16/bfloat16 (K even); qweight: uint8 [N, K/2] (two 4-bit values per byte,
    element 2j in the low nibble); scales: [N, K/g] float32 or x.dtype; zeros: uint8 [N, K/g] in
    0..15 or None (symmetric, z = 8); group_size g: 32, 64, 128, -1 (per-channel) or K, dividing K;
    bias: [N] x.dtype or None. Returns [..., N] x.dtype.

    A zero point above 15 is refused on the CPU; on CUDA (read on the device, no sync) it makes its
    output channel NaN for every token.
    """
    return torch.ops.squash.w4a16_gemm(x, qweight, scales, zeros, group_size, bias)


def quantize_activation_int8(
    x: torch.Tensor, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of activations ``x`` [..., K] (float32/float16/bfloat16).

    Dynamic (``scale=None``): per row (token) ``s = max|x| / 127``, ``inv = 127 / max|x|`` (0 for
    an all-zero row). Static: ``scale`` float32 with one element (must be > 0), ``inv = 1 / scale``
    and the returned scales are filled with it. ``q = clamp(rne(x.float() * inv), -127, 127)``.
    Special rows as in :func:`squash_ops.layer_norm_quant`: a NaN gives the row ``s = NaN``, a
    tiny row (max below ~4e-37) quantizes within half a step, on the CPU and on CUDA alike.
    Returns ``(q int8 [..., K], scales float32 x.shape[:-1])``.
    """
    return torch.ops.squash.quantize_activation_int8(x, scale)


def quantize_activation_int8_transformed(
    x: torch.Tensor,
    input_mul: torch.Tensor | None = None,
    rotation: int = 0,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_activation_int8` of ``y = float32(x) * input_mul`` rotated by normalised
    Hadamard blocks of ``rotation`` channels (W8A8Linear's input transform: smoothing and
    QuaRot-style rotation). input_mul: float32 [K] or None; rotation: 0 (none) or a power of two
    >= 2 dividing K; scale: as in quantize_activation_int8 (None: dynamic per token).

    CPU: one pass per row (the fast Walsh-Hadamard transform, then the quantizer, through a
    float32 row buffer). CUDA: the multiply, the block matmul and quantize_activation_int8 as
    separate ops. The two round the rotation differently (butterflies vs a matmul), so their
    float32 y may differ in the last bit and, rarely, a q by one step.
    """
    return torch.ops.squash.quantize_activation_int8_transformed(x, input_mul, rotation, scale)


@functools.lru_cache(maxsize=None)
def _hadamard_on(block: int, device: torch.device) -> torch.Tensor:
    """The normalised Hadamard matrix on ``device``, built once per (block, device): the
    composite runs it on every call of a rotated layer."""
    from ..quant.rotation import hadamard  # quant imports ops: import at call time

    return hadamard(block).to(device)


def _transformed_composite(x, input_mul, rotation, scale):
    from ..quant.rotation import rotate_blocks

    y = x.float()
    if input_mul is not None:
        y = y * input_mul
    if rotation:
        y = rotate_blocks(y, _hadamard_on(rotation, y.device))
    return torch.ops.squash.quantize_activation_int8(y, scale)


@torch.library.register_kernel("squash::quantize_activation_int8_transformed", "cuda")
def _(x, input_mul, rotation, scale=None):
    _checks.quantize_activation_int8_transformed(x, input_mul, rotation, scale)
    return _transformed_composite(x, input_mul, rotation, scale)


def w8a8_gemm(
    x_q: torch.Tensor,
    x_scales: torch.Tensor,
    qweight: torch.Tensor,
    w_scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """``(x_q @ qweight.T) * x_scales[..., None] * w_scales + bias`` -> out_dtype.

    The int8 product is accumulated exactly (int32); scaling and bias are applied in float32, then
    rounded once. x_q: int8 [..., K]; x_scales: float32 x_q.shape[:-1] (per token) or one element
    (per tensor); qweight: int8 [N, K]; w_scales: float32 [N] (per channel) or one element;
    bias: [N] out_dtype or float32, or None; out_dtype: float16, bfloat16 or float32.
    Returns [..., N] out_dtype.

    On CUDA (CUTLASS int8 tensor cores, the scales and bias fused into the epilogue) K must be a
    multiple of 16 and N of 8; the result is bit-identical to the CPU op's. The kernel config is
    chosen per (M, N, K, GPU); ``SQUASH_W8A8_CONFIG=<name>`` (csrc/kernels/gemm/w8a8_heuristics.h)
    forces one.
    """
    return torch.ops.squash.w8a8_gemm(x_q, x_scales, qweight, w_scales, bias, out_dtype)


# ---- fake (meta) kernels for torch.compile and opcheck: the real kernels' argument checks
# (_checks.py), then the output shapes ----


@torch.library.register_fake("squash::w8a16_gemm")
def _(x, qweight, scales, bias=None):
    n = _checks.w8a16_gemm(x, qweight, scales, bias)
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("squash::w4a16_gemm")
def _(x, qweight, scales, zeros, group_size, bias=None):
    n = _checks.w4a16_gemm(x, qweight, scales, zeros, group_size, bias)
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("squash::quantize_activation_int8")
def _(x, scale=None):
    _checks.quantize_activation_int8(x, scale)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.register_fake("squash::quantize_activation_int8_transformed")
def _(x, input_mul, rotation, scale=None):
    _checks.quantize_activation_int8_transformed(x, input_mul, rotation, scale)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.register_fake("squash::w8a8_gemm")
def _(x_q, x_scales, qweight, w_scales, bias, out_dtype):
    n = _checks.w8a8_gemm(x_q, x_scales, qweight, w_scales, bias, out_dtype)
    return x_q.new_empty((*x_q.shape[:-1], n), dtype=out_dtype)
