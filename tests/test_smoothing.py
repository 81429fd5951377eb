"""Channel smoothing (migration/smoothing.py) through HF models.

Exactness: smoothing folded into the norms and the value -> attention-output pairs leaves the
float model as close to a float64 copy of the original as the original float32 model is (tiny
Llama with GQA, OPT, BERT, RoBERTa, random positive factors). The search never picks a factor
worse than none on its own objective, and quantize_w8a8(smooth=True) runs every layer as the
int8 computation of its (transformed) input.
"""

import copy

import pytest
import torch

import squash_ops  # noqa: F401  (loads the ops)
from squash_ops.migration import (
    ALPHAS, convert_norms, fold_value_smoothing, norm_sites, quantize_w8a8, search_smoothing, smoothing_factor,
    value_sites,
)
from squash_ops.quant import W8A8Config
from helpers import rel_mean_err
from migration_models import assert_as_exact_as_fp32, inputs, int8_reference, outputs, tiny

pytest.importorskip("transformers")

FAMILIES = ("llama", "opt_project_out", "bert", "roberta")


def test_smoothing_factor():
    act = torch.tensor([4.0, 0.0, 1.0, 9.0])
    w = torch.tensor([0.25, 1.0, 0.0, 1.0])
    s = smoothing_factor(act, w, 0.5)
    # sqrt(4) / sqrt(0.25) = 4; a dead activation or weight channel keeps 1; sqrt(9) / 1 = 3.
    assert torch.equal(s, torch.tensor([4.0, 1.0, 1.0, 3.0]))
    assert torch.equal(smoothing_factor(act, w, 1.0), torch.tensor([4.0, 1.0, 1.0, 9.0]))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        smoothing_factor(act, w, 1.5)


def test_gqa_value_channel_map():
    model = tiny("llama")  # 6 query heads, 2 kv heads, head_dim 16
    site = value_sites(model)[0]
    assert (site.heads, site.kv_heads, site.head_dim) == (6, 2, 16)
    src = site.output_channel_source()
    # Query heads 0-2 read kv head 0, heads 3-5 kv head 1 (transformers' repeat_kv order).
    assert src[3 * 16 + 5] == 16 + 5 and src[2 * 16 + 15] == 15 and src[5 * 16] == 16


def _random_smoothing(model):
    g = torch.Generator().manual_seed(3)
    norms = {s.norm: torch.exp(torch.randn(model.get_submodule(s.consumers[0]).in_features, generator=g))
             for s in norm_sites(model)[0]}
    values = [(site, torch.exp(torch.randn(model.get_submodule(site.value).out_features, generator=g)))
              for site in value_sites(model)]
    return norms, values


@pytest.mark.parametrize("migrate", [True, False], ids=["migrated", "plain"])
@pytest.mark.parametrize("family", FAMILIES)
def test_folded_smoothing_is_exact_on_tiny_models(family, migrate):
    model = tiny(family)
    smoothed = copy.deepcopy(model)
    norms, values = _random_smoothing(smoothed)
    for site, s in values:
        fold_value_smoothing(smoothed, site, s)
    report = convert_norms(smoothed, 4.0 if migrate else None, smoothing=norms)
    assert all(s.smoothed for s in report.sites)
    assert_as_exact_as_fp32(model, smoothed, inputs())


def test_exactness_check_catches_a_half_folded_value_site():
    model = tiny("llama")
    broken = copy.deepcopy(model)
    site = value_sites(broken)[0]
    s = torch.exp(torch.randn(broken.get_submodule(site.value).out_features))
    fold_value_smoothing(broken, site, s)
    with torch.no_grad():  # undo the output projection's half: the value rows stay divided
        out = broken.get_submodule(site.output)
        out.weight /= s[site.output_channel_source()]
    with pytest.raises(AssertionError, match="migrated error"):
        assert_as_exact_as_fp32(model, broken, inputs())


def _calibration():
    return [inputs(seq=9) for _ in range(3)]


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_search_never_picks_worse_than_none(family):
    model = tiny(family)
    before = copy.deepcopy(model.state_dict())
    cfg = {p: W8A8Config("dynamic") for p in squash_ops.migration.block_linears(model)}
    plan = search_smoothing(model, cfg, _calibration())
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())  # read only
    kinds = [s.kind for s in plan.sites]
    assert kinds.count("value") == kinds.count("ffn_down") == 2 and kinds.count("norm") >= 4
    for s in plan.sites:
        assert s.error_after <= s.error_before
        assert (s.alpha is None) == bool((s.factor == 1).all()) and (s.alpha is None or s.alpha in ALPHAS)
    assert any(s.alpha is not None for s in plan.sites)  # _spread_norms' channels leave something to smooth


@pytest.mark.parametrize("activation", ["dynamic", "static"])
@pytest.mark.parametrize("family", ["llama", "opt_project_out", "bert"])
def test_smoothed_w8a8_is_the_int8_computation(family, activation):
    model = tiny(family)
    q = copy.deepcopy(model)

    def config(path, _lin):
        rotation = 16 if path in squash_ops.migration.ffn_down_paths(model) else 0
        return W8A8Config(activation, rotation=rotation)

    report = quantize_w8a8(q, config, calibration=_calibration(), smooth=True)
    runtime = report.smoothing.runtime_factors()
    checked = set()

    def check(path):
        def hook(mod, args, out):
            x = args[0]
            xt = mod.transform_input(x)
            assert rel_err(out, int8_reference(mod, xt)) < 1e-5, path
            checked.add(path)
        return hook

    def rel_err(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    for path in report.replaced.replaced:
        mod = q.get_submodule(path)
        assert (mod.input_mul is not None) == (path in runtime), path
        mod.register_forward_hook(check(path))
    batch = inputs()
    got, ref = outputs(q, batch), outputs(model, batch)
    assert checked == set(report.replaced.replaced)
    for key in ref:
        valid = batch["attention_mask"].bool() if key != "pooler_output" else slice(None)
        # int8 weights and activations vs float, as in test_migration's W8A8 test (2-6% there;
        # a broken fold or transform is far beyond 15%).
        assert rel_mean_err(got[key][valid], ref[key][valid]) < 0.15, key


def test_smoothing_needs_calibration_and_restores_on_failure(monkeypatch):
    model = tiny("bert")
    with pytest.raises(ValueError, match="smoothing is searched on them; pass calibration batches"):
        quantize_w8a8(model, W8A8Config(), smooth=True)
    before = {k: t.clone() for k, t in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]

    def fail(*args, **kwargs):  # the last step fails: values, norms and linears were all changed
        raise RuntimeError("calibration failed")

    monkeypatch.setattr(squash_ops.migration.w8a8, "calibrate", fail)
    with pytest.raises(RuntimeError, match="calibration failed"):
        quantize_w8a8(model, W8A8Config("static"), calibration=_calibration(), smooth=True)
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(t, before[k]) for k, t in model.state_dict().items())


def test_folded_only_smoothing_adds_no_runtime_op():
    model = tiny("opt_project_out")
    report = quantize_w8a8(model, W8A8Config(), calibration=_calibration(), smooth=True, runtime_smoothing=False)
    assert {s.kind for s in report.smoothing.sites} == {"norm", "value"}
    assert not any(m.transforms_input for m in model.modules() if isinstance(m, squash_ops.quant.W8A8Linear))
    with pytest.raises(ValueError, match="kinds must be among"):
        search_smoothing(tiny("bert"), {}, _calibration(), kinds=("qkv",))
