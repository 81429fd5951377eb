"""Fused LayerNorm / RMSNorm (+residual, +int8 output): CPU vs a float64 reference, opcheck, bad
inputs, torch.compile, and (marked gpu) the CUDA kernels vs the CPU op."""

import math
import re
from types import SimpleNamespace

import pytest
import torch

from squash_ops import layer_norm, layer_norm_quant, rms_norm, rms_norm_quant

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPES = [F16, BF16, F32]
HIDDEN = [1, 111, 384, 4095, 8192]
LEADING = [(), (1,), (7,), (2, 3)]  # () = a single 1-D row: scales are then 0-D
EPS = {"layer": 1e-5, "rms": 1e-6}
KINDS = ["layer", "rms"]
QUANTS = [None, "dynamic", "static"]

# Floating-point facts per dtype: explicit mantissa bits and the smallest normal exponent.
_MANT = {F16: 10, BF16: 7, F32: 23}
_EMIN = {F16: -14, BF16: -126, F32: -126}
EPS32 = 2.0**-23
EPS64 = 2.0**-52


def ulp(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of `dtype` numbers at |v| (float64; subnormal spacing below the normal range)."""
    a = v.double().abs()
    _, e = torch.frexp(a)  # a = m * 2**e with m in [0.5, 1)
    exp = torch.where(a > 0, e.double() - 1, torch.full_like(a, _EMIN[dtype]))
    return torch.exp2(exp.clamp_min(_EMIN[dtype]) - _MANT[dtype])



pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ reference (float64)


def reference(kind, x, residual, weight, bias, eps):
    """The contract evaluated in float64 from the same inputs (never calls the ops).

    Returns h (the expected residual_out, x.dtype), y (float64, before any rounding) and mag, a
    per-element bound on the magnitude of the terms that make up y: an fp32 evaluation of y errs
    by a few eps32 * mag, which can exceed an ulp of y itself where the terms cancel (y ~ 0).
    """
    h = x if residual is None else (x.float() + residual.float()).to(x.dtype)
    hd = h.double()
    if kind == "layer":
        mean = hd.mean(-1, keepdim=True)
        c = hd - mean
        var = (c * c).mean(-1, keepdim=True)
        spread = hd.abs().mean(-1, keepdim=True)  # an fp32 mean errs by ~eps32 * mean|h|
    else:
        c = hd
        var = (hd * hd).mean(-1, keepdim=True)
        spread = 0.0
    rstd = torch.rsqrt(var + eps)
    wd = weight.double() if weight is not None else torch.ones((), dtype=F64)
    y = c * rstd * wd
    mag = (c.abs() + spread) * rstd * wd.abs()
    if bias is not None:
        y = y + bias.double()
        mag = mag + bias.double().abs()
    return SimpleNamespace(h=h, y=y, mag=mag)


def expected_quant(y, scale):
    """int8 of the float64 y: v = y * inv, q = clamp(round_half_even(v)); and the scales."""
    if scale is None:
        absmax = y.abs().amax(-1)
        inv = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
        s = absmax / 127.0
    else:
        inv = torch.full(y.shape[:-1], 1.0 / scale.double().item(), dtype=F64)
        s = torch.full(y.shape[:-1], scale.item(), dtype=F64)
    v = y * inv.unsqueeze(-1)
    return v, torch.round(v).clamp(-127, 127), s


# ------------------------------------------------------------------ calling the wrappers


def run(kind, x, residual, weight, bias, quant, scale=None, eps=None):
    """Calls the public wrapper and returns its outputs by name, checking the return structure."""
    eps = EPS[kind] if eps is None else eps
    if kind == "layer":
        if quant:
            res = layer_norm_quant(x, weight, bias, eps, residual=residual, scale=scale)
        else:
            res = layer_norm(x, weight, bias, eps, residual=residual)
    else:
        assert bias is None
        if quant:
            res = rms_norm_quant(x, weight, eps, residual=residual, scale=scale)
        else:
            res = rms_norm(x, weight, eps, residual=residual)
    o = SimpleNamespace(out=None, q=None, scales=None, residual_out=None)
    if quant:
        assert isinstance(res, tuple) and len(res) == (2 if residual is None else 3)
        o.q, o.scales = res[0], res[1]
        assert o.q.dtype == torch.int8 and o.q.shape == x.shape
        assert o.scales.dtype == F32 and o.scales.shape == x.shape[:-1]
    elif residual is None:
        assert isinstance(res, torch.Tensor)
        o.out = res
    else:
        assert isinstance(res, tuple) and len(res) == 2
        o.out = res[0]
    if o.out is not None:
        assert o.out.dtype == x.dtype and o.out.shape == x.shape
    if residual is not None:
        o.residual_out = res[-1]
        assert o.residual_out.dtype == x.dtype and o.residual_out.shape == x.shape
    return o


def make_inputs(kind, lead, hidden, dtype, wdt, bdt, with_residual):
    """Random inputs (never zeros): x with a non-zero mean, weight around 1, bias around 0."""
    shape = (*lead, hidden)
    x = (torch.randn(shape, dtype=F64) * 2 + 0.3).to(dtype)
    residual = torch.randn(shape, dtype=F64).to(dtype) if with_residual else None
    weight = (1 + 0.5 * torch.randn(hidden, dtype=F64)).to(wdt) if wdt is not None else None
    bias = (0.5 * torch.randn(hidden, dtype=F64)).to(bdt) if bdt is not None else None
    if kind == "rms":
        bias = None
    return x, residual, weight, bias


def affine_configs(kind, dtype):
    """(weight dtype, bias dtype): none, like x, float32, gamma-migrated (bias only), weight only."""
    if kind == "rms":
        return [(None, None), (dtype, None), (F32, None)]
    return [(None, None), (dtype, dtype), (F32, F32), (None, dtype), (F32, None)]


def static_scale_for(y, shape):
    """A static scale that clips the largest ~20% of the range (exercises the clamp)."""
    return torch.full(shape, 0.8 * y.abs().max().item() / 127.0 + 1e-3, dtype=F32)


# ------------------------------------------------------------------ assertions


def assert_out(out, y, mag, dtype):
    """out = y rounded once to dtype. Tolerance: half an ulp of the dtype (the one rounding the
    contract has) + half an fp32 ulp (y is rounded to fp32 first, so a value near a dtype tie may
    round twice) + 64 eps64 * mag (float64 evaluation noise of reference and op where the terms
    of y cancel). A truncating or wrongly-ordered implementation errs by up to a full ulp and
    fails."""
    tol = 0.5 * ulp(y, dtype) + 64 * EPS64 * mag
    if dtype != F32:
        tol = tol + 0.5 * ulp(y, F32)
    assert torch.isfinite(out).all(), "non-finite output"
    err = (out.double() - y).abs()
    bad = err > tol
    assert not bad.any(), (
        f"{int(bad.sum())} of {out.numel()} outside tolerance; worst err {err.max().item():.3e} "
        f"at y={y.flatten()[err.flatten().argmax()].item():.6g}"
    )


def assert_quant(q, scales, y, scale, window=1e-4):
    """q vs int8 of the float64 y: |q - q_ref| <= 1 everywhere, and a difference only where
    v = y * inv lies within `window` of a rounding tie. The op computes v in fp32 from an fp32 y:
    y (2^-24 relative), absmax, 127/absmax and the product (2^-24 each) give |v32 - v| <=
    4 * 2^-24 * 127 ~= 3e-5 < 1e-4. Scales: dynamic s = fp32(absmax)/127 rounded, i.e. within
    2^-23 relative (rtol 2^-22); static: exactly the given scale."""
    v, q_ref, s_ref = expected_quant(y, scale)
    d = q.double() - q_ref
    assert d.numel() == 0 or d.abs().max().item() <= 1
    tie_dist = (v - v.floor() - 0.5).abs()
    unexplained = (d != 0) & (tie_dist > window)
    assert not unexplained.any(), (
        f"{int(unexplained.sum())} int8 values differ away from a rounding tie "
        f"(of {int((d != 0).sum())} differences, {q.numel()} values)"
    )
    if scale is None:
        torch.testing.assert_close(scales.double(), s_ref, rtol=2.0**-22, atol=0.0)
    else:
        assert torch.equal(scales, s_ref.float())


def check_all_modes(kind, x, residual, weight, bias, eps=None):
    """Runs the plain, dynamic-int8 and static-int8 variants and checks each against the reference."""
    eps = EPS[kind] if eps is None else eps
    ref = reference(kind, x, residual, weight, bias, eps)
    for quant in QUANTS:
        scale = static_scale_for(ref.y, (1,) if x.dim() % 2 else ()) if quant == "static" else None
        o = run(kind, x, residual, weight, bias, quant, scale, eps)
        if residual is not None:
            assert torch.equal(o.residual_out, ref.h), "residual_out must be fp32(x + r) rounded"
        if quant:
            assert_quant(o.q, o.scales, ref.y, scale)
        else:
            assert_out(o.out, ref.y, ref.mag, x.dtype)


# ------------------------------------------------------------------ CPU vs reference


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.usefixtures("each_cpu_isa")
def test_matches_reference(kind, with_residual, dtype, hidden):
    for lead in LEADING:
        for wdt, bdt in affine_configs(kind, dtype):
            x, residual, weight, bias = make_inputs(kind, lead, hidden, dtype, wdt, bdt, with_residual)
            check_all_modes(kind, x, residual, weight, bias)


@pytest.mark.parametrize("hidden", [111, 4095, 8192])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.usefixtures("each_cpu_isa")
def test_fp16_near_max(kind, with_residual, hidden):
    """fp16 values near 65504: squares (~4e9) and sums overflow fp16, not fp32; the LayerNorm of
    a narrow band [65000, 65504] also needs a cancellation-free variance (two-pass/Welford)."""
    for band in ["mixed_sign", "narrow"]:
        if band == "mixed_sign":
            mag = 60000 + 5504 * torch.rand(4, hidden, dtype=F64)
            x = (mag * (torch.randint(0, 2, mag.shape) * 2 - 1)).to(F16)
        else:
            x = (65000 + 504 * torch.rand(4, hidden, dtype=F64)).to(F16)
        residual = None
        if with_residual:  # pull towards zero so that h = x + r stays finite in fp16
            residual = (-torch.sign(x.double()) * 1000 * torch.rand(x.shape, dtype=F64)).to(F16)
        weight = (1 + 0.5 * torch.randn(hidden, dtype=F64)).to(F16)
        bias = (0.5 * torch.randn(hidden, dtype=F64)).to(F16) if kind == "layer" else None
        check_all_modes(kind, x, residual, weight, bias)  # assert_out also asserts finiteness


@pytest.mark.parametrize("dtype", [F16, F32], ids=str)
@pytest.mark.usefixtures("each_cpu_isa")
def test_gamma_migration_is_exact(dtype):
    """y*gamma + beta == (y + beta/gamma) * gamma: layer_norm(x, None, beta/gamma) * gamma equals
    layer_norm(x, gamma, beta) up to the roundings each side makes: out1 (half a dtype ulp + half
    an fp32 ulp), out2 scaled by |gamma| (same), and beta/gamma rounded to fp32 (half an fp32 ulp,
    times |gamma|)."""
    hidden = 384
    x = (torch.randn(5, hidden, dtype=F64) * 2 + 0.3).to(dtype)
    sign = torch.randint(0, 2, (hidden,)) * 2 - 1
    gamma = ((0.5 + torch.rand(hidden, dtype=F64)) * sign).to(F32)
    beta = (0.5 * torch.randn(hidden, dtype=F64)).to(F32)
    migrated_bias = beta / gamma  # fp32, as a user would fold it
    out1 = layer_norm(x, gamma, beta).double()
    out2 = layer_norm(x, None, migrated_bias).double()
    g = gamma.double()
    rounding = lambda v: 0.5 * ulp(v, dtype) + 0.5 * ulp(v, F32)  # noqa: E731
    tol = rounding(out1) + g.abs() * (rounding(out2) + 0.5 * ulp(migrated_bias, F32)) + 1e-12
    err = (out2 * g - out1).abs()
    assert (err <= tol).all(), f"worst {err.max().item():.3e}"
    # And the migrated int8 path quantizes exactly the un-scaled y + beta/gamma.
    ref = reference("layer", x, None, None, migrated_bias, EPS["layer"])
    q, s = layer_norm_quant(x, None, migrated_bias)
    assert_quant(q, s, ref.y, None)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_tokens(kind):
    """x of shape [0, H] is valid: every output is empty with the right shape and dtype."""
    x = torch.randn(0, 111, dtype=F16)
    weight = torch.randn(111, dtype=F32)
    bias = torch.randn(111, dtype=F32) if kind == "layer" else None
    for quant in QUANTS:
        scale = torch.tensor([0.05]) if quant == "static" else None
        for residual in [None, torch.randn(0, 111, dtype=F16)]:
            o = run(kind, x, residual, weight, bias, quant, scale)
            for t in (o.out, o.q, o.residual_out):
                assert t is None or t.shape == (0, 111)
            assert o.scales is None or o.scales.shape == (0,)


@pytest.mark.usefixtures("each_cpu_isa")
def test_eps_and_constant_rows():
    """A constant row: LayerNorm gives exactly bias (y = 0 * rstd + bias), the dynamic int8 of a
    zero row is 0 with scale 0; a large eps really enters the formula."""
    x = torch.full((3, 64), 2.5, dtype=F32)
    bias = torch.randn(64, dtype=F32)
    assert torch.equal(layer_norm(x, None, bias), bias.expand(3, 64))
    q, s = layer_norm_quant(x)
    assert torch.equal(q, torch.zeros_like(q, dtype=torch.int8)) and torch.equal(s, torch.zeros(3))
    x = torch.randn(3, 64, dtype=F32)
    ref = reference("rms", x, None, None, None, 4.0)
    assert_out(rms_norm(x, None, eps=4.0), ref.y, ref.mag, F32)


@pytest.mark.usefixtures("each_cpu_isa")
def test_rounding_half_to_even_and_clamp():
    """Exact ties: with h = 1 and eps = 0, mean(h^2) = 1 so rstd = 1 and y = weight exactly;
    with scale 1 (static) or absmax 127 (dynamic: inv = 127/127 = 1) v = weight. Half-to-even
    gives 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2 (round-half-away would give 1, 2, 3, -3), and
    the clamp is symmetric: +-200 -> +-127, never -128."""
    w = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5, 200.0, -200.0, 127.0])
    expect = torch.tensor([0, 2, 2, 0, -2, 126, -126, 127, -127, 127], dtype=torch.int8)
    h = torch.ones(1, 10)
    q, s = rms_norm_quant(h, w, eps=0.0, scale=torch.tensor(1.0))
    assert torch.equal(q[0], expect) and torch.equal(s, torch.ones(1))
    keep = w.abs() <= 127  # dynamic: absmax 127 makes inv exactly 1
    q, s = rms_norm_quant(h[:, keep], w[keep], eps=0.0)
    assert torch.equal(q[0], expect[keep]) and torch.equal(s, torch.ones(1))


# ------------------------------------------------------------------ opcheck


def _opcheck_cases():
    x = torch.randn(3, 111, dtype=BF16) + 0.2
    r = torch.randn(3, 111, dtype=BF16)
    w = torch.randn(111, dtype=F32) + 1
    b = torch.randn(111, dtype=BF16)
    s = torch.tensor([0.02], dtype=F32)
    return [
        ("layer_norm", (x, w, b, 1e-5)),
        ("layer_norm", (x, None, None, 1e-5)),
        ("add_layer_norm", (x, r, w, b, 1e-5)),
        ("layer_norm_quant", (x, w, b, 1e-5, None)),
        ("layer_norm_quant", (x, None, b, 1e-5, s)),
        ("add_layer_norm_quant", (x, r, w, b, 1e-5, None)),
        ("add_layer_norm_quant", (x, r, w, None, 1e-5, s)),
        ("rms_norm", (x, w, 1e-6)),
        ("add_rms_norm", (x, r, None, 1e-6)),
        ("rms_norm_quant", (x, w, 1e-6, None)),
        ("rms_norm_quant", (x, w, 1e-6, s)),
        ("add_rms_norm_quant", (x, r, w, 1e-6, None)),
        ("add_rms_norm_quant", (x, r, w, 1e-6, s)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.squash, name).default, args)


def test_opcheck_covers_all_ops():
    assert {name for name, _ in _opcheck_cases()} == {
        "layer_norm", "add_layer_norm", "layer_norm_quant", "add_layer_norm_quant",
        "rms_norm", "add_rms_norm", "rms_norm_quant", "add_rms_norm_quant",
    }


# ------------------------------------------------------------------ bad inputs


def _bad_cases():
    H = 111
    x = torch.randn(4, H, dtype=F16)
    r = torch.randn(4, H, dtype=F16)
    w = torch.randn(H, dtype=F16)
    ops = torch.ops.squash
    return [
        # (id, callable, op name in the message, message regex)
        ("x_double", lambda: ops.layer_norm(x.double(), None, None, 1e-5), "layer_norm",
         "x must be float16 or bfloat16 or float32, got float64"),
        ("x_int", lambda: ops.rms_norm_quant(x.to(torch.int32), None, 1e-6, None), "rms_norm_quant",
         "x must be float16 or bfloat16 or float32, got int32"),
        ("x_0d", lambda: ops.rms_norm(torch.tensor(1.0), None, 1e-6), "rms_norm",
         "x must have at least 1 dimension"),
        ("empty_hidden", lambda: ops.layer_norm(torch.randn(4, 0, dtype=F16), None, None, 1e-5),
         "layer_norm", r"x.shape\[-1\] \(hidden\) must be > 0, got shape \[4, 0\]"),
        ("x_strided_rows", lambda: ops.add_rms_norm(torch.randn(4, 2 * H, dtype=F16)[:, :H], r, w, 1e-6),
         "add_rms_norm", "x must be contiguous"),
        ("x_transposed", lambda: ops.layer_norm(torch.randn(H, 4, dtype=F16).t(), None, None, 1e-5),
         "layer_norm", "x must be contiguous"),
        ("weight_short", lambda: ops.add_layer_norm_quant(x, r, w[:-1], None, 1e-5, None),
         "add_layer_norm_quant", r"weight must be 1-D \[hidden=111\].*got shape \[110\]"),
        ("weight_2d", lambda: ops.rms_norm(x, w[None], 1e-6), "rms_norm",
         r"weight must be 1-D \[hidden=111\].*got shape \[1, 111\]"),
        ("weight_dtype", lambda: ops.rms_norm(x, w.to(BF16), 1e-6), "rms_norm",
         r"weight must be float16 \(like x\) or float32, got bfloat16"),
        ("weight_dtype_f32x", lambda: ops.layer_norm(x.float(), w, None, 1e-5), "layer_norm",
         "weight must be float32, got float16"),
        ("weight_strided", lambda: ops.rms_norm(x, torch.randn(2 * H, dtype=F16)[::2], 1e-6),
         "rms_norm", "weight must be contiguous"),
        ("bias_shape", lambda: ops.layer_norm(x, None, torch.randn(H + 1), 1e-5), "layer_norm",
         r"bias must be 1-D \[hidden=111\].*got shape \[112\]"),
        ("bias_dtype", lambda: ops.layer_norm_quant(x, None, torch.randn(H, dtype=F64), 1e-5, None),
         "layer_norm_quant", "bias must be float16 \\(like x\\) or float32, got float64"),
        ("residual_shape", lambda: ops.add_layer_norm(x, r[:3], w, None, 1e-5), "add_layer_norm",
         r"residual must have the shape of x \[4, 111\], got shape \[3, 111\]"),
        ("residual_dtype", lambda: ops.add_rms_norm_quant(x, r.float(), w, 1e-6, None),
         "add_rms_norm_quant", "residual must be float16 like x, got float32"),
        ("residual_strided", lambda: ops.add_rms_norm(x, torch.randn(4, 2 * H, dtype=F16)[:, ::2], w, 1e-6),
         "add_rms_norm", "residual must be contiguous"),
        ("eps_negative", lambda: ops.rms_norm(x, w, -1e-6), "rms_norm", "eps must be finite and >= 0"),
        ("eps_nan", lambda: ops.layer_norm(x, w, None, math.nan), "layer_norm",
         "eps must be finite and >= 0"),
        ("scale_dtype", lambda: ops.rms_norm_quant(x, w, 1e-6, torch.tensor([0.1], dtype=F16)),
         "rms_norm_quant", "scale must be float32, got float16"),
        ("scale_numel", lambda: ops.add_layer_norm_quant(x, r, w, None, 1e-5, torch.tensor([0.1, 0.2])),
         "add_layer_norm_quant", r"scale must have exactly 1 element.*got shape \[2\]"),
        ("scale_empty", lambda: ops.rms_norm_quant(x, w, 1e-6, torch.ones(0)), "rms_norm_quant",
         r"scale must have exactly 1 element.*got shape \[0\]"),
        ("scale_zero", lambda: ops.add_rms_norm_quant(x, r, w, 1e-6, torch.tensor(0.0)),
         "add_rms_norm_quant", "scale must be finite and > 0, got 0"),
        ("scale_negative", lambda: ops.layer_norm_quant(x, w, None, 1e-5, torch.tensor([-0.5])),
         "layer_norm_quant", "scale must be finite and > 0, got -0.5"),
        ("scale_inf", lambda: ops.layer_norm_quant(x, w, None, 1e-5, torch.tensor([math.inf])),
         "layer_norm_quant", "scale must be finite and > 0, got inf"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_inputs(case):
    _, fn, op, msg = case
    with pytest.raises(ValueError, match=re.escape(f"squash::{op}: ") + msg):
        fn()


# ------------------------------------------------------------------ torch.compile


class _Block(torch.nn.Module):
    """Residual add + RMSNorm, then an RMSNorm whose output is int8 (a pre-attention block)."""

    def __init__(self, hidden):
        super().__init__()
        self.register_buffer("w1", 1 + 0.1 * torch.randn(hidden, dtype=BF16))
        self.register_buffer("w2", 1 + 0.1 * torch.randn(hidden, dtype=F32))

    def forward(self, x, residual):
        h, residual = rms_norm(x, self.w1, residual=residual)
        q, s = rms_norm_quant(h, self.w2)
        return q, s, residual


def test_torch_compile_fullgraph():
    block = _Block(111)
    compiled = torch.compile(block, fullgraph=True)
    for tokens in (5, 9):  # two token counts: the second may re-trace with a dynamic dim
        x = torch.randn(tokens, 111, dtype=BF16)
        r = torch.randn(tokens, 111, dtype=BF16)
        with torch.no_grad():
            expect = block(x, r)
            got = compiled(x, r)
        for e, g in zip(expect, got):
            assert torch.equal(e, g)


# ------------------------------------------------------------------ CUDA vs the CPU op (gpu)

GPU_SHAPES = [(64, 111), (64, 384), (33, 4095), (16, 16384), (4096, 1024)]
# An fp32 implementation of y errs by a few eps32 * mag (reference()): the fp32 reductions of
# mean and variance (a thread summing n elements in sequence, then a tree: typically
# ~sqrt(n) + log2(H) eps32 relative), rsqrtf (<= 2 ulp) and the elementwise roundings.
# 64 eps32 * mag covers per-thread runs of 512+ elements with margin (an emulation summing all
# 16384 in one sequence passed), while a kernel accumulating in fp16/bf16 errs by ~1e-3 and fails.
GPU_FP32_TERMS = 64


def _poison_cuda(shapes_dtypes):
    """Hands the caching allocator blocks of the outputs' exact sizes filled with 0xFF (NaN in
    f16/bf16/f32, -1 in int8): an output element the kernel never writes keeps the poison."""
    bufs = [torch.empty(s, dtype=d, device="cuda").view(torch.uint8).fill_(0xFF)
            for s, d in shapes_dtypes]
    del bufs


def _assert_cuda_matches(kind, x, residual, weight, bias, quant, scale, eps=None):
    eps = EPS[kind] if eps is None else eps
    cuda = lambda t: None if t is None else t.cuda()  # noqa: E731
    cpu = run(kind, x, residual, weight, bias, quant, scale, eps)
    outs = [(x.shape, torch.int8), (x.shape[:-1], F32)] if quant else [(x.shape, x.dtype)]
    if residual is not None:
        outs.append((x.shape, x.dtype))
    _poison_cuda(outs)
    gpu = run(kind, cuda(x), cuda(residual), cuda(weight), cuda(bias), quant, cuda(scale), eps)
    torch.cuda.synchronize()
    _assert_fp32_impl_matches(kind, x, residual, weight, bias, quant, scale, eps, cpu, gpu)


def _assert_fp32_impl_matches(kind, x, residual, weight, bias, quant, scale, eps, cpu, gpu):
    """Checks the outputs `gpu` of an fp32 implementation against the CPU op's `cpu` outputs."""
    ref = reference(kind, x, residual, weight, bias, eps)
    slack = GPU_FP32_TERMS * EPS32 * ref.mag  # fp32 evaluation error bound of y
    if residual is not None:
        assert torch.equal(gpu.residual_out.cpu(), cpu.residual_out)
    if not quant:
        # 1 ulp of the dtype at the CPU result (a value near a tie may round the other way) +
        # the fp32 evaluation bound (dominant only where the terms of y cancel).
        out_gpu, out_cpu = gpu.out.cpu(), cpu.out
        assert torch.isfinite(out_gpu).all()
        tol = ulp(out_cpu, x.dtype) + slack
        err = (out_gpu.double() - out_cpu.double()).abs()
        assert (err <= tol).all(), f"{int((err > tol).sum())} outside; worst {err.max().item():.3e}"
        return
    q_gpu, s_gpu = gpu.q.cpu(), gpu.scales.cpu()
    v, q_ref, s_ref = expected_quant(ref.y, scale)
    # q within +-1 of the CPU op, and a difference from the exact int8 only where v is within the
    # GPU's fp32 error of a tie: y errs by <= slack, and a dynamic absmax by <= max(slack) too,
    # so v moves by <= 127 * 2 * max_row(slack) / absmax (static: slack / scale).
    assert (q_gpu.int() - cpu.q.int()).abs().max().item() <= 1
    if scale is None:
        absmax = ref.y.abs().amax(-1, keepdim=True).clamp_min(1e-30)
        window = 127 * 2 * slack.amax(-1, keepdim=True) / absmax + 1e-4
        s_tol = slack.amax(-1) / 127 + 2.0**-22 * s_ref
        assert ((s_gpu.double() - cpu.scales.double()).abs() <= s_tol).all()
    else:
        window = slack / scale.item() + 1e-4
        assert torch.equal(s_gpu, cpu.scales)
    tie_dist = (v - v.floor() - 0.5).abs()
    unexplained = (q_gpu.double() != q_ref) & (tie_dist > window)
    assert not unexplained.any(), f"{int(unexplained.sum())} int8 values differ away from a tie"


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("quant", QUANTS, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind, with_residual, quant, dtype, shape):
    tokens, hidden = shape
    for wdt, bdt in affine_configs(kind, dtype)[1:4]:  # like x, fp32, gamma-migrated / none
        x, residual, weight, bias = make_inputs(kind, (tokens,), hidden, dtype, wdt, bdt, with_residual)
        scale = None
        if quant == "static":
            scale = static_scale_for(reference(kind, x, residual, weight, bias, EPS[kind]).y, (1,))
        _assert_cuda_matches(kind, x, residual, weight, bias, quant, scale)


@pytest.mark.gpu
@pytest.mark.parametrize("quant", QUANTS, ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_fp16_near_max(kind, with_residual, quant):
    hidden = 16384
    x = (65000 + 504 * torch.rand(8, hidden, dtype=F64)).to(F16)  # narrow band: cancellation
    x[::2] = -x[::2]
    residual = None
    if with_residual:
        residual = (-torch.sign(x.double()) * 1000 * torch.rand(x.shape, dtype=F64)).to(F16)
    weight = (1 + 0.5 * torch.randn(hidden, dtype=F64)).to(F16)
    bias = (0.5 * torch.randn(hidden, dtype=F64)).to(F16) if kind == "layer" else None
    scale = torch.tensor([0.03]) if quant == "static" else None
    _assert_cuda_matches(kind, x, residual, weight, bias, quant, scale)


def special_rows(kind, dtype, hidden):
    """Inputs with every kind of row the int8 row rule names (csrc/kernels/common/row_quant.h), as
    (name, x, weight, bias, eps, rows whose y is exact in float32 on any device):
    - NaN in x, inf in x (NaN statistics: every y NaN) and an all-zero x (y = 0), beside random rows;
    - a NaN weight: a NaN beside finite values in every row (no row exact);
    - tiny rows of subnormal y, exact: RMSNorm of ones with eps 0 gives y = weight, LayerNorm of
      a constant row without weight gives y = bias (that tiny weight or bias is float32 for
      float16 x: float16 has no such values)."""
    wdt = F32 if dtype == F16 else dtype
    x = (torch.randn(5, hidden, dtype=F64) * 2 + 0.3).to(dtype)
    x[1, 7], x[2], x[3, -1] = math.nan, 0.0, math.inf
    weight = (1 + 0.5 * torch.randn(hidden, dtype=F64)).to(dtype)
    nan_weight = weight.clone()
    nan_weight[5] = math.nan
    tiny = torch.randn(hidden, dtype=F64) * 1e-38
    tiny[::3] *= 1e-2  # 1e-40: subnormal
    tiny[::7] = 0.0
    tiny = tiny.to(wdt)
    if kind == "rms":
        tiny_case = (torch.ones(3, hidden, dtype=dtype), tiny, None, 0.0)
    else:
        constant_rows = (torch.tensor([[0.5], [1.0], [1.5]]) * torch.ones(3, hidden)).to(dtype)
        tiny_case = (constant_rows, None, tiny, EPS[kind])
    return [("nan-inf-zero", x, weight, None, EPS[kind], [1, 2, 3]),
            ("nan-weight", x[[0, 4]], nan_weight, None, EPS[kind], []),
            ("tiny", *tiny_case, [0, 1, 2])]


@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [384, 4095, 24576], ids=["row", "row-scalar", "fallback"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("quant", ["dynamic", "static"])
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_nan_zero_inf_tiny_rows_match_cpu(kind, quant, dtype, hidden):
    """The CUDA kernels follow the CPU op's row rule: scale NaN exactly where the CPU's is (q = 0
    at a NaN), and bit for bit the CPU's q and scales where y is exact in float32 (zero, NaN, inf
    and tiny rows: a kernel that flushes subnormals to zero, or saturates them to +-127, fails);
    elsewhere q within 1 of the CPU's."""
    scale = torch.tensor([0.02]) if quant == "static" else None
    for name, x, weight, bias, eps, exact in special_rows(kind, dtype, hidden):
        cpu = run(kind, x, None, weight, bias, quant, scale, eps)
        _poison_cuda([(x.shape, torch.int8), (x.shape[:-1], F32)])
        gpu = run(kind, x.cuda(), None, *[None if t is None else t.cuda() for t in (weight, bias)], quant,
                  None if scale is None else scale.cuda(), eps)
        q, s = gpu.q.cpu(), gpu.scales.cpu()
        assert torch.equal(s.isnan(), cpu.scales.isnan()), name
        assert (q.int() - cpu.q.int()).abs().max().item() <= 1, name
        assert torch.equal(q[exact], cpu.q[exact]), name
        torch.testing.assert_close(s[exact], cpu.scales[exact], rtol=0, atol=0, equal_nan=True, msg=name)
        if name == "nan-weight":
            assert (q[:, 5] == 0).all() and s.isnan().all()


@pytest.mark.gpu
def test_cuda_zero_tokens_and_device_mismatch():
    x = torch.randn(0, 384, dtype=F16, device="cuda")
    assert rms_norm(x).shape == (0, 384)
    q, s = layer_norm_quant(x)
    assert q.shape == (0, 384) and s.shape == (0,)
    x = torch.randn(4, 384, dtype=F16, device="cuda")
    with pytest.raises(ValueError, match=r"squash::rms_norm: weight must be on cuda:0 like x, got cpu"):
        rms_norm(x, torch.randn(384, dtype=F16))
    with pytest.raises(ValueError, match=r"squash::add_layer_norm_quant: scale must be on cuda"):
        layer_norm_quant(x, residual=x.clone(), scale=torch.tensor([0.1]))


@pytest.mark.usefixtures("each_cpu_isa")
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_quant_nan_row_shows(static):
    """A row whose y holds NaN gets scale NaN (its NaN elements q = 0), so a W8A8 layer fed by it
    returns NaN like float would; the other rows are untouched."""
    x = torch.randn(4, 100)
    x[2, 17] = float("nan")
    scale = torch.tensor([0.05]) if static else None
    rows = [0, 1, 3]
    for op in (lambda t: layer_norm_quant(t, scale=scale), lambda t: rms_norm_quant(t, scale=scale)):
        q, s = op(x)
        assert s[2].isnan() and not s[rows].isnan().any()
        assert (q[2] == 0).all()  # every y of the row is NaN (the statistics are)
        q_ok, s_ok = op(x[rows])
        assert torch.equal(q[rows], q_ok) and torch.equal(s[rows], s_ok)


@pytest.mark.usefixtures("each_cpu_isa")
def test_quant_tiny_row_within_half_step():
    """|y| ~ 1e-38: 127 / absmax overflows float32; the row must still quantize within half a
    step of y / s (not +-127 everywhere), and a zero element stays 0."""
    w = torch.tensor([1e-38, -5e-39, 0.0, 2.5e-39, 7e-39, -1e-38])
    h = torch.ones(1, 6)
    q, s = rms_norm_quant(h, w, eps=0.0)
    y = w.double()
    assert s.item() > 0 and (q[0].double() - y / s.double()).abs().max().item() <= 0.5 + 1e-3
    assert q[0, 2].item() == 0
