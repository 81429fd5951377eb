"""The native CPU kernels (csrc/kernels/cpu) on every ISA path this machine runs, forced through
``squash_ops.cpu.use_isa``: each path against exact integer / float64 references and bit for bit
against the scalar path, over awkward shapes."""

import pytest
import torch

import squash_ops as so
from squash_ops import cpu

RUNNABLE = [isa for isa in cpu.ISAS if cpu.ISAS.index(isa) <= cpu.ISAS.index(cpu.detected_isa())]


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
@pytest.mark.parametrize("mnk", [(1, 8, 64), (2, 111, 4104), (3, 3, 31), (5, 1, 33), (17, 49, 384),
                                 (64, 96, 96), (65, 50, 1536), (97, 9, 100)],
                         ids=lambda s: "x".join(map(str, s)))
def test_w8a8_paths_exact(isa, mnk):
    """int32 sums exact (float32 out with unit scales equals the int64 product), and every path's
    epilogue bit-identical to the scalar path's for each output dtype."""
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
def test_w8a8_paths_nonfinite_scales_propagate(isa):
    x_q, xs, qweight, ws, _ = _w8a8_case(9, 16, 64)
    xs[3] = float("nan")
    with cpu.use_isa(isa):
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            out = so.w8a8_gemm(x_q, xs, qweight, ws, out_dtype=dt)
            assert out[3].isnan().all() and out[torch.arange(9) != 3].isfinite().all()
