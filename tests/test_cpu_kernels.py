"""The native CPU kernels (csrc/kernels/cpu) on every ISA path this machine runs, forced through
``squash_ops.cpu.use_isa``: each path against exact integer / float64 references and bit for bit
against the scalar path, over awkward shapes."""

import pytest
import torch

import squash_ops as so
from squash_ops import cpu

RUNNABLE = cpu.runnable_isas()


def test_isa_switch():
    assert cpu.detected_isa() in cpu.ISAS and cpu.active_isa() in RUNNABLE
    before = cpu.active_isa()
    with cpu.use_isa("scalar"):
        assert cpu.active_isa() == "scalar"
    assert cpu.active_isa() == before
    with pytest.raises(ValueError, match="name must be one of"):
        cpu.set_isa("sse9")
    missing = [isa for isa in cpu.ISAS if isa not in RUNNABLE]
    for isa in missing:  # e.g. avx512 on an AVX2-only CPU: refused, never faked
        with pytest.raises(ValueError, match="this CPU cannot run"):
            cpu.set_isa(isa)


def _w8a8_case(m, n, k, *, with_min=False):
    x_q = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    qweight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    if with_min:  # -128 weights: the AVX2 sign trick cannot negate them (the scalar path takes them)
        qweight[n // 2, k // 3] = -128
        qweight[-1, -1] = -128
    return x_q, torch.rand(m) * 0.01 + 1e-3, qweight, torch.rand(n) * 0.01 + 1e-3, torch.randn(n)


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("mnk", [(1, 8, 64), (2, 111, 4104), (3, 3, 31), (5, 1, 33), (16, 13, 200), (17, 49, 384),
                                 (64, 96, 96), (65, 50, 1536), (97, 9, 100)],
                         ids=lambda s: "x".join(map(str, s)))
def test_w8a8_paths_exact(isa, mnk):
    """int32 sums exact (float32 out with unit scales equals the int64 product), and every path's
    epilogue bit-identical to the scalar path's for each output dtype. On avx512 with VNNI, M <= 16
    runs our VNNI block (tiles of 4 x 4, K % 64 tails, N % 4 edges) and M >= 17 at::_int_mm."""
    m, n, k = mnk
    x_q, xs, qweight, ws, bias = _w8a8_case(m, n, k, with_min=n > 4)
    exact = (x_q.long() @ qweight.long().T)
    ones_m, ones_n = torch.ones(m), torch.ones(n)
    with cpu.use_isa(isa):
        raw = so.w8a8_gemm(x_q, ones_m, qweight, ones_n, out_dtype=torch.float32)
        outs = {dt: so.w8a8_gemm(x_q, xs, qweight, ws, bias=bias, out_dtype=dt)
                for dt in (torch.float32, torch.float16, torch.bfloat16)}
    assert torch.equal(raw.double(), exact.double())  # |sums| < 2^24 here: exact in float32
    with cpu.use_isa("scalar"):
        for dt, out in outs.items():
            assert torch.equal(out, so.w8a8_gemm(x_q, xs, qweight, ws, bias=bias, out_dtype=dt)), dt
    ref = exact.double() * xs.double()[:, None] * ws.double() + bias.double()
    assert torch.allclose(outs[torch.float32].double(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("isa", RUNNABLE)
def test_w8a8_paths_extreme_values_exact(isa):
    """Every product at its extreme (+-128 x +-128 / 127): where a u8 x s8 pair sum saturates int16
    (vpmaddubsw) or a kernel narrows a partial sum, the int32 result is wrong. K = 1000 keeps
    |sum| <= 1000 * 128 * 128 < 2^24, exact in the float32 output."""
    k = 1000
    x_q = torch.full((6, k), -128, dtype=torch.int8)
    x_q[1] = 127
    x_q[2, ::2] = 127
    x_q[3] = torch.arange(k) % 256 - 128
    qweight = torch.full((5, k), -128, dtype=torch.int8)
    qweight[1] = 127
    qweight[2, 1::2] = 127
    qweight[3] = torch.flip(torch.arange(k) % 256 - 128, (0,))
    exact = (x_q.long() @ qweight.long().T)
    with cpu.use_isa(isa):
        raw = so.w8a8_gemm(x_q, torch.ones(6), qweight, torch.ones(5), out_dtype=torch.float32)
    assert torch.equal(raw.double(), exact.double())


@pytest.mark.parametrize("isa", RUNNABLE)
def test_w8a8_paths_nonfinite_scales_propagate(isa):
    x_q, xs, qweight, ws, _ = _w8a8_case(9, 16, 64)
    xs[3] = float("nan")
    with cpu.use_isa(isa):
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            out = so.w8a8_gemm(x_q, xs, qweight, ws, out_dtype=dt)
            assert out[3].isnan().all() and out[torch.arange(9) != 3].isfinite().all()


@pytest.mark.parametrize("isa", RUNNABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("k", [1, 7, 8, 111, 384, 4104])
def test_quantize_activation_paths(isa, dtype, k):
    """Every path against float64 (q = clamp(rne(x * inv)), ties within float32 rounding of
    x * inv) and bit for bit against the scalar path; dynamic and static."""
    x = (torch.randn(9, k, dtype=torch.float64) * 3).to(dtype)
    for scale in (None, torch.tensor([0.02])):
        with cpu.use_isa(isa):
            q, s = so.quantize_activation_int8(x, scale)
        with cpu.use_isa("scalar"):
            q0, s0 = so.quantize_activation_int8(x, scale)
        assert torch.equal(q, q0) and torch.equal(s, s0)
        xd = x.double()
        inv = 127.0 / xd.abs().amax(-1, keepdim=True) if scale is None else 1.0 / scale.double()
        v = xd * inv
        near_tie = (v - v.floor() - 0.5).abs() < 1e-4
        ref = v.round().clamp(-127, 127)
        assert ((q.double() - ref).abs() <= near_tie.double()).all()


@pytest.mark.parametrize("isa", RUNNABLE)
def test_quantize_activation_nan_and_tiny_rows(isa):
    """A NaN row gets scale NaN (q = 0 at the NaN), so W8A8 returns NaN there as float would; a
    zero row stays zero with scale 0; a row of magnitude ~1e-38 (127 / absmax overflows float32)
    quantizes within half a step instead of saturating."""
    x = torch.randn(4, 40)
    x[0, 5] = x[0, 37] = float("nan")  # first and last 8-lane chunk
    x[1] = 0.0
    x[2] = torch.linspace(-1e-38, 1e-38, 40)
    with cpu.use_isa(isa):
        q, s = so.quantize_activation_int8(x)
        qs, ss = so.quantize_activation_int8(x, torch.tensor([0.05]))
        w = torch.randint(-127, 128, (8, 40), dtype=torch.int8)
        out = so.w8a8_gemm(q, s, w, torch.ones(8), out_dtype=torch.float32)
    assert s[0].isnan() and q[0, 5] == 0 and ss[0].isnan() and not ss[1:].isnan().any()
    with cpu.use_isa("scalar"):  # the NaN row's other elements too: every path ignores NaN in absmax
        assert torch.equal(q, so.quantize_activation_int8(x)[0])
    assert out[0].isnan().all() and out[1:].isfinite().all()
    assert s[1] == 0 and (q[1] == 0).all()
    assert s[2] > 0 and (q[2].double() - x[2].double() / s[2].double()).abs().max() <= 0.5 + 1e-3
    assert s[3].isfinite() and q[3].abs().max() == 127
