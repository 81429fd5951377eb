"""The quantized nn.Linear replacements: each module against a float64 matmul of its own
dequantized weight, the pre-quantized activation path, static-scale rules, state_dict round
trips and torch.compile."""

import pytest
import torch
from torch import nn

import squash_ops  # noqa: F401
from squash_ops.quant import (
    QuantizedActivation, W4A16Config, W4A16Linear, W8A8Config, W8A8Linear, W8A16Config, quantize_linear,
)
from helpers import GEMM_REL_MEAN_ERR, rel_mean_err

WEIGHT_ONLY = [W8A16Config(), W4A16Config(), W4A16Config(32, False), W4A16Config(-1, True)]


def _linear(k, n, bias, dtype=torch.float32):
    torch.manual_seed(k * 7 + n)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.bias.uniform_(-1, 1) if bias else None
    return lin.to(dtype)


@pytest.mark.parametrize("config", WEIGHT_ONLY, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_only_vs_dequantized_matmul(config, dtype, bias):
    lin = _linear(256, 40, bias, dtype)
    m = quantize_linear(lin, config)
    x = torch.randn(2, 3, 256, dtype=dtype)
    y = m(x)
    assert y.shape == (2, 3, 40) and y.dtype == dtype
    # Reference: the activation rounded to the compute dtype, the module's own dequantized weight,
    # float64 accumulate, bias rounded to the compute dtype (where the module keeps it).
    xc = x.to(m.compute_dtype).double()
    ref = xc @ m.dequantized_weight().double().T
    if bias:
        ref = ref + lin.bias.detach().to(m.compute_dtype).double()
    # One rounding of the output to the compute dtype (then to x.dtype): TARGETS' GEMM bound.
    assert rel_mean_err(y, ref) < GEMM_REL_MEAN_ERR[m.compute_dtype]


def test_weight_only_compute_dtype_follows_half_weights():
    assert quantize_linear(_linear(64, 8, True, torch.float16), W8A16Config()).compute_dtype == torch.float16
    assert quantize_linear(_linear(64, 8, True), W4A16Config(32)).compute_dtype == torch.bfloat16


@pytest.mark.parametrize("activation", ["dynamic", "static"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a8_vs_int_reference(activation, dtype):
    lin = _linear(192, 24, True)
    m = quantize_linear(lin, W8A8Config(activation))
    x = torch.randn(5, 192).to(dtype)
    xf = x.double()
    if activation == "static":
        scale = float(x.float().abs().max()) / 127
        m.set_input_scale(scale)
        xs = torch.full((5, 1), scale, dtype=torch.float64)
    else:
        xs = xf.abs().amax(-1, keepdim=True) / 127
    xq = torch.clamp(torch.round(xf / xs), -127, 127)
    ref = (xq @ m.qweight.double().T) * xs * m.scales.double() + lin.bias.detach().double()
    y = m(x)
    assert y.dtype == dtype
    # The int8 GEMM is exact; what is left is the float scale products and one output rounding.
    tol = {torch.float32: 1e-5, torch.bfloat16: 4e-3}[dtype]
    assert rel_mean_err(y, ref) < tol
    # Against the float layer: the int8 quantization error itself, a few tenths of a percent.
    assert rel_mean_err(y, lin(x.float())) < 0.02


def test_w8a8_pre_quantized_input_is_the_same_computation():
    m = quantize_linear(_linear(128, 16, False), W8A8Config())
    x = torch.randn(4, 128)
    q, s = squash_ops.quantize_activation_int8(x)
    assert torch.equal(m(QuantizedActivation(q, s, torch.float32)), m(x))
    with pytest.raises(ValueError, match=r"W8A8Linear: input must be \[\.\.\., 128\], got shape \[4, 64\]"):
        m(QuantizedActivation(q[:, :64], s, torch.float32))


def test_w8a8_static_requires_a_valid_scale():
    m = quantize_linear(_linear(64, 8, True), W8A8Config("static"))
    with pytest.raises(RuntimeError, match="static activation scale not set"):
        m(torch.randn(2, 64))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="input scale must be a finite positive number"):
            m.set_input_scale(bad)


def test_bad_configs_and_shapes():
    with pytest.raises(ValueError, match="group_size must be 32, 64, 128 or -1, got 48"):
        W4A16Config(48)
    with pytest.raises(ValueError, match="activation must be 'dynamic' or 'static'"):
        W8A8Config("per_token")
    with pytest.raises(ValueError, match="in_features must be even and a multiple of group_size 128, got 192"):
        W4A16Linear(192, 8)
    m = quantize_linear(_linear(64, 8, True), W8A16Config())
    with pytest.raises(ValueError, match=r"W8A16Linear: input must be \[\.\.\., 64\], got shape \[2, 32\]"):
        m(torch.randn(2, 32))


@pytest.mark.parametrize("config", WEIGHT_ONLY + [W8A8Config("static")], ids=str)
def test_state_dict_round_trip_is_bit_exact(config):
    src = quantize_linear(_linear(128, 24, True), config)
    if isinstance(src, W8A8Linear):
        src.set_input_scale(0.03)
    cls = type(src)
    kwargs = {} if config.name == "w8a16" else {"config": config}
    dst = cls(128, 24, True, **kwargs)
    if isinstance(dst, W8A8Linear):
        dst.set_input_scale(1.0)  # the buffer must exist to receive the saved scale
    dst.load_state_dict(src.state_dict())
    x = torch.randn(3, 128)
    assert torch.equal(dst(x), src(x))


def test_compile_fullgraph_quantized_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 32))
    q = nn.Sequential(
        quantize_linear(mlp[0], W4A16Config(64)), mlp[1], quantize_linear(mlp[2], W8A8Config()), mlp[3],
        quantize_linear(mlp[4], W8A16Config()),
    )
    x = torch.randn(4, 128)
    eager = q(x)
    compiled = torch.compile(q, fullgraph=True, backend="eager")(x)
    assert torch.equal(compiled, eager)
    assert rel_mean_err(eager, mlp(x)) < 0.1  # int4 g64 + int8 through three layers
