"""layer_norm_and_quant / rms_norm_and_quant: the float output and the int8 output of one norm
(of x + residual when given), which a migrated norm feeding W8A8 layers and a residual needs.
Each equals the two-op composition (the float op, then the quant op on its rounded sum) bit for
bit, on every CPU ISA path, every dtype, with and without residual, weight, bias, static scale;
opcheck. Argument checks are the norm ops' (test_no_garbage.py covers them through its table)."""

import pytest
import torch

import squash_ops as so

ISAS = so.cpu.runnable_isas()


def _composite(kind, x, residual, weight, bias, eps, scale):
    if kind == "layer":
        out, h = (so.layer_norm(x, weight, bias, eps), x) if residual is None else \
            so.layer_norm(x, weight, bias, eps, residual=residual)
        return (out, *so.layer_norm_quant(h, weight, bias, eps, scale=scale))
    out, h = (so.rms_norm(x, weight, eps), x) if residual is None else so.rms_norm(x, weight, eps, residual=residual)
    return (out, *so.rms_norm_quant(h, weight, eps, scale=scale))


def _fused(kind, x, residual, weight, bias, eps, scale):
    if kind == "layer":
        return so.layer_norm_and_quant(x, weight, bias, eps, residual=residual, scale=scale)
    return so.rms_norm_and_quant(x, weight, eps, residual=residual, scale=scale)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("hidden", [384, 37])
def test_equals_the_two_op_composition(hidden, kind, dtype, isa):
    g = torch.Generator().manual_seed(hidden)
    x = (torch.randn(9, hidden, generator=g) * 3).to(dtype)
    r = torch.randn(9, hidden, generator=g).to(dtype)
    w, b = torch.rand(hidden, generator=g) + 0.5, torch.randn(hidden, generator=g)
    x[4, 7] = float("nan")  # the row rule: scale NaN on both paths
    with so.cpu.use_isa(isa):
        for residual in (None, r):
            for weight, bias in ((w, b if kind == "layer" else None), (None, None)):
                for scale in (None, torch.tensor([0.03])):
                    fused = _fused(kind, x, residual, weight, bias, 1e-5, scale)
                    ref = _composite(kind, x, residual, weight, bias, 1e-5, scale)
                    for a, e in zip(fused, ref):
                        assert a.dtype == e.dtype and torch.equal(a.nan_to_num(7.0), e.nan_to_num(7.0))
                    assert fused[2][4].isnan() and not fused[2][:4].isnan().any()


def test_opcheck():
    x, r = torch.randn(5, 64, dtype=torch.bfloat16), torch.randn(5, 64, dtype=torch.bfloat16)
    w, b = torch.rand(64) + 0.5, torch.randn(64)
    torch.library.opcheck(torch.ops.squash.layer_norm_and_quant.default, (x, r, w, b, 1e-5, None))
    torch.library.opcheck(torch.ops.squash.layer_norm_and_quant.default, (x.float(), None, None, b, 1e-5,
                                                                        torch.tensor([0.1])))
    torch.library.opcheck(torch.ops.squash.rms_norm_and_quant.default, (x, r, w, 1e-6, None))
