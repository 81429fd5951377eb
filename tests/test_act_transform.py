"""quantize_activation_int8_transformed: W8A8Linear's input transform (x * input_mul, then
normalised Hadamard blocks) fused with the int8 quantizer.

- Against float64: y64 = (x * input_mul) @ blockdiag(H_b / sqrt(b)) in float64; every q is within
  half a step (plus the float32 transform's rounding, far below 1e-3 step) of y64 / scale, and
  the dynamic scale is absmax(y64) / 127 to float32 rounding; static scales are used as given.
- Every ISA path gives the same bits as the scalar one (the butterflies round identically).
- The composite form (multiply, block matmul, quantize_activation_int8: what CUDA runs) agrees up
  to one step in rare elements; the row rule (NaN rows, zero rows) is quantize_activation_int8's.
- opcheck, and bad input refused naming the argument, on the CPU and on meta.
"""

import pytest
import torch
from helpers import raises_value_error as _raises

import squash_ops as so
from squash_ops.ops.gemm import _transformed_composite
from squash_ops.quant.rotation import hadamard, rotate_blocks

ISAS = so.cpu.runnable_isas()
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
STEP_TOL = 1e-3  # float32 transform error, in quantization steps: ~log2(b) * 2^-24 * 127 << 1e-3


def _ref(x, mul, rotation):
    y = x.double() * (mul.double() if mul is not None else 1.0)
    return rotate_blocks(y, hadamard(rotation, torch.float64)) if rotation else y


def _case(k, dtype, with_mul, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(7, k, generator=g) * torch.linspace(0.1, 8, k)).to(dtype)
    x[3, k // 3] = 60.0  # an outlier channel in one token: what the rotation spreads
    mul = torch.rand(k, generator=g) + 0.25 if with_mul else None
    return x, mul


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k, rotation", [(64, 0), (64, 2), (64, 4), (64, 8), (1536, 16), (96, 32), (4096, 64), (40, 8), (36, 4)])
@pytest.mark.parametrize("with_mul", [False, True], ids=["no_mul", "mul"])
def test_dynamic_vs_float64(with_mul, k, rotation, dtype, isa):
    x, mul = _case(k, dtype, with_mul)
    with so.cpu.use_isa(isa):
        q, s = so.quantize_activation_int8_transformed(x, mul, rotation)
    y = _ref(x, mul, rotation)
    assert q.dtype == torch.int8 and q.shape == x.shape and s.shape == x.shape[:-1]
    assert torch.allclose(s.double(), y.abs().amax(-1) / 127, rtol=1e-6, atol=0)
    assert (q.double() - y / s.double()[:, None]).abs().max() <= 0.5 + STEP_TOL
    assert q.abs().max() <= 127
    with so.cpu.use_isa("scalar"):
        q0, s0 = so.quantize_activation_int8_transformed(x, mul, rotation)
    assert torch.equal(q, q0) and torch.equal(s, s0)


@pytest.mark.parametrize("isa", ISAS)
def test_static_scale_vs_float64(isa):
    x, mul = _case(1536, torch.bfloat16, True)
    scale = torch.tensor([0.05])
    with so.cpu.use_isa(isa):
        q, s = so.quantize_activation_int8_transformed(x, mul, 16, scale)
    expect = (_ref(x, mul, 16) / 0.05).clamp(-127, 127)
    assert (q.double() - expect).abs().max() <= 0.5 + STEP_TOL
    assert (q.abs() == 127).any(), "the outlier row must clip at this scale"
    assert torch.equal(s, torch.full((7,), 0.05))


@pytest.mark.parametrize("rotation", [0, 16])
def test_matches_the_composite_form(rotation):
    """The CUDA path's composite (multiply, [.., K/b, b] @ H matmul, quantize_activation_int8)
    rounds the rotation differently: a q may move by one step, rarely; scales agree to rounding."""
    x, mul = _case(1536, torch.float32, True, seed=1)
    x = torch.cat([x, torch.randn(200, 1536) * 3])
    q, s = so.quantize_activation_int8_transformed(x, mul, rotation)
    qc, sc = _transformed_composite(x, mul, rotation, None)
    assert torch.allclose(s, sc, rtol=1e-6, atol=0)
    diff = (q.int() - qc.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    if rotation == 0:  # nothing to round differently
        assert torch.equal(q, qc)


@pytest.mark.parametrize("isa", ISAS)
def test_row_rule_nan_and_zero_rows(isa):
    x, mul = _case(64, torch.float32, True)
    x[1] = 0
    x[2, 5] = float("nan")
    with so.cpu.use_isa(isa):
        q, s = so.quantize_activation_int8_transformed(x, mul, 16)
        qr, sr = so.quantize_activation_int8(_ref(x, mul, 16).float())  # the same rows, transformed
    assert s[2].isnan() and not s[[0, 1, 3]].isnan().any()
    assert torch.equal(q[1], qr[1]) and s[1] == sr[1]  # a zero row stays zero, scale as the plain op's
    assert (q[1] == 0).all()


def test_opcheck():
    x, mul = _case(64, torch.bfloat16, True)
    op = torch.ops.squash.quantize_activation_int8_transformed.default
    torch.library.opcheck(op, (x, mul, 16, None))
    torch.library.opcheck(op, (x.float(), None, 0, torch.tensor([0.1])))
    torch.library.opcheck(op, (x.half()[:, :48], None, 8, None))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_bad_input_names_argument_and_expectation(device):
    f = so.quantize_activation_int8_transformed
    x, mul = (t.to(device) for t in _case(64, torch.float32, True))
    op = "squash::quantize_activation_int8_transformed"
    _raises(rf"{op}: rotation must be 0 \(none\) or a power of two >= 2 dividing K = 64, got 12", f, x, mul, 12)
    _raises(rf"{op}: rotation must be .* got 128", f, x, mul, 128)
    _raises(rf"{op}: rotation must be .* got 1\b", f, x, mul, 1)
    _raises(rf"{op}: input_mul must be \[K\] = \[64\] float32, got shape \[32\]", f, x, mul[:32], 16)
    _raises(rf"{op}: input_mul must be .*float32.*got float64", f, x, mul.double(), 16)
    _raises(rf"{op}: x must be .*float32.*got int8", f, x.to(torch.int8), None, 16)
    _raises(rf"{op}: scale must have exactly 1 element", f, x, None, 16, torch.ones(2, device=device))
    if device == "cpu":
        _raises(rf"{op}: scale must be finite and > 0, got 0", f, x, None, 16, torch.zeros(1))
        _raises(rf"{op}: input_mul must be on cpu like x, got meta", f, x, mul.to("meta"), 16)


def test_w8a8_linear_transforms_by_its_buffers_not_its_config():
    """W8A8Linear runs the transform its buffers hold (input_mul, input_rotation), as
    transform_input does: calibrate() swaps a static layer's config for W8A8Config('dynamic')
    while it observes, and a rotation taken from the config would then be skipped (that moved
    MiniLM's all-static cosine from 0.99877 / 0.99330 to 0.99843 / 0.99049)."""
    from squash_ops.quant import W8A8Config, W8A8Linear

    lin = torch.nn.Linear(64, 24)
    layer = W8A8Linear.from_linear(lin, W8A8Config("dynamic", rotation=16), smoothing=torch.rand(64) + 0.5)
    x = torch.randn(5, 64)
    before = layer.quantize_input(x)
    layer.config = W8A8Config("dynamic")
    after = layer.quantize_input(x)
    assert torch.equal(before.q, after.q) and torch.equal(before.scales, after.scales)
    q, s = so.quantize_activation_int8(layer.transform_input(x))
    assert (before.q.int() - q.int()).abs().max() <= 1 and torch.allclose(before.scales, s, rtol=1e-6, atol=0)
