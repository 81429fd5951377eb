"""calibrate: statistics and scales against values computed by hand from the same activations,
static W8A8 after calibration against dynamic W8A8, padding left out, float models and tensor
batches, and the errors."""

import copy

import pytest
import torch
from torch import nn

import squash_ops
from squash_ops.quant import QuantizedActivation, W8A8Config, W8A8Linear, calibrate, replace_linear
from helpers import rel_mean_err
from quant_models import tiny_bert, tiny_llama, tiny_opt, token_batch

BUILDERS = {"llama": tiny_llama, "opt": tiny_opt, "bert": tiny_bert}
# The |x| histogram keeps 9 mantissa bits: a percentile is within 2^-9 (relative) of the exact one.
PERCENTILE_RTOL = 2.0**-9


def _static_and_dynamic(build):
    """The same model twice with the same int8 weights: static (to calibrate) and dynamic."""
    static = build()
    dynamic = copy.deepcopy(static)
    float_model = copy.deepcopy(static)
    replace_linear(static, W8A8Config("static"))
    replace_linear(dynamic, W8A8Config("dynamic"))
    return static, dynamic, float_model


def _record_inputs(model, batches, names):
    """Every input of the named layers, by hand (while calibrating, static layers quantize per
    token, so the dynamic twin sees exactly the same activations)."""
    seen = {n: [] for n in names}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda mod, args, n=n: seen[n].append(args[0].detach().reshape(-1, args[0].shape[-1]))) for n in names]
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in handles:
        h.remove()
    return {n: torch.cat(xs) for n, xs in seen.items()}


def test_scales_and_statistics_equal_hand_computed():
    static, dynamic, _ = _static_and_dynamic(tiny_llama)
    batches = [token_batch(i, batch=2, seq=5 + 4 * i) for i in range(3)]
    names = [n for n, m in static.named_modules() if isinstance(m, W8A8Linear)]
    inputs = _record_inputs(dynamic, batches, names)

    stats = calibrate(static, batches, progress=False)
    assert list(stats) == names and stats.method == "minmax" and stats.percentile is None
    for name, x in inputs.items():
        s = stats[name]
        absmax = float(x.abs().max())
        assert s.tokens == x.shape[0] == 2 * (5 + 9 + 13)
        assert (s.min, s.max, s.absmax) == (float(x.min()), float(x.max()), absmax)
        assert torch.equal(s.token_absmax, x.abs().amax(-1)) and torch.equal(s.channel_absmax, x.abs().amax(0))
        scale = torch.tensor([absmax / 127])  # float32, like the buffer
        assert s.percentile is None and s.scale == float(scale)
        assert torch.equal(static.get_submodule(name).input_scale, scale)

    stats = calibrate(static, batches, "percentile", 99.0, progress=False)
    assert stats.method == "percentile" and stats.percentile == 99.0
    for name, x in inputs.items():
        exact = float(torch.quantile(x.abs().double().flatten(), 0.99))
        assert stats[name].percentile == pytest.approx(exact, rel=PERCENTILE_RTOL)
        assert float(static.get_submodule(name).input_scale) == stats[name].scale
        assert stats[name].scale == pytest.approx(stats[name].percentile / 127, rel=2**-24)
    # The 100th percentile is the maximum, exactly (it equals min-max).
    stats = calibrate(static, batches, "percentile", 100.0, progress=False)
    assert all(stats[n].percentile == float(x.abs().max()) for n, x in inputs.items())


@pytest.mark.parametrize("arch,method", [("llama", "minmax"), ("opt", "minmax"), ("bert", "minmax"),
                                         ("llama", "percentile")])
def test_static_after_calibration_close_to_dynamic(arch, method):
    static, dynamic, float_model = _static_and_dynamic(BUILDERS[arch])
    calibrate(static, [token_batch(i) for i in range(4)], method, 99.9, progress=False)
    batch = token_batch(10)  # not one of the calibration batches
    with torch.no_grad():
        y_static, y_dyn, y_float = (m(**batch).logits for m in (static, dynamic, float_model))
    # A static per-tensor step (range/127) is wider than a token's own (its absmax/127) by the ratio
    # of the calibrated range to a typical token's, ~1.5-2x on these models: the static model's
    # noise was measured at 1.1-2.1x the dynamic one's (int8 weights in both). A missing or wrong
    # scale gives O(1) errors.
    noise = rel_mean_err(y_dyn, y_float)
    assert rel_mean_err(y_static, y_float) < 2.5 * noise
    assert rel_mean_err(y_static, y_dyn) < 2.5 * noise


def test_padding_tokens_are_left_out():
    static, _, _ = _static_and_dynamic(tiny_llama)
    g = torch.Generator().manual_seed(3)
    long, short = torch.randint(0, 256, (1, 11), generator=g), torch.randint(0, 256, (1, 6), generator=g)
    # Right padding with arbitrary token ids: causal attention keeps the real tokens unaffected.
    padded = {"input_ids": torch.cat([long, torch.cat([short, torch.randint(0, 256, (1, 5), generator=g)], 1)]),
              "attention_mask": torch.tensor([[1] * 11, [1] * 6 + [0] * 5])}
    separate = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids in (long, short)]
    a = calibrate(copy.deepcopy(static), [padded], progress=False)
    b = calibrate(static, separate, progress=False)
    for name in a:
        assert a[name].tokens == b[name].tokens == 17
        # Same tokens, batched differently: equal up to float summation order.
        assert a[name].absmax == pytest.approx(b[name].absmax, rel=1e-5)
        torch.testing.assert_close(a[name].token_absmax, b[name].token_absmax, rtol=1e-5, atol=1e-6)


def test_float_model_tensor_batches_and_observe_all():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 16))
    before = copy.deepcopy(model.state_dict())
    xs = [torch.randn(3, 5, 48) * (i + 1) for i in range(3)]
    with pytest.raises(ValueError, match="no static W8A8Linear layer to calibrate.*observe='all'"):
        calibrate(model, xs, progress=False)
    stats = calibrate(model, xs, "percentile", 99.5, observe="all", progress=False)
    x = torch.cat(xs).reshape(-1, 48)
    h = nn.functional.gelu(model[0](x)).detach()
    for name, inp in (("0", x), ("2", h)):
        assert stats[name].tokens == 45
        assert stats[name].absmax == float(inp.abs().max())
        assert stats[name].percentile == pytest.approx(float(torch.quantile(inp.abs().flatten(), 0.995)),
                                                        rel=PERCENTILE_RTOL)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # Tuples are unpacked as positional arguments; a mixed float/static model gets only its
    # static layers' scales, and the float layers' statistics come with them.
    model[2] = W8A8Linear.from_linear(model[2], W8A8Config("static"))
    stats = calibrate(model, [(x,) for x in xs], observe="all", progress=False)
    assert set(stats) == {"0", "2"} and float(model[2].input_scale) == stats["2"].scale


def test_pre_quantized_inputs_are_observed_dequantized():
    torch.manual_seed(1)
    lin = W8A8Linear.from_linear(nn.Linear(64, 8), W8A8Config("static"))

    class FusedPath(nn.Module):  # stands for a fused norm + quant op feeding the linear
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            q, s = squash_ops.quantize_activation_int8(x)
            return self.lin(QuantizedActivation(q, s, x.dtype))

    x = torch.randn(7, 64)
    stats = calibrate(FusedPath(), [x], progress=False)
    q, s = squash_ops.quantize_activation_int8(x)
    assert stats["lin"].absmax == float((q.float() * s[:, None]).abs().max())


def test_uncalibrated_layers_and_bad_calls_raise_clearly():
    static, _, _ = _static_and_dynamic(tiny_opt)
    batch = token_batch()
    with pytest.raises(RuntimeError, match=r"static activation scale not set; run squash_ops.calibrate"):
        static(**batch)
    with pytest.raises(ValueError, match="method must be 'minmax' or 'percentile', got 'max'"):
        calibrate(static, [batch], "max")
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 0"):
        calibrate(static, [batch], "percentile", 0)
    with pytest.raises(ValueError, match="batches is empty"):
        calibrate(static, [], progress=False)

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = W8A8Linear.from_linear(nn.Linear(32, 32), W8A8Config("static"))
            self.spare = W8A8Linear.from_linear(nn.Linear(32, 32), W8A8Config("static"))

        def forward(self, x):
            return self.used(x)

    model = Unused()
    with pytest.raises(RuntimeError, match="static layers never saw an input token during calibration: spare"):
        calibrate(model, [torch.randn(4, 32)], progress=False)
    assert model.used.input_scale is None  # nothing set when calibration fails
    only_used = nn.Sequential(model.used)
    with pytest.raises(ValueError, match="calibrate: 0: the calibrated input range is 0"):
        calibrate(only_used, [torch.zeros(4, 32)], progress=False)
    with pytest.raises(ValueError, match="calibrate: 0: its inputs contained inf or NaN"):
        calibrate(only_used, [torch.full((4, 32), float("inf"))], progress=False)


def test_progress_bar_and_table(capsys):
    static, _, _ = _static_and_dynamic(tiny_bert)
    stats = calibrate(static, iter([token_batch(i) for i in range(3)]))
    assert "calibrate: " in capsys.readouterr().err
    from rich.console import Console
    console = Console(record=True, width=200)
    console.print(stats)
    text = console.export_text()
    assert "calibration (min-max)" in text and "bert.encoder.layer.1.output.dense" in text
