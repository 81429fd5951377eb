"""The W8A8 input transforms: a per-channel multiply (``input_mul``, what a smoothing factor needs
where it cannot be folded) and a block Hadamard rotation (``W8A8Config(rotation=b)``).

Both are exact in float64 (transform and transformed weight give the layer back), the float32
transform at run time is within float32 rounding of it, and the layer is the int8 computation of
the transformed input (against tests/migration_models.int8_reference).
"""

import pytest
import torch
from torch import nn

import squash_ops  # noqa: F401  (loads the ops)
from squash_ops.quant import W8A8Config, W8A8Linear
from squash_ops.quant.rotation import hadamard, rotate_blocks
from migration_models import int8_reference


def test_hadamard_is_orthogonal_and_symmetric():
    for b in (2, 16, 128):
        h = hadamard(b, torch.float64)
        assert torch.equal(h, h.T)
        assert torch.allclose(h @ h, torch.eye(b, dtype=torch.float64), rtol=0, atol=1e-14)
    x = torch.randn(3, 5, 64, dtype=torch.float64)
    dense = torch.block_diag(*[hadamard(16, torch.float64)] * 4)
    assert torch.allclose(rotate_blocks(x, hadamard(16, torch.float64)), x @ dense, rtol=0, atol=1e-13)
    for bad in (1, 12, 2.0, -4):  # 0 is "no rotation"
        with pytest.raises(ValueError, match="power of two >= 2"):
            W8A8Config(rotation=bad)
    with pytest.raises(ValueError, match="block size 32 does not divide in_features 48"):
        W8A8Linear(48, 8, config=W8A8Config(rotation=32))


@pytest.mark.parametrize("config,smoothed", [
    (W8A8Config("dynamic"), True), (W8A8Config("dynamic", rotation=16), True),
    (W8A8Config("dynamic", rotation=16), False), (W8A8Config("static", rotation=8), True),
    (W8A8Config("static"), True)], ids=str)
def test_input_transform_is_exact_and_the_int8_computation(config, smoothed):
    lin = nn.Linear(96, 40)
    x = torch.randn(7, 96) * torch.exp(torch.randn(96))  # per-channel spread, as smoothing targets
    s = torch.exp(torch.randn(96)) if smoothed else None
    q = W8A8Linear.from_linear(lin, config, smoothing=s)
    assert q.transforms_input
    xt = q.transform_input(x)
    if config.activation == "static":
        q.set_input_scale(float(xt.abs().max()) / 127)
    # In float64 the transform and the transformed weight give the layer back exactly.
    w = lin.weight.double() * (1 if s is None else s.double())
    if config.rotation:
        w = rotate_blocks(w, hadamard(config.rotation, torch.float64))
    x64 = x.double() * (1 if s is None else 1 / s.double())
    if config.rotation:
        x64 = rotate_blocks(x64, hadamard(config.rotation, torch.float64))
    assert torch.allclose(x64 @ w.T, x.double() @ lin.weight.double().T, rtol=0, atol=1e-10)
    # float32 transform at run time: within float32 rounding of the float64 one.
    assert (xt.double() - x64).abs().max() <= 1e-6 * x64.abs().max()
    # The layer is the int8 computation of the transformed input.
    y = q(x)
    rel = ((y.double() - int8_reference(q, xt)).norm() / y.double().norm()).item()
    assert rel < 1e-5
    # dequantized_weight undoes the transform: within int8 weight rounding of the float weight.
    err = (q.dequantized_weight().double() - lin.weight.double()).abs().max()
    assert err <= 1e-6 + (w.abs().amax(1).max() / 127) * (1 if s is None else float(1 / s.min())), err
    with pytest.raises(ValueError, match="needs its float input, not a QuantizedActivation"):
        q(q.quantize_input(x))


def test_rotation_spreads_a_token_outlier():
    """What rotation is for: a token whose one channel is 30x the rest (MiniLM's post-GELU
    tokens: absmax 9-13x their RMS) gets absmax / RMS near 1 after a 32-block rotation, and its
    per-token int8 error drops accordingly."""
    x = torch.randn(64, 256) * 0.1
    x[torch.arange(64), torch.randint(0, 256, (64,))] = 3.0
    lin = nn.Linear(256, 32)
    ref = lin(x).double()
    errs = {}
    for rot in (0, 32):
        q = W8A8Linear.from_linear(lin, W8A8Config("dynamic", rotation=rot))
        xt = q.transform_input(x)
        ratio = (xt.abs().amax(-1) / xt.pow(2).mean(-1).sqrt()).median()
        errs[rot] = ((q(x).double() - ref).norm() / ref.norm()).item()
        assert (ratio > 10) if rot == 0 else (ratio < 4), (rot, ratio)
    assert errs[32] < errs[0] / 2, errs
