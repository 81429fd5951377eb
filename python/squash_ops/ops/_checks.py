"""Argument checks of the fake (meta) kernels: the metadata checks of csrc/ops/*_checks.cpp
(dtypes, shapes, group sizes, K, devices, contiguity) with the same messages, so that
``torch.compile`` and meta tensors refuse what the real kernels refuse.

Two reasons the fakes must check, not just compute output shapes:

* under ``torch.compile`` the fake kernel is the only code that sees the shapes at trace time;
* the dispatcher runs the fake kernel whenever *any* argument is on ``meta`` (Meta outranks CPU),
  so ``w8a16_gemm(cpu_x, meta_qweight, meta_scales)`` would otherwise return uninitialised memory
  on the CPU instead of an error.

Checks that read values (zero points <= 15, static scales > 0, cu_seqlens monotonic) need the data
and stay in the real kernels. Each function here mirrors one C++ ``check_*_args``; keep them in
step (tests/test_no_garbage.py compares the two messages case by case).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import torch

HALF = (torch.float16, torch.bfloat16)
FLOATS = (torch.float32, torch.float16, torch.bfloat16)
HALF_OR_FLOAT = (*HALF, torch.float32)  # the norm and attention ops list x's dtypes in this order
_INT4_GROUPS = (32, 64, 128)
_TILE_N, _TILE_BYTES = 8, 512
TILE_K = {4: 128, 8: 64}  # csrc/kernels/gemm/prepacked_layout.h
MAX_HEAD_DIM = 256


def fail(op: str, msg: str):
    raise ValueError(f"squash::{op}: {msg}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def shape(t: torch.Tensor) -> list:
    return list(t.shape)


def check_dtype(op: str, arg: str, t: torch.Tensor, allowed: Iterable[torch.dtype]) -> None:
    allowed = tuple(dict.fromkeys(allowed))
    if t.dtype not in allowed:
        fail(op, f"{arg} must be {' or '.join(map(dtype_name, allowed))}, got {dtype_name(t.dtype)}")


def check_same_device(op: str, arg: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        fail(op, f"{arg} must be on {ref.device} like {ref_name}, got {t.device}")


def check_contiguous(op: str, arg: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        fail(op, f"{arg} must be contiguous (call .contiguous() first), got strides {list(t.stride())} "
                 f"for shape {shape(t)}")


def check_last_dim_contiguous(op: str, arg: str, t: torch.Tensor) -> None:
    if t.dim() < 1 or t.stride(-1) != 1:
        fail(op, f"{arg} must have a contiguous last dimension (stride 1), got strides {list(t.stride())}")


def check_shape_is(op: str, arg: str, t: torch.Tensor, expected: Sequence[int], symbolic: str,
                   dtype_desc: str) -> None:
    if shape(t) != list(expected):
        fail(op, f"{arg} must be {symbolic} = {list(expected)} {dtype_desc}, got shape {shape(t)}")


def check_dim(op: str, arg: str, t: torch.Tensor, dim: int, layout: str) -> None:
    if t.dim() != dim:
        fail(op, f"{arg} must be {dim}-D {layout}, got shape {shape(t)}")


def check_size(op: str, arg: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        fail(op, f"{arg}.shape[{dim}] must be {expected} ({what}), got shape {shape(t)}")


def static_scale(op: str, scale: torch.Tensor, x: torch.Tensor) -> None:
    """checks.h check_static_scale without the value (> 0 and finite), which needs the data."""
    check_same_device(op, "scale", scale, x, "x")
    check_dtype(op, "scale", scale, (torch.float32,))
    if scale.numel() != 1:
        fail(op, f"scale must have exactly 1 element (a static per-tensor scale), got shape {shape(scale)}")


def check_on(op: str, ref: torch.Tensor, ref_name: str, **tensors: torch.Tensor | None) -> None:
    """Every given tensor (None skipped) on ``ref``'s device and contiguous."""
    for arg, t in tensors.items():
        if t is not None:
            check_same_device(op, arg, t, ref, ref_name)
            check_contiguous(op, arg, t)


# ---- weight formats (formats_checks.cpp) ----


def check_int4_group_size(op: str, group_size: int, k: int) -> int:
    if k % 2:
        fail(op, f"K must be even for int4 (two values per byte), got K={k}")
    if group_size not in (*_INT4_GROUPS, -1, k):
        fail(op, f"group_size must be 32, 64, 128, -1 (per-channel) or K={k}, got {group_size}")
    g = k if group_size == -1 else group_size
    if k % g:
        fail(op, f"group_size {g} must divide K={k} (K % group_size = {k % g}); use group_size=-1 for per-channel")
    return g


def check_int4_weight(op, qweight, scales, zeros, n, k, g, scale_dtypes) -> None:
    check_dtype(op, "qweight", qweight, (torch.uint8,))
    check_shape_is(op, "qweight", qweight, (n, k // 2), "[N, K/2]", "uint8")
    check_dtype(op, "scales", scales, scale_dtypes)
    check_shape_is(op, "scales", scales, (n, k // g), "[N, K/group_size]", dtype_name(scales.dtype))
    check_same_device(op, "scales", scales, qweight, "qweight")
    if zeros is not None:
        check_dtype(op, "zeros", zeros, (torch.uint8,))
        check_shape_is(op, "zeros", zeros, (n, k // g), "[N, K/group_size]", "uint8")
        check_same_device(op, "zeros", zeros, qweight, "qweight")


def _check_weight_2d(op: str, arg: str, t: torch.Tensor) -> None:
    if t.dim() != 2:
        fail(op, f"{arg} must be 2-D [N, K] (nn.Linear.weight [out, in]), got shape {shape(t)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        fail(op, f"{arg} must not be empty, got shape {shape(t)}")


def quantize_weight(op: str, weight: torch.Tensor) -> None:
    check_dtype(op, "weight", weight, FLOATS)
    _check_weight_2d(op, "weight", weight)


def _channel_scales(op: str, scales, qweight) -> None:
    """scales [N] of any float dtype, on qweight's device (the int8 weight's per-channel scales)."""
    check_dtype(op, "scales", scales, FLOATS)
    check_shape_is(op, "scales", scales, (qweight.shape[0],), "[N]", dtype_name(scales.dtype))
    check_same_device(op, "scales", scales, qweight, "qweight")


def _nonempty_2d(op: str, qweight, layout: str) -> None:
    if qweight.dim() != 2 or qweight.shape[0] == 0 or qweight.shape[1] == 0:
        fail(op, f"qweight must be a non-empty 2-D {layout}, got shape {shape(qweight)}")


def _canonical_int4(op: str, qweight, scales, zeros, group_size, layout: str) -> int:
    """The canonical int4 weight (quantize_int4_weight's outputs); returns the group size."""
    check_dtype(op, "qweight", qweight, (torch.uint8,))
    _nonempty_2d(op, qweight, layout)
    n, k = qweight.shape[0], 2 * qweight.shape[1]
    g = check_int4_group_size(op, group_size, k)
    check_int4_weight(op, qweight, scales, zeros, n, k, g, FLOATS)
    return g


def dequantize_int8_weight(qweight, scales) -> None:
    op = "dequantize_int8_weight"
    check_dtype(op, "qweight", qweight, (torch.int8,))
    _check_weight_2d(op, "qweight", qweight)
    _channel_scales(op, scales, qweight)


def dequantize_int4_weight(qweight, scales, zeros, group_size) -> int:
    return _canonical_int4("dequantize_int4_weight", qweight, scales, zeros, group_size, "[N, K/2] uint8")


def pack_int4(values) -> None:
    check_dtype("pack_int4", "values", values, (torch.uint8,))
    if values.dim() < 1 or values.shape[-1] == 0 or values.shape[-1] % 2:
        fail("pack_int4", f"values must be [..., K] with K even and > 0, got shape {shape(values)}")


def unpack_int4(packed) -> None:
    check_dtype("unpack_int4", "packed", packed, (torch.uint8,))
    if packed.dim() < 1 or packed.shape[-1] == 0:
        fail("unpack_int4", f"packed must be [..., K/2] with K/2 > 0, got shape {shape(packed)}")


# ---- quantized GEMMs (gemm_checks.cpp) ----


def _activation(op: str, arg: str, x: torch.Tensor, dtypes) -> int:
    check_dtype(op, arg, x, dtypes)
    if x.dim() < 1:
        fail(op, f"{arg} must be [..., K], got a 0-D tensor")
    if x.shape[-1] == 0:
        fail(op, f"{arg} must have K = shape[-1] > 0, got shape {shape(x)}")
    check_last_dim_contiguous(op, arg, x)
    return x.shape[-1]


def _bias(op, bias, n, dtypes, x, x_name) -> None:
    if bias is None:
        return
    check_dtype(op, "bias", bias, dtypes)
    check_shape_is(op, "bias", bias, (n,), "[N]", dtype_name(bias.dtype))
    check_on(op, x, x_name, bias=bias)


def _int8_weight(op, qweight, k, x, x_name) -> int:
    check_dtype(op, "qweight", qweight, (torch.int8,))
    if qweight.dim() != 2 or qweight.shape[0] == 0:
        fail(op, f"qweight must be a non-empty 2-D [N, K] int8 with K={k}, got shape {shape(qweight)}")
    check_shape_is(op, "qweight", qweight, (qweight.shape[0], k), "[N, K]", "int8")
    check_on(op, x, x_name, qweight=qweight)
    return qweight.shape[0]


def w8a16_gemm(x, qweight, scales, bias) -> int:
    op = "w8a16_gemm"
    k = _activation(op, "x", x, HALF)
    n = _int8_weight(op, qweight, k, x, "x")
    check_dtype(op, "scales", scales, (torch.float32, x.dtype))
    check_shape_is(op, "scales", scales, (n,), "[N]", dtype_name(scales.dtype))
    check_on(op, x, "x", scales=scales)
    _bias(op, bias, n, (x.dtype,), x, "x")
    return n


def w4a16_gemm(x, qweight, scales, zeros, group_size, bias) -> int:
    op = "w4a16_gemm"
    k = _activation(op, "x", x, HALF)
    g = check_int4_group_size(op, group_size, k)
    if qweight.dim() != 2 or qweight.shape[0] == 0:
        fail(op, f"qweight must be a non-empty 2-D [N, K/2] uint8 with K/2={k // 2}, got shape {shape(qweight)}")
    n = qweight.shape[0]
    check_int4_weight(op, qweight, scales, zeros, n, k, g, (torch.float32, x.dtype))
    check_on(op, x, "x", qweight=qweight, scales=scales, zeros=zeros)
    _bias(op, bias, n, (x.dtype,), x, "x")
    return n


def quantize_activation_int8(x, scale) -> None:
    op = "quantize_activation_int8"
    _activation(op, "x", x, FLOATS)
    if scale is not None:
        static_scale(op, scale, x)


def quantize_activation_int8_transformed(x, input_mul, rotation, scale) -> None:
    op = "quantize_activation_int8_transformed"
    k = _activation(op, "x", x, FLOATS)
    if input_mul is not None:
        check_same_device(op, "input_mul", input_mul, x, "x")
        check_dtype(op, "input_mul", input_mul, (torch.float32,))
        if input_mul.dim() != 1 or input_mul.shape[0] != k:
            fail(op, f"input_mul must be [K] = [{k}] float32, got shape {shape(input_mul)}")
        check_contiguous(op, "input_mul", input_mul)
    if not (rotation == 0 or (rotation >= 2 and rotation & (rotation - 1) == 0 and k % rotation == 0)):
        fail(op, f"rotation must be 0 (none) or a power of two >= 2 dividing K = {k}, got {rotation}")
    if scale is not None:
        static_scale(op, scale, x)


def w8a8_gemm(x_q, x_scales, qweight, w_scales, bias, out_dtype) -> int:
    op = "w8a8_gemm"
    if out_dtype not in FLOATS:
        fail(op, f"out_dtype must be float16 or bfloat16 or float32, got {dtype_name(out_dtype)}")
    k = _activation(op, "x_q", x_q, (torch.int8,))
    n = _int8_weight(op, qweight, k, x_q, "x_q")
    check_dtype(op, "x_scales", x_scales, (torch.float32,))
    rows = list(x_q.shape[:-1])
    if x_scales.numel() != 1 and shape(x_scales) != rows:
        fail(op, f"x_scales must be x_q.shape[:-1] = {rows} float32 (per token) or have 1 element "
                 f"(per tensor), got shape {shape(x_scales)}")
    check_on(op, x_q, "x_q", x_scales=x_scales)
    check_dtype(op, "w_scales", w_scales, (torch.float32,))
    if w_scales.numel() != 1 and shape(w_scales) != [n]:
        fail(op, f"w_scales must be [N] = [{n}] float32 (per channel) or have 1 element (per tensor), "
                 f"got shape {shape(w_scales)}")
    check_on(op, x_q, "x_q", w_scales=w_scales)
    _bias(op, bias, n, (torch.float32,) if out_dtype == torch.float32 else (out_dtype, torch.float32), x_q, "x_q")
    return n


# ---- prepacked layout (prepack_checks.cpp) ----


def tiles_k(bits: int, k: int) -> int:
    return -(-k // TILE_K[bits])


def _multiple_of_8(op: str, what: str, v: int) -> None:
    if v <= 0 or v % 8:
        fail(op, f"{what} must be a positive multiple of 8 for the prepacked layout, got {v}")


def _packed(op: str, packed, bits: int, k: int) -> int:
    check_dtype(op, "packed", packed, (torch.uint8,))
    kt = tiles_k(bits, k)
    if packed.dim() != 3 or packed.shape[0] == 0 or packed.shape[1] != kt or packed.shape[2] != _TILE_BYTES:
        fail(op, f"packed must be [N/8, ceil(K/{TILE_K[bits]}), {_TILE_BYTES}] = [N/8, {kt}, {_TILE_BYTES}] "
                 f"uint8 for K={k} (from prepack_int{bits}_weight), got shape {shape(packed)}")
    return packed.shape[0] * _TILE_N


def _packed_group_tensor(op, arg, t, dtype, n, groups) -> None:
    check_dtype(op, arg, t, (dtype,))
    check_shape_is(op, arg, t, (n // _TILE_N, groups, _TILE_N), "[N/8, K/group_size, 8]", dtype_name(dtype))


def prepack_int4_weight(qweight, scales, zeros, group_size) -> int:
    op = "prepack_int4_weight"
    check_dtype(op, "qweight", qweight, (torch.uint8,))
    if qweight.dim() != 2:
        fail(op, f"qweight must be 2-D [N, K/2] uint8 (quantize_int4_weight), got shape {shape(qweight)}")
    n, k = qweight.shape[0], 2 * qweight.shape[1]
    _multiple_of_8(op, "N = qweight.shape[0]", n)
    _multiple_of_8(op, "K = 2 * qweight.shape[1]", k)
    g = check_int4_group_size(op, group_size, k)
    check_int4_weight(op, qweight, scales, zeros, n, k, g, FLOATS)
    return g


def prepack_int8_weight(qweight, scales) -> None:
    op = "prepack_int8_weight"
    check_dtype(op, "qweight", qweight, (torch.int8,))
    if qweight.dim() != 2:
        fail(op, f"qweight must be 2-D [N, K] int8 (quantize_int8_weight), got shape {shape(qweight)}")
    _multiple_of_8(op, "N = qweight.shape[0]", qweight.shape[0])
    _multiple_of_8(op, "K = qweight.shape[1]", qweight.shape[1])
    _channel_scales(op, scales, qweight)


def unprepack_int4_weight(packed, scales, zeros, k, group_size) -> int:
    op = "unprepack_int4_weight"
    _multiple_of_8(op, "k", k)
    g = check_int4_group_size(op, group_size, k)
    n = _packed(op, packed, 4, k)
    _packed_group_tensor(op, "scales", scales, torch.float32, n, k // g)
    check_same_device(op, "scales", scales, packed, "packed")
    if zeros is not None:
        _packed_group_tensor(op, "zeros", zeros, torch.uint8, n, k // g)
        check_same_device(op, "zeros", zeros, packed, "packed")
    return g


def unprepack_int8_weight(packed, scales, k) -> None:
    op = "unprepack_int8_weight"
    _multiple_of_8(op, "k", k)
    n = _packed(op, packed, 8, k)
    check_dtype(op, "scales", scales, (torch.float32,))
    check_shape_is(op, "scales", scales, (n,), "[N]", "float32")
    check_same_device(op, "scales", scales, packed, "packed")


def _prepacked_x(op: str, x, k: int) -> None:
    check_dtype(op, "x", x, HALF)
    if x.dim() < 1:
        fail(op, "x must be [..., K], got a 0-D tensor")
    check_last_dim_contiguous(op, "x", x)
    _multiple_of_8(op, "k", k)
    if x.shape[-1] != k:
        fail(op, f"x must be [..., K] with K = k = {k} (the prepacked weight's in_features), got shape {shape(x)}")


def w4a16_gemm_prepacked(x, packed, scales, zeros, k, group_size, bias) -> int:
    op = "w4a16_gemm_prepacked"
    _prepacked_x(op, x, k)
    g = check_int4_group_size(op, group_size, k)
    n = _packed(op, packed, 4, k)
    check_on(op, x, "x", packed=packed)
    _packed_group_tensor(op, "scales", scales, torch.float32, n, k // g)
    check_on(op, x, "x", scales=scales)
    if zeros is not None:
        _packed_group_tensor(op, "zeros", zeros, torch.uint8, n, k // g)
        check_on(op, x, "x", zeros=zeros)
    _bias(op, bias, n, (x.dtype,), x, "x")
    return n


def w8a16_gemm_prepacked(x, packed, scales, k, bias) -> int:
    op = "w8a16_gemm_prepacked"
    _prepacked_x(op, x, k)
    n = _packed(op, packed, 8, k)
    check_on(op, x, "x", packed=packed)
    check_dtype(op, "scales", scales, (torch.float32,))
    check_shape_is(op, "scales", scales, (n,), "[N]", "float32")
    check_on(op, x, "x", scales=scales)
    _bias(op, bias, n, (x.dtype,), x, "x")
    return n


# ---- CPU prepacked weight-only GEMMs (cpu_woq_checks.cpp) ----

WOQ_PANEL = 16  # csrc/kernels/cpu/woq.h kWoqPanel


def _woq_panels(n: int) -> int:
    return -(-n // WOQ_PANEL)


def _positive(op: str, what: str, v: int) -> None:
    if v <= 0:
        fail(op, f"{what} must be > 0, got {v}")


def _layout_tensor(op, arg, t, dtype, expected, symbolic, ref, ref_name) -> None:
    check_dtype(op, arg, t, (dtype,))
    check_shape_is(op, arg, t, expected, symbolic, dtype_name(dtype))
    check_same_device(op, arg, t, ref, ref_name)
    check_contiguous(op, arg, t)


def _cpu_int4_layout(op, packed, scales, zeros, n, k, g, ref, ref_name) -> None:
    p = _woq_panels(n)
    _layout_tensor(op, "packed", packed, torch.uint8, (p, k, 8), "[ceil(n/16), K, 8] (from cpu_prepack_int4_weight)",
                   ref, ref_name)
    _layout_tensor(op, "scales", scales, torch.float32, (p, k // g, WOQ_PANEL), "[ceil(n/16), K/group_size, 16]",
                   ref, ref_name)
    if zeros is not None:
        _layout_tensor(op, "zeros", zeros, torch.uint8, (p, k // g, WOQ_PANEL), "[ceil(n/16), K/group_size, 16]",
                       ref, ref_name)


def _cpu_int8_layout(op, packed, scales, n, k, ref, ref_name) -> None:
    p = _woq_panels(n)
    _layout_tensor(op, "packed", packed, torch.int8, (p, k, WOQ_PANEL), "[ceil(n/16), K, 16] (from cpu_prepack_int8_weight)",
                   ref, ref_name)
    _layout_tensor(op, "scales", scales, torch.float32, (p, WOQ_PANEL), "[ceil(n/16), 16]", ref, ref_name)


def _cpu_x(op: str, x) -> int:
    check_dtype(op, "x", x, HALF)
    if x.dim() < 1 or x.shape[-1] == 0:
        fail(op, f"x must be [..., K] with K > 0, got shape {shape(x)}")
    check_last_dim_contiguous(op, "x", x)
    return x.shape[-1]


def _cpu_bias(op, bias, n, x) -> None:
    if bias is not None:
        _layout_tensor(op, "bias", bias, x.dtype, (n,), "[n]", x, "x")


def cpu_prepack_int4_weight(qweight, scales, zeros, group_size) -> int:
    return _canonical_int4("cpu_prepack_int4_weight", qweight, scales, zeros, group_size,
                           "[N, K/2] uint8 (quantize_int4_weight)")


def cpu_prepack_int8_weight(qweight, scales) -> None:
    op = "cpu_prepack_int8_weight"
    check_dtype(op, "qweight", qweight, (torch.int8,))
    _nonempty_2d(op, qweight, "[N, K] int8 (quantize_int8_weight)")
    _channel_scales(op, scales, qweight)


def cpu_unprepack_int4_weight(packed, scales, zeros, n, k, group_size) -> int:
    op = "cpu_unprepack_int4_weight"
    _positive(op, "n", n)
    _positive(op, "k", k)
    g = check_int4_group_size(op, group_size, k)
    _cpu_int4_layout(op, packed, scales, zeros, n, k, g, packed, "packed")
    return g


def cpu_unprepack_int8_weight(packed, scales, n) -> None:
    op = "cpu_unprepack_int8_weight"
    _positive(op, "n", n)
    if packed.dim() != 3:
        fail(op, f"packed must be 3-D [ceil(n/16), K, 16] int8, got shape {shape(packed)}")
    _cpu_int8_layout(op, packed, scales, n, packed.shape[1], packed, "packed")


def w4a16_gemm_cpu_prepacked(x, packed, scales, zeros, n, group_size, bias) -> None:
    op = "w4a16_gemm_cpu_prepacked"
    k = _cpu_x(op, x)
    _positive(op, "n", n)
    g = check_int4_group_size(op, group_size, k)
    _cpu_int4_layout(op, packed, scales, zeros, n, k, g, x, "x")
    _cpu_bias(op, bias, n, x)


def w8a16_gemm_cpu_prepacked(x, packed, scales, n, bias) -> None:
    op = "w8a16_gemm_cpu_prepacked"
    k = _cpu_x(op, x)
    _positive(op, "n", n)
    _cpu_int8_layout(op, packed, scales, n, k, x, "x")
    _cpu_bias(op, bias, n, x)


# ---- norms (norm_checks.cpp) ----


def _affine(op, arg, t, x) -> None:
    hidden = x.shape[-1]
    check_same_device(op, arg, t, x, "x")
    if t.dim() != 1 or t.shape[0] != hidden:
        fail(op, f"{arg} must be 1-D [hidden={hidden}] (x has shape {shape(x)}), got shape {shape(t)}")
    if t.dtype not in (x.dtype, torch.float32):
        like = "" if x.dtype == torch.float32 else " (like x) or float32"
        fail(op, f"{arg} must be {dtype_name(x.dtype)}{like}, got {dtype_name(t.dtype)}")
    check_contiguous(op, arg, t)


def norm(op: str, x, residual, weight, bias, eps: float, scale) -> None:
    if x.dim() < 1:
        fail(op, "x must have at least 1 dimension ([..., hidden]), got a 0-D tensor")
    check_dtype(op, "x", x, HALF_OR_FLOAT)
    if x.shape[-1] == 0:
        fail(op, f"x.shape[-1] (hidden) must be > 0, got shape {shape(x)}")
    check_contiguous(op, "x", x)
    if residual is not None:
        check_same_device(op, "residual", residual, x, "x")
        if shape(residual) != shape(x):
            fail(op, f"residual must have the shape of x {shape(x)}, got shape {shape(residual)}")
        if residual.dtype != x.dtype:
            fail(op, f"residual must be {dtype_name(x.dtype)} like x, got {dtype_name(residual.dtype)}")
        check_contiguous(op, "residual", residual)
    if weight is not None:
        _affine(op, "weight", weight, x)
    if bias is not None:
        _affine(op, "bias", bias, x)
    if not (math.isfinite(eps) and eps >= 0):
        fail(op, f"eps must be finite and >= 0, got {eps:g}")
    if scale is not None:
        static_scale(op, scale, x)


# ---- attention (attention_checks.cpp) ----


def softmax_scale(op: str, scale: float | None) -> None:
    """Finite and > 0 as the float32 the kernels compute with (1e-50 rounds to 0, 1e39 to inf)."""
    if scale is None:
        return
    try:
        as_float32 = struct.unpack("f", struct.pack("f", scale))[0]
    except OverflowError:
        as_float32 = math.inf
    if not (math.isfinite(as_float32) and as_float32 > 0):
        fail(op, f"softmax_scale must be a finite number > 0 (or None for 1/sqrt(head_dim)), got {scale:g}")


def _qkv(op, q, k, v, k_name, v_name, dim, q_layout, kv_layout) -> None:
    check_dtype(op, "q", q, HALF_OR_FLOAT)
    for name, t in ((k_name, k), (v_name, v)):
        if t.dtype != q.dtype:
            fail(op, f"{name} must have q's dtype {dtype_name(q.dtype)}, got {dtype_name(t.dtype)}")
    check_dim(op, "q", q, dim, q_layout)
    check_dim(op, k_name, k, dim, kv_layout)
    check_dim(op, v_name, v, dim, kv_layout)
    check_same_device(op, k_name, k, q, "q")
    check_same_device(op, v_name, v, q, "q")
    if shape(k) != shape(v):
        fail(op, f"{v_name} must have {k_name}'s shape {shape(k)}, got {shape(v)}")
    hd, heads = dim - 1, dim - 2
    d = q.shape[hd]
    if not 1 <= d <= MAX_HEAD_DIM:
        fail(op, f"head_dim (q.shape[{hd}]) must be in [1, {MAX_HEAD_DIM}], got {d}")
    check_size(op, k_name, k, hd, d, "head_dim of q")
    if dim == 4:
        check_size(op, k_name, k, 0, q.shape[0], "batch of q")
    hq, hkv = q.shape[heads], k.shape[heads]
    if hq == 0:
        fail(op, f"q must have at least one head, got shape {shape(q)}")
    if hkv == 0:
        fail(op, f"{k_name} must have at least one head, got shape {shape(k)}")
    if hq % hkv:
        fail(op, f"heads of q ({hq}) must be a multiple of heads of {k_name} ({hkv})")
    for name, t in (("q", q), (k_name, k), (v_name, v)):
        check_last_dim_contiguous(op, name, t)


def _index_tensor(op, arg, t, length, what, q) -> None:
    check_dtype(op, arg, t, (torch.int32,))
    check_dim(op, arg, t, 1, what)
    check_same_device(op, arg, t, q, "q")
    if length >= 0:
        check_size(op, arg, t, 0, length, what)
    elif t.shape[0] < 1:
        fail(op, f"{arg} must have {what} >= 1 entries, got shape {shape(t)}")
    check_contiguous(op, arg, t)


def attention(q, k, v, scale) -> None:
    _qkv("attention", q, k, v, "k", "v", 4, "[batch, seqlen_q, heads_q, head_dim]",
         "[batch, seqlen_k, heads_kv, head_dim]")
    softmax_scale("attention", scale)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale) -> None:
    op = "attention_varlen"
    _qkv(op, q, k, v, "k", "v", 3, "[total_q, heads_q, head_dim]", "[total_k, heads_kv, head_dim]")
    _index_tensor(op, "cu_seqlens_q", cu_seqlens_q, -1, "[batch + 1]", q)
    _index_tensor(op, "cu_seqlens_k", cu_seqlens_k, cu_seqlens_q.shape[0], "[batch + 1] like cu_seqlens_q", q)
    if max_seqlen_q < 0:
        fail(op, f"max_seqlen_q must be >= 0, got {max_seqlen_q}")
    if max_seqlen_k < 0:
        fail(op, f"max_seqlen_k must be >= 0, got {max_seqlen_k}")
    softmax_scale(op, scale)


def attention_decode(q, k_cache, v_cache, cache_seqlens, scale) -> None:
    op = "attention_decode"
    _qkv(op, q, k_cache, v_cache, "k_cache", "v_cache", 4, "[batch, seqlen_q, heads_q, head_dim]",
         "[batch, max_seqlen, heads_kv, head_dim]")
    _index_tensor(op, "cache_seqlens", cache_seqlens, q.shape[0], "[batch]", q)
    softmax_scale(op, scale)
