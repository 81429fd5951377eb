"""Quantized GEMMs (w8a16, w4a16, W8A8) and quantize_activation_int8.

CPU ops are checked against float64 math written here (dequantize-then-matmul with the same
quantized weights; an int64 product for W8A8) with two bounds:
  - per element: |out - ref| <= err32 + eps_out * (|ref| + err32), where err32 bounds the float32
    computation ((K + 4) * 2^-24 * sum|x||w| for a float32 dot product of length K, plus the
    dequantization and bias roundings) and eps_out = 2^-11 (fp16), 2^-8 (bf16) is the one final
    rounding (half an ulp, relative);
  - rel_mean_err (Marlin's metric) <= 2^-11 + 1e-5 (fp16) and 2^-8 + 1e-5 (bf16): the final
    rounding bounds the mean relative error by eps_out; float32 accumulation adds ~sqrt(K) * 2^-24
    (< 1e-5 for K <= 4160). These are tighter than TARGETS.md's 1e-3 / 4e-3, which the GPU tests
    (kernel vs CPU op) use.
quantize_activation_int8 must equal the formula exactly.
"""

import functools
import os
import pathlib
import re

import pytest
import torch
from helpers import GEMM_REL_MEAN_ERR, rel_mean_err, raises_value_error as _raises

import squash_ops as so

ops = torch.ops.squash
HALF = [torch.float16, torch.bfloat16]
U32 = 2.0**-24
EPS_OUT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: U32}
# Below the normal range the rounding is absolute: half the smallest subnormal step.
TINY_OUT = {torch.float16: 2.0**-25, torch.bfloat16: 2.0**-134, torch.float32: 2.0**-150}
REL_BOUND = {torch.float16: 2.0**-11 + 1e-5, torch.bfloat16: 2.0**-8 + 1e-5, torch.float32: 1e-6}


# ---------------------------------------------------------------- references (written here)
def ref_unpack(packed):
    p = packed.long()
    return torch.stack([p & 15, p >> 4], dim=-1).flatten(-2)


def div32(a, b):
    # torch's `scalar / tensor` is reciprocal-then-multiply: spell out an IEEE float32 division.
    a = a if torch.is_tensor(a) else torch.tensor(float(a))
    b = b if torch.is_tensor(b) else torch.tensor(float(b))
    a, b = torch.broadcast_tensors(a.float(), b.float())
    return torch.div(a.contiguous(), b.contiguous())


def ref_dequant_int8(q, s):
    return q.double() * s.double()[:, None]


def ref_dequant_int4(qweight, scales, zeros, g):
    codes = ref_unpack(qweight).double()
    z = zeros.double() if zeros is not None else torch.full_like(scales, 8, dtype=torch.float64)
    return (codes - z.repeat_interleave(g, 1)) * scales.double().repeat_interleave(g, 1)


def ref_linear(x, w64, bias):
    """float64 x @ w.T + bias and the float32 error bound of the op's computation."""
    x64 = x.double().reshape(-1, x.shape[-1])
    ref = x64 @ w64.T
    absdot = x64.abs() @ w64.abs().T
    if bias is not None:
        ref = ref + bias.double()
        absdot = absdot + bias.double().abs()
    err32 = (x.shape[-1] + 4) * U32 * absdot
    shape = (*x.shape[:-1], w64.shape[0])
    return ref.reshape(shape), err32.reshape(shape)


def ref_quantize_activation(x, scale=None):
    xf = x.float()
    if scale is None:
        amax = xf.abs().amax(dim=-1)
        inv = torch.where(amax > 0, div32(127.0, amax), torch.zeros_like(amax))
        s = div32(amax, 127.0)
    else:
        inv = div32(1.0, scale.reshape(())).expand(x.shape[:-1])
        s = scale.reshape(()).expand(x.shape[:-1])
    return torch.round(xf * inv[..., None]).clamp(-127, 127).to(torch.int8), s


def assert_close_to_ref(out, ref, err32, dtype):
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    diff = (out.double() - ref).abs()
    bound = err32 + EPS_OUT[dtype] * (ref.abs() + err32) + TINY_OUT[dtype]
    worst = (diff / bound).max().item() if diff.numel() else 0.0
    assert worst <= 1.0, f"error {worst:.3g}x the per-element bound"
    if ref.numel():
        assert rel_mean_err(out, ref) <= REL_BOUND[dtype]


# ---------------------------------------------------------------- weight-only GEMM
# (format, group_size, symmetric); format "int8" ignores the other two.
FORMATS = [("int8", None, None)] + [("int4", g, sym) for g in (32, 64, 128, -1) for sym in (True, False)]


def _fmt_id(f):
    return "int8" if f[0] == "int8" else f"int4-g{f[1]}-{'sym' if f[2] else 'asym'}"


def make_weights(fmt, n, k, dtype, scale_dtype):
    """Quantized weights of a random [N, K] W (through the quantize ops) and their float64 value."""
    w = torch.randn(n, k) * 0.05
    if fmt[0] == "int8":
        q, s = so.quantize_int8_weight(w)
        s = s.to(scale_dtype)
        return dict(qweight=q, scales=s), ref_dequant_int8(q, s)
    _, g, sym = fmt
    q, s, z = so.quantize_int4_weight(w, group_size=g, symmetric=sym)
    s = s.to(scale_dtype)
    return dict(qweight=q, scales=s, zeros=z, group_size=g), ref_dequant_int4(q, s, z, k if g == -1 else g)


def run_weight_only(fmt, x, wts, bias=None):
    if fmt[0] == "int8":
        return so.w8a16_gemm(x, wts["qweight"], wts["scales"], bias=bias)
    return so.w4a16_gemm(x, wts["qweight"], wts["scales"], wts["zeros"], group_size=wts["group_size"], bias=bias)


# (leading dims of x, N, K): M = 1, 3, [2, 3]; K = 4104 (not a multiple of 32: per-channel only),
# K = 4160 = 65 * 64 (not a multiple of 128).
SHAPES = [((1,), 11, 256), ((3,), 64, 256), ((2, 3), 40, 256), ((3,), 24, 4104), ((5,), 48, 4160)]


def _shape_ok(fmt, k):
    return fmt[0] == "int8" or fmt[1] == -1 or k % fmt[1] == 0


# Group sizes that do not divide K are rejected (see the bad-input tests), so not listed here.
FMT_SHAPES = [pytest.param(f, s, id=f"{_fmt_id(f)}-{s[0]}x{s[1]}x{s[2]}") for f in FORMATS for s in SHAPES
              if _shape_ok(f, s[2])]


@pytest.mark.parametrize("fmt,shape", FMT_SHAPES)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("variant", ["f32scales", "xscales+bias", "f32scales+bias"])
def test_weight_only_gemm_vs_float64(fmt, shape, dtype, variant):
    lead, n, k = shape
    scale_dtype = dtype if variant.startswith("xscales") else torch.float32
    wts, w64 = make_weights(fmt, n, k, dtype, scale_dtype)
    x = torch.randn(*lead, k, dtype=dtype)
    bias = torch.randn(n, dtype=dtype) if "bias" in variant else None
    out = run_weight_only(fmt, x, wts, bias)
    ref, err32 = ref_linear(x, w64, bias)
    assert_close_to_ref(out, ref, err32, dtype)


@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", 32, False), ("int4", -1, True)], ids=_fmt_id)
def test_weight_only_gemm_group_size_k_and_strided_rows(fmt):
    k, n = 192, 16
    wts, w64 = make_weights(fmt, n, k, torch.bfloat16, torch.float32)
    if fmt[0] == "int4" and fmt[1] == -1:
        # group_size == K is the same layout as -1
        x = torch.randn(4, k, dtype=torch.bfloat16)
        a = so.w4a16_gemm(x, wts["qweight"], wts["scales"], group_size=k)
        assert torch.equal(a, run_weight_only(fmt, x, wts))
    # rows with a stride (a slice of a wider buffer) give the same result as contiguous rows
    big = torch.randn(5, k + 40, dtype=torch.bfloat16)
    x = big[:, 8 : 8 + k]
    assert not x.is_contiguous()
    assert torch.equal(run_weight_only(fmt, x, wts), run_weight_only(fmt, x.contiguous(), wts))


@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", 64, False)], ids=_fmt_id)
def test_weight_only_gemm_empty_rows(fmt):
    wts, _ = make_weights(fmt, 8, 128, torch.float16, torch.float32)
    for lead in [(0,), (2, 0)]:
        out = run_weight_only(fmt, torch.randn(*lead, 128, dtype=torch.float16), wts)
        assert out.shape == (*lead, 8) and out.dtype == torch.float16


# ---------------------------------------------------------------- quantize_activation_int8
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("shape", [(1, 64), (3, 111), (2, 3, 4104), (97, 384)])
@pytest.mark.parametrize("static", [False, True])
def test_quantize_activation_matches_formula(dtype, shape, static):
    x = (torch.randn(shape) * 3).to(dtype)
    x.view(-1, shape[-1])[0] = 0  # an all-zero row: s = 0, inv = 0, q = 0
    scale = torch.tensor([0.02]) if static else None  # static: some values clamp at +-127
    q, s = so.quantize_activation_int8(x, scale)
    rq, rs = ref_quantize_activation(x, scale)
    assert q.dtype == torch.int8 and q.shape == x.shape and s.dtype == torch.float32 and s.shape == x.shape[:-1]
    assert torch.equal(q, rq) and torch.equal(s, rs)
    assert q.min() >= -127 and q.max() <= 127
    if not static:
        assert torch.all(s.view(-1)[0] == 0) and torch.all(q.view(-1, shape[-1])[0] == 0)


def test_quantize_activation_rounds_half_to_even():
    # amax = 127 -> inv = 1: x * inv is exactly x, ties round to even
    x = torch.tensor([[127.0, 2.5, 3.5, -2.5, -0.5, 0.5, 1.5, -126.5]])
    q, s = so.quantize_activation_int8(x)
    assert q.tolist() == [[127, 2, 4, -2, 0, 0, 2, -126]] and s.item() == 1.0
    q, s = so.quantize_activation_int8(x, torch.tensor(0.5))  # static: inv = 2, clamps
    assert q.tolist() == [[127, 5, 7, -5, -1, 1, 3, -127]] and s.tolist() == [0.5]


def test_quantize_activation_strided_rows_and_empty():
    big = torch.randn(6, 200, dtype=torch.float16)
    x = big[:, 10:150]
    assert all(torch.equal(a, b) for a, b in zip(so.quantize_activation_int8(x), ref_quantize_activation(x)))
    for lead in [(0,), (3, 0)]:
        q, s = so.quantize_activation_int8(torch.randn(*lead, 16))
        assert q.shape == (*lead, 16) and s.shape == lead


# ---------------------------------------------------------------- w8a8
def ref_w8a8(x_q, x_scales, qweight, w_scales, bias):
    acc = (x_q.long().reshape(-1, x_q.shape[-1]) @ qweight.long().T).double()
    xs = x_scales.double().reshape(-1, 1) if x_scales.numel() != 1 else x_scales.double().reshape(())
    ref = acc * xs * w_scales.double().reshape(-1)
    absb = 0
    if bias is not None:
        ref = ref + bias.double()
        absb = bias.double().abs()
    # float32: acc -> float, * xs, * ws and + bias round once each
    err32 = 5 * U32 * ((ref - (bias.double() if bias is not None else 0)).abs() + absb)
    shape = (*x_q.shape[:-1], qweight.shape[0])
    return ref.reshape(shape), err32.reshape(shape)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [((1,), 11, 64), ((3,), 64, 111), ((2, 3), 40, 384), ((5,), 24, 4104)],
                         ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
@pytest.mark.parametrize("variant", ["token+channel", "tensor+tensor+bias32", "token+channel+bias"])
def test_w8a8_vs_int64(out_dtype, shape, variant):
    lead, n, k = shape
    x_q = torch.randint(-128, 128, (*lead, k), dtype=torch.int8)  # -128 included: any int8 is valid
    qweight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    if variant.startswith("token"):
        x_scales = torch.rand(lead) * 0.01 + 1e-3
        w_scales = torch.rand(n) * 0.01 + 1e-3
    else:
        x_scales, w_scales = torch.tensor([0.004]), torch.tensor(0.003)
    bias = None
    if variant.endswith("bias32"):
        bias = torch.randn(n)
    elif variant.endswith("bias"):
        bias = torch.randn(n).to(out_dtype)
    out = so.w8a8_gemm(x_q, x_scales, qweight, w_scales, bias=bias, out_dtype=out_dtype)
    ref, err32 = ref_w8a8(x_q, x_scales, qweight, w_scales, bias)
    assert_close_to_ref(out, ref, err32, out_dtype)


def test_w8a8_exact_int32_accumulation():
    # Sums of ~4104 products of ~110 * 110 reach ~5e7 > 2^24: a float32 accumulation would drop
    # low bits; the exact int32 sum converted once to float32 (* 1 * 1) must come out.
    k = 4104
    x_q = torch.randint(95, 128, (4, k), dtype=torch.int8)
    qweight = torch.randint(95, 128, (3, k), dtype=torch.int8)
    one = torch.ones(())
    out = so.w8a8_gemm(x_q, one.reshape(1), qweight, one, out_dtype=torch.float32)
    exact = x_q.long() @ qweight.long().T  # < 2^31, exact in int64
    assert exact.min() > 2**24 and torch.equal(out, exact.float())


def test_w8a8_strided_rows_and_empty():
    qweight = torch.randint(-127, 128, (16, 64), dtype=torch.int8)
    ws = torch.rand(16) + 0.1
    big = torch.randint(-127, 128, (5, 100), dtype=torch.int8)
    x_q, xs = big[:, 3:67], torch.rand(5) + 0.1
    assert torch.equal(so.w8a8_gemm(x_q, xs, qweight, ws), so.w8a8_gemm(x_q.contiguous(), xs, qweight, ws))
    for lead in [(0,), (2, 0)]:
        out = so.w8a8_gemm(torch.zeros(*lead, 64, dtype=torch.int8), torch.ones(lead), qweight, ws,
                           out_dtype=torch.bfloat16)
        assert out.shape == (*lead, 16) and out.dtype == torch.bfloat16


# ---------------------------------------------------------------- opcheck
def test_opcheck_gemm():
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    q8, s8 = so.quantize_int8_weight(torch.randn(8, 64))
    q4, s4, z4 = so.quantize_int4_weight(torch.randn(8, 64), group_size=32, symmetric=False)
    xq, xs = so.quantize_activation_int8(x)
    cases = [
        (ops.w8a16_gemm, (x, q8, s8, torch.randn(8, dtype=torch.bfloat16))),
        (ops.w8a16_gemm, (x.half(), q8, s8.half(), None)),
        (ops.w4a16_gemm, (x, q4, s4, z4, 32, None)),
        (ops.w4a16_gemm, (x.reshape(1, 3, 64), q4, s4[:, :1].contiguous(), None, -1,
                          torch.randn(8, dtype=torch.bfloat16))),
        (ops.quantize_activation_int8, (x, None)),
        (ops.quantize_activation_int8, (x.float().reshape(3, 1, 64), torch.tensor([0.1]))),
        (ops.w8a8_gemm, (xq, xs, q8, s8, torch.randn(8), torch.float16)),
        (ops.w8a8_gemm, (xq, torch.tensor([0.1]), q8, torch.tensor(0.2), None, torch.float32)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# ---------------------------------------------------------------- torch.compile
class TinyQuantMLP(torch.nn.Module):
    """A w4a16 linear, then a W8A8 linear with dynamic per-token activation quantization."""

    def __init__(self, k=64, h=96, n=40):
        super().__init__()
        q1, s1, z1 = so.quantize_int4_weight(torch.randn(h, k) * 0.1, group_size=32, symmetric=False)
        q2, s2 = so.quantize_int8_weight(torch.randn(n, h) * 0.1)
        for name, t in dict(q1=q1, s1=s1, z1=z1, b1=torch.randn(h).half(), q2=q2, s2=s2, b2=torch.randn(n)).items():
            self.register_buffer(name, t)

    def forward(self, x):
        h = torch.relu(so.w4a16_gemm(x, self.q1, self.s1, self.z1, group_size=32, bias=self.b1))
        q, s = so.quantize_activation_int8(h)
        return so.w8a8_gemm(q, s, self.q2, self.s2, bias=self.b2, out_dtype=x.dtype)


def test_torch_compile_fullgraph():
    model = TinyQuantMLP()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for lead in [(3,), (2, 5)]:
        x = torch.randn(*lead, 64, dtype=torch.float16)
        out = compiled(x)
        assert out.shape == (*lead, 40) and torch.equal(out, model(x))


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_w8a16():
    x = torch.randn(3, 64, dtype=torch.float16)
    q, s = so.quantize_int8_weight(torch.randn(8, 64))
    _raises(r"w8a16_gemm: x must be float16 or bfloat16, got float32", so.w8a16_gemm, x.float(), q, s)
    _raises(r"qweight must be int8, got uint8", so.w8a16_gemm, x, q.to(torch.uint8), s)
    _raises(r"qweight must be \[N, K\] = \[8, 64\] int8, got shape \[8, 32\]", so.w8a16_gemm, x, q[:, :32].contiguous(), s)
    _raises(r"scales must be float32 or float16, got bfloat16", so.w8a16_gemm, x, q, s.bfloat16())
    _raises(r"scales must be \[N\] = \[8\] float32, got shape \[1, 8\]", so.w8a16_gemm, x, q, s[None])
    _raises(r"bias must be float16, got float32", so.w8a16_gemm, x, q, s, bias=torch.randn(8))
    _raises(r"bias must be \[N\] = \[8\] float16, got shape \[7\]", so.w8a16_gemm, x, q, s,
            bias=torch.randn(7, dtype=torch.float16))
    _raises(r"qweight must be contiguous", so.w8a16_gemm, x, q.t().contiguous().t(), s)
    _raises(r"scales must be contiguous", so.w8a16_gemm, x, q, torch.stack([s, s], 1)[:, 0])
    _raises(r"x must have a contiguous last dimension", so.w8a16_gemm, torch.randn(64, 3, dtype=torch.float16).t(), q, s)
    _raises(r"x must have K = shape\[-1\] > 0, got shape \[3, 0\]", so.w8a16_gemm, x[:, :0], q, s)
    _raises(r"qweight must be a non-empty 2-D \[N, K\] int8", so.w8a16_gemm, x, q[:0], s[:0])
    _raises(r"x must be \[..., K\], got a 0-D tensor", so.w8a16_gemm, torch.tensor(1.0).half(), q, s)


def test_bad_inputs_w4a16():
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    q, s, z = so.quantize_int4_weight(torch.randn(8, 96), group_size=32, symmetric=False)
    _raises(r"w4a16_gemm: group_size 64 must divide K=96", so.w4a16_gemm, x, q, s, z, group_size=64)
    _raises(r"group_size 128 must divide K=96", so.w4a16_gemm, x, q, s, z)  # the default
    _raises(r"group_size must be 32, 64, 128, -1 \(per-channel\) or K=96, got 16", so.w4a16_gemm, x, q, s, z, group_size=16)
    _raises(r"K must be even for int4 .* got K=95", so.w4a16_gemm, torch.randn(3, 95, dtype=torch.bfloat16),
            q, s, z, group_size=-1)
    _raises(r"qweight must be \[N, K/2\] = \[8, 48\] uint8, got shape \[8, 40\]", so.w4a16_gemm, x,
            q[:, :40].contiguous(), s, z, group_size=32)
    _raises(r"qweight must be uint8, got int8", so.w4a16_gemm, x, q.to(torch.int8), s, z, group_size=32)
    _raises(r"scales must be float32 or bfloat16, got float16", so.w4a16_gemm, x, q, s.half(), z, group_size=32)
    _raises(r"scales must be \[N, K/group_size\] = \[8, 3\] float32, got shape \[8, 1\]", so.w4a16_gemm, x, q,
            s[:, :1].contiguous(), z, group_size=32)
    _raises(r"zeros must be uint8, got float32", so.w4a16_gemm, x, q, s, z.float(), group_size=32)
    _raises(r"zeros must be \[N, K/group_size\] = \[8, 3\] uint8, got shape \[8, 2\]", so.w4a16_gemm, x, q, s,
            z[:, :2].contiguous(), group_size=32)
    _raises(r"qweight must be contiguous", so.w4a16_gemm, x, torch.cat([q, q], 1)[:, :48], s, z, group_size=32)
    _raises(r"zeros must be contiguous", so.w4a16_gemm, x, q, s, torch.cat([z, z], 1)[:, :3], group_size=32)
    _raises(r"bias must be bfloat16, got float16", so.w4a16_gemm, x, q, s, z, group_size=32,
            bias=torch.randn(8, dtype=torch.float16))
    _raises(r"qweight must be a non-empty 2-D \[N, K/2\] uint8", so.w4a16_gemm, x, q[:0], s[:0], z[:0], group_size=32)


def test_bad_inputs_quantize_activation():
    x = torch.randn(3, 64)
    _raises(r"quantize_activation_int8: x must be float32 or float16 or bfloat16, got int8",
            so.quantize_activation_int8, x.to(torch.int8))
    _raises(r"scale must have exactly 1 element \(a static per-tensor scale\), got shape \[2\]",
            so.quantize_activation_int8, x, torch.tensor([0.1, 0.2]))
    _raises(r"scale must be float32, got float16", so.quantize_activation_int8, x, torch.tensor([0.1]).half())
    _raises(r"x must have a contiguous last dimension", so.quantize_activation_int8, torch.randn(64, 3).t())
    _raises(r"x must have K = shape\[-1\] > 0", so.quantize_activation_int8, torch.randn(3, 0))


def test_bad_inputs_w8a8():
    x_q = torch.randint(-127, 128, (2, 3, 64), dtype=torch.int8)
    xs = torch.rand(2, 3)
    q, ws = so.quantize_int8_weight(torch.randn(8, 64))
    _raises(r"w8a8_gemm: out_dtype must be float16 or bfloat16 or float32, got int32", so.w8a8_gemm, x_q, xs, q, ws,
            out_dtype=torch.int32)
    _raises(r"x_q must be int8, got float16", so.w8a8_gemm, x_q.half(), xs, q, ws)
    _raises(r"x_scales must be x_q.shape\[:-1\] = \[2, 3\] float32 \(per token\) or have 1 element \(per tensor\), "
            r"got shape \[6\]", so.w8a8_gemm, x_q, xs.reshape(6), q, ws)
    _raises(r"x_scales must be float32, got bfloat16", so.w8a8_gemm, x_q, xs.bfloat16(), q, ws)
    _raises(r"w_scales must be \[N\] = \[8\] float32 \(per channel\) or have 1 element", so.w8a8_gemm, x_q, xs, q, ws[:4])
    _raises(r"w_scales must be float32, got float16", so.w8a8_gemm, x_q, xs, q, ws.half())
    _raises(r"qweight must be \[N, K\] = \[8, 64\] int8, got shape \[8, 63\]", so.w8a8_gemm, x_q, xs,
            q[:, :63].contiguous(), ws)
    _raises(r"bias must be float16 or float32, got bfloat16", so.w8a8_gemm, x_q, xs, q, ws,
            bias=torch.randn(8).bfloat16(), out_dtype=torch.float16)
    _raises(r"bias must be float32, got float16", so.w8a8_gemm, x_q, xs, q, ws, bias=torch.randn(8).half(),
            out_dtype=torch.float32)
    _raises(r"qweight must be contiguous", so.w8a8_gemm, x_q, xs, q.t().contiguous().t(), ws)
    _raises(r"x_scales must be contiguous", so.w8a8_gemm, x_q, xs.t().contiguous().t(), q, ws)
    _raises(r"x_q must have K = shape\[-1\] > 0", so.w8a8_gemm, x_q[..., :0], xs, q[:, :0], ws)


# ---------------------------------------------------------------- GPU: CUDA ops vs the CPU ops
# The ops allocate their outputs: every element is compared and NaN/inf fails (the W8A8 and
# CUTLASS tests also poison the caching allocator first, _poison_outputs). Inputs are fresh per
# case; shapes are awkward on purpose (M = 1, 2, 3, 33; N = 111 and 11008; K = 4104, a multiple
# of 8 but not of 16 or 32; K = 4224 = 33 * 128). M = 128 takes the large-M path: CUTLASS for
# the grouped int4 shapes, dequantize + cuBLAS for K = 4104 and N = 111 (outside its shape rule).
GPU_M = [1, 2, 3, 16, 33, 128]
GPU_NK = {"int8": [(11008, 4104), (111, 4104)], "g-1": [(11008, 4104), (111, 4104)],
          "grouped": [(11008, 4224), (111, 4224)]}
SANITIZE = bool(os.environ.get("SQUASH_SANITIZE"))  # compute-sanitizer runs: a few blocks suffice


def _poison_outputs(m, n, dtype):
    """Freed NaN-filled blocks of an [m, n] output's size: the caching allocator hands them to the
    op's output next, so an element a kernel fails to write stays NaN."""
    blocks = [torch.full((m, n), float("nan"), dtype=dtype, device="cuda") for _ in range(4)]
    del blocks


def _gpu_shapes(fmt):
    if fmt[0] == "int8":
        return GPU_NK["int8"]
    return GPU_NK["g-1"] if fmt[1] == -1 else GPU_NK["grouped"]


@functools.lru_cache(maxsize=4)
def _gpu_weights(fmt, n, k, dtype, scale_dtype):
    wts, _ = make_weights(fmt, n, k, dtype, scale_dtype)
    return wts, {key: (v.cuda() if torch.is_tensor(v) else v) for key, v in wts.items()}


def _assert_gpu_matches(out_gpu, out_cpu, bound):
    assert out_gpu.is_cuda and out_gpu.dtype == out_cpu.dtype and out_gpu.shape == out_cpu.shape
    out_gpu = out_gpu.cpu()
    assert torch.isfinite(out_gpu).all(), "non-finite output (unwritten or wrong elements)"
    assert rel_mean_err(out_gpu, out_cpu) <= bound


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", 128, True), ("int4", 128, False), ("int4", 64, True),
                                 ("int4", 32, False), ("int4", -1, True), ("int4", -1, False)], ids=_fmt_id)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("scale_dtype", ["f32", "x"])
def test_gpu_weight_only_matches_cpu(fmt, dtype, scale_dtype):
    for n, k in _gpu_shapes(fmt):
        wts, wts_gpu = _gpu_weights(fmt, n, k, dtype, torch.float32 if scale_dtype == "f32" else dtype)
        for m in GPU_M:
            x = torch.randn(m, k, dtype=dtype)
            bias = torch.randn(n, dtype=dtype) if m % 2 else None
            out_cpu = run_weight_only(fmt, x, wts, bias)
            out_gpu = run_weight_only(fmt, x.cuda(), wts_gpu, bias.cuda() if bias is not None else None)
            _assert_gpu_matches(out_gpu, out_cpu, GEMM_REL_MEAN_ERR[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", 128, False)], ids=_fmt_id)
def test_gpu_weight_only_leading_dims_strided_and_empty(fmt):
    n, k = 111, 4224
    wts, wts_gpu = _gpu_weights(fmt, n, k, torch.bfloat16, torch.float32)
    big = torch.randn(2, 3, k + 64, dtype=torch.bfloat16)
    x = big[..., 32 : 32 + k]  # leading dims with a row stride
    _assert_gpu_matches(run_weight_only(fmt, x.cuda(), wts_gpu), run_weight_only(fmt, x, wts),
                        GEMM_REL_MEAN_ERR[torch.bfloat16])
    out = run_weight_only(fmt, torch.randn(0, k, dtype=torch.bfloat16).cuda(), wts_gpu)
    assert out.shape == (0, n) and out.is_cuda


# The CUTLASS mixed-input path (large M; forced here at every M so each config is covered on any
# shape it takes): the weights are converted in registers and rounded to x.dtype once before the
# MMA, so the reference is x @ round_to_dtype(dequant(W)).T in float64, held to the per-element
# float32-accumulation bound plus one final rounding (assert_close_to_ref) - much tighter than
# the TARGETS relative mean error. K = 4224 = 33 * 128, N = 136 = 17 * 8 (no tile divides them).
CUTLASS_FORMATS = [FORMATS[0], ("int4", 128, True), ("int4", 128, False), ("int4", 64, False), ("int4", -1, True)]


def woq_cutlass_configs():
    """The CUTLASS config names of csrc/kernels/gemm/heuristics.h (SQUASH_WOQ_CONFIG values)."""
    header = pathlib.Path(__file__).resolve().parent.parent / "csrc/kernels/gemm/heuristics.h"
    return re.findall(r'\{"(cutlass_sm\d+_\w+)", \d+,', header.read_text())


@pytest.mark.gpu
@pytest.mark.parametrize("config", woq_cutlass_configs())
@pytest.mark.parametrize("fmt", CUTLASS_FORMATS, ids=_fmt_id)
def test_gpu_weight_only_cutlass(config, fmt, monkeypatch):
    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    # woq_cutlass_config_runs_on: the 3.x configs need sm_90; the 2.x one takes int8 on 8.x-9.x.
    runs = arch == 90 if config.startswith("cutlass_sm90") else fmt[0] == "int8" and 80 <= arch < 100
    if not runs:
        pytest.skip(f"{config} does not run {_fmt_id(fmt)} on compute capability {major}.{minor}")
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", config)
    shapes = [(136, 4224)] if SANITIZE else [(136, 4224), (4096, 4096)]
    for j, (n, k) in enumerate(shapes):
        for i, m in enumerate([1, 65] if SANITIZE else [1, 65, 200]):
            dtype = HALF[(i + j) % 2]
            wts, w64 = make_weights(fmt, n, k, dtype, torch.float32 if i % 2 else dtype)
            wts_gpu = {key: (v.cuda() if torch.is_tensor(v) else v) for key, v in wts.items()}
            x = torch.randn(m, k, dtype=dtype)
            bias = torch.randn(n, dtype=dtype) if (i + j) % 2 else None
            _poison_outputs(m, n, dtype)
            out = run_weight_only(fmt, x.cuda(), wts_gpu, bias.cuda() if bias is not None else None)
            assert out.is_cuda and out.shape == (m, n)
            ref, err32 = ref_linear(x, w64.float().to(dtype).double(), bias)
            assert_close_to_ref(out.cpu(), ref, err32, dtype)


@pytest.mark.gpu
def test_gpu_weight_only_cutlass_refuses_what_it_cannot_run(monkeypatch):
    wts, _ = make_weights(("int4", 32, False), 136, 4224, torch.bfloat16, torch.float32)
    wts = {key: (v.cuda() if torch.is_tensor(v) else v) for key, v in wts.items()}
    x = torch.randn(100, 4224, dtype=torch.bfloat16, device="cuda")
    # group 32 is below CUTLASS's K tile (64): the heuristic falls back to dequantize + cuBLAS...
    out = run_weight_only(("int4", 32, False), x, wts)
    assert out.shape == (100, 136) and torch.isfinite(out).all()
    # ...and forcing a CUTLASS config says it cannot run.
    for config in woq_cutlass_configs():
        monkeypatch.setenv("SQUASH_WOQ_CONFIG", config)
        with pytest.raises(RuntimeError, match=rf"SQUASH_WOQ_CONFIG={config} cannot run M=100 N=136 K=4224 group=32"):
            run_weight_only(("int4", 32, False), x, wts)


def _special_rows(k, dtype):
    """One row of each kind the int8 row rule names (csrc/kernels/common/row_quant.h): all zero,
    NaN (in the middle and at the end), -inf and +inf, tiny (subnormal float32 / bfloat16 values,
    where 127 / absmax overflows; float16 rounds them to a zero row)."""
    x = torch.randn(4, k) * 4
    x[0] = 0
    x[1, k // 2] = x[1, -1] = float("nan")
    x[2, k // 3], x[2, -1] = -float("inf"), float("inf")
    x[3] = torch.randn(k) * 1e-39
    return x.to(dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("static", [False, True])
def test_gpu_quantize_activation_matches_cpu(dtype, static):
    # The formula is fully specified in float32 (the row rule shared with the CPU kernels, IEEE
    # divisions, subnormals kept: the kernel's file is built with -ftz=false), so q and scales
    # must match the CPU op exactly, the special rows included (NaN scales compare equal).
    for k in (4104, 111):
        for m in GPU_M:
            x = torch.cat([_special_rows(k, dtype), (torch.randn(m, k) * 4).to(dtype)])
            scale = torch.tensor([0.03]) if static else None
            q_cpu, s_cpu = so.quantize_activation_int8(x, scale)
            q_gpu, s_gpu = so.quantize_activation_int8(x.cuda(), scale.cuda() if static else None)
            assert q_gpu.is_cuda and q_gpu.shape == q_cpu.shape and s_gpu.shape == s_cpu.shape
            assert torch.equal(q_gpu.cpu(), q_cpu)
            torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=0, atol=0, equal_nan=True)
            assert s_gpu[1].isnan() and (q_gpu[1].cpu()[[k // 2, -1]] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_gpu_w8a8_shows_the_nan_and_inf_of_its_input(dtype):
    """quantize_activation_int8 + w8a8_gemm on CUDA: a row with a NaN or an inf gives a NaN output
    row, as the float layer would; the zero, tiny and random rows stay finite."""
    k, n = 4112, 64  # multiples of the CUDA W8A8 alignment (16, 8)
    x = torch.cat([_special_rows(k, dtype), (torch.randn(3, k) * 4).to(dtype)]).cuda()
    qweight, w_scales = so.quantize_int8_weight(torch.randn(n, k))
    q, s = so.quantize_activation_int8(x)
    out = so.w8a8_gemm(q, s, qweight.cuda(), w_scales.cuda(), out_dtype=dtype).cpu()
    assert out[1:3].isnan().all()
    assert out[[0, 3, 4, 5, 6]].isfinite().all()


# ---------------------------------------------------------------- GPU: W8A8 (CUTLASS) vs the CPU op
# The CUDA epilogue computes ((float(acc) * x_scale) * w_scale) + bias with IEEE float32 roundings
# in the CPU op's order (no FMA) and rounds to out_dtype once, and the int32 accumulation is exact
# on both sides: the outputs must be bit-identical, for every config the device can run. The op
# allocates its output, so the caching allocator is poisoned first (freed NaN-filled blocks of
# the output's size): an element the kernel fails to write stays NaN and fails the comparison.
# Shapes: K = 4112 = 257 * 16 (not a multiple of any K tile), K = 16 (less than one K tile),
# N = 136 = 17 * 8 (not a multiple of any N tile); M across every heuristic branch.
W8A8_M = [1, 33, 129] if SANITIZE else [1, 2, 3, 16, 33, 64, 65, 128, 129, 300]
W8A8_NK = [(136, 4112), (64, 16)] if SANITIZE else [(11008, 4112), (136, 4112), (4096, 4096), (64, 16)]


def w8a8_configs():
    """The config names of csrc/kernels/gemm/w8a8_heuristics.h (what SQUASH_W8A8_CONFIG takes)."""
    header = pathlib.Path(__file__).resolve().parent.parent / "csrc/kernels/gemm/w8a8_heuristics.h"
    return re.findall(r'\{"(sm\d+_\w+)", \d+,', header.read_text())


def _w8a8_runs_here(config):
    # w8a8_config_runs_on: 3.x configs need exactly sm_90; 2.x ones sm_80..sm_90.
    major, minor = torch.cuda.get_device_capability()
    arch = major * 10 + minor
    return arch == 90 if config.startswith("sm90") else 80 <= arch < 100


def _w8a8_case(m, n, k, out_dtype, per_token, bias_kind, weights=None):
    """Fresh inputs (x_q includes -128), the CPU op's output and the CUDA op's output."""
    qweight, w_scales = weights if weights else (torch.randint(-127, 128, (n, k), dtype=torch.int8),
                                                 torch.rand(n) * 0.01 + 1e-3 if per_token else torch.tensor([0.002]))
    x_q = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    x_scales = torch.rand(m) * 0.01 + 1e-3 if per_token else torch.tensor(0.004)
    bias = {"none": None, "f32": torch.randn(n), "out": torch.randn(n).to(out_dtype)}[bias_kind]
    args = (x_q, x_scales, qweight, w_scales, bias)
    out_cpu = so.w8a8_gemm(*args, out_dtype=out_dtype)
    args_gpu = [a.cuda() if a is not None else None for a in args]
    _poison_outputs(m, n, out_dtype)  # after the inputs' copies, so the output takes these blocks
    return out_cpu, so.w8a8_gemm(*args_gpu, out_dtype=out_dtype)


def _assert_w8a8_equal(out_gpu, out_cpu, what):
    assert out_gpu.is_cuda and out_gpu.dtype == out_cpu.dtype and out_gpu.shape == out_cpu.shape, what
    out_gpu = out_gpu.cpu()
    assert torch.isfinite(out_gpu).all(), f"{what}: non-finite output (unwritten or wrong elements)"
    if not torch.equal(out_gpu, out_cpu):
        bad = (out_gpu != out_cpu).nonzero()
        diff = (out_gpu.double() - out_cpu.double()).abs().max().item()
        raise AssertionError(f"{what}: {len(bad)} elements differ (first at {bad[0].tolist()}, max |diff| {diff:.3g})")


@pytest.mark.gpu
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("per_token", [True, False], ids=["token+channel", "tensor+tensor"])
def test_gpu_w8a8_matches_cpu(out_dtype, per_token):
    # The heuristic's choice at every M (SQUASH_W8A8_CONFIG unset); bias none / float32 / out_dtype.
    for n, k in W8A8_NK:
        weights = (torch.randint(-127, 128, (n, k), dtype=torch.int8),
                   torch.rand(n) * 0.01 + 1e-3 if per_token else torch.tensor([0.002]))
        for i, m in enumerate(W8A8_M):
            bias_kind = ("none", "f32", "out")[i % 3]
            out_cpu, out_gpu = _w8a8_case(m, n, k, out_dtype, per_token, bias_kind, weights)
            _assert_w8a8_equal(out_gpu, out_cpu, f"M={m} N={n} K={k} {out_dtype} bias={bias_kind}")


@pytest.mark.gpu
@pytest.mark.parametrize("config", w8a8_configs())
def test_gpu_w8a8_every_config(config, monkeypatch):
    # Each kernel forced (the sm80 ones run on an H100 too), out dtypes and scale modes rotated.
    if not _w8a8_runs_here(config):
        pytest.skip(f"{config} does not run on compute capability {torch.cuda.get_device_capability()}")
    monkeypatch.setenv("SQUASH_W8A8_CONFIG", config)
    dtypes = [torch.bfloat16, torch.float16, torch.float32]
    for j, (n, k) in enumerate([(136, 4112), (4096, 4096), (64, 16)]):
        for i, m in enumerate([1, 65, 257] if not SANITIZE else [1, 65]):
            if SANITIZE and n * k > 1 << 20:
                continue
            dt, per_token, bias_kind = dtypes[(i + j) % 3], (i + j) % 2 == 0, ("out", "none", "f32")[i]
            out_cpu, out_gpu = _w8a8_case(m, n, k, dt, per_token, bias_kind)
            _assert_w8a8_equal(out_gpu, out_cpu, f"{config}: M={m} N={n} K={k} {dt} bias={bias_kind}")


@pytest.mark.gpu
def test_gpu_w8a8_exact_int32_accumulation():
    # Sums of 4112 products of ~110 * 110 exceed 2^24: a float32 accumulation would lose low bits,
    # and the int32 -> float32 conversion must round to nearest like the CPU op's.
    x_q = torch.randint(95, 128, (5, 4112), dtype=torch.int8)
    qweight = torch.randint(95, 128, (8, 4112), dtype=torch.int8)
    one = torch.ones(1)
    out = so.w8a8_gemm(x_q.cuda(), one.cuda(), qweight.cuda(), one.cuda(), out_dtype=torch.float32).cpu()
    exact = x_q.long() @ qweight.long().T
    assert exact.min() > 2**24 and torch.equal(out, exact.float())


@pytest.mark.gpu
def test_gpu_w8a8_leading_dims_strided_and_empty():
    n, k = 136, 4112
    qweight, w_scales = torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) + 0.1
    big = torch.randint(-128, 128, (2, 3, k + 64), dtype=torch.int8)
    for off in (16, 8):  # row start 16-byte aligned (used in place) or not (copied by the op)
        x_q = big[..., off : off + k]
        xs = torch.rand(2, 3) + 0.1
        out_cpu = so.w8a8_gemm(x_q, xs, qweight, w_scales, out_dtype=torch.bfloat16)
        out_gpu = so.w8a8_gemm(x_q.cuda(), xs.cuda(), qweight.cuda(), w_scales.cuda(), out_dtype=torch.bfloat16)
        assert out_gpu.shape == (2, 3, n)
        _assert_w8a8_equal(out_gpu, out_cpu, f"row offset {off}")
    out = so.w8a8_gemm(torch.zeros(2, 0, k, dtype=torch.int8, device="cuda"), torch.ones(2, 0, device="cuda"),
                       qweight.cuda(), w_scales.cuda())
    assert out.shape == (2, 0, n) and out.is_cuda


@pytest.mark.gpu
def test_gpu_w8a8_alignment_and_config_errors(monkeypatch):
    q = torch.randint(-127, 128, (16, 4104), dtype=torch.int8, device="cuda")
    x = torch.randint(-127, 128, (3, 4104), dtype=torch.int8, device="cuda")
    ones = torch.ones(1, device="cuda")
    # The CPU op takes any K and N; the CUDA op says what it needs and how to get there.
    _raises(r"w8a8_gemm: on CUDA, K = x_q.shape\[-1\] must be a multiple of 16 and N = qweight.shape\[0\] "
            r"a multiple of 8 .* got K=4104 N=16", so.w8a8_gemm, x, ones, q, ones)
    _raises(r"got K=32 N=12", so.w8a8_gemm, x[:, :32], ones, q[:12, :32].contiguous(), ones)
    monkeypatch.setenv("SQUASH_W8A8_CONFIG", "sm90_bogus")
    with pytest.raises(RuntimeError, match=r"unknown SQUASH_W8A8_CONFIG 'sm90_bogus' \(expected one of sm80_32x64"):
        so.w8a8_gemm(x[:, :32], ones, q[:, :32].contiguous(), ones)
