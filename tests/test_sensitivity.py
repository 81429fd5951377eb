"""Sensitivity analysis and the float fallback on tiny HF models built from configs (Llama with
GQA, BERT): the ranking finds a layer made sensitive on purpose, the fallback meets its budget with
the fewest float layers (checked by brute force), the plan applied independently gives the
evaluated numbers, the table and the plot come out, bad inputs are refused with clear messages."""

import copy
import itertools
import sys

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

import squash_ops  # noqa: F401
from squash_ops.quant import W4A16Config, W8A8Config, W8A16Config, calibrate, quantize_linear, replace_linear
from squash_ops.quant.sensitivity import analyze_sensitivity, row_cosines
from quant_models import tiny_llama, token_batch

CONFIGS = [W4A16Config(32), W8A16Config(), W8A8Config()]


pytestmark = pytest.mark.usefixtures("one_thread")
LLAMA_TARGET = "model.layers.1.mlp.down_proj"


def _llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _llama_batches(n=2):
    return [{"input_ids": torch.randint(0, 256, (2, 13))} for _ in range(n)]


def _make_sensitive(model, name, outlier):
    """Larger weights (the layer's output matters more downstream) and one outlier input column:
    every row's quantization step grows with the outlier, so the rest of the row loses precision.
    ``outlier`` (x the weight std) is picked per scheme: ~12 for int4 (step ~2 std: most weights
    round to 0), ~200 for int8."""
    with torch.no_grad():
        w = model.get_submodule(name).weight
        w *= 8
        w[:, 3] = outlier * w.std()


def _apply_plan(model, plan, batches=None):
    """The plan applied the way a user does: a copy, replace_linear with the plan as overrides,
    then calibrate when static W8A8 layers need scales. replace_linear's default layout, which
    the analysis evaluates too (prepacked on the CPU), so the verified numbers must match exactly."""
    model = copy.deepcopy(model)
    config = next(c for c in plan.values() if c is not None)
    report = replace_linear(model, config, overrides=plan)
    assert set(report.replaced) == {n for n, c in plan.items() if c is not None}
    if batches is not None:
        calibrate(model, batches, progress=False)
    return model


def _mean_cosine(model, ref_model, batches):
    with torch.no_grad():
        cos = [row_cosines(model(**b).logits.reshape(-1, 256), ref_model(**b).logits.reshape(-1, 256))
               for b in batches]
    return torch.cat(cos).mean().item()


def _logit_agreement(ref_model):
    """A user metric (higher is better): logits' cosine to the float model on held-out batches.
    (A loss is no good here: on a random model quantization noise moves it either way.)"""
    batches = _llama_batches(2)
    with torch.no_grad():
        refs = [ref_model(**b).logits for b in batches]

    def metric(model):
        with torch.no_grad():
            cos = [row_cosines(model(**b).logits, r) for b, r in zip(batches, refs)]
        return torch.cat(cos).mean().item()

    return metric


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_ranking_finds_the_sensitive_llama_layer(config):
    model = _llama()
    _make_sensitive(model, LLAMA_TARGET, 12 if isinstance(config, W4A16Config) else 200)
    batches = _llama_batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = analyze_sensitivity(model, config, batches, metric_fn=_logit_agreement(model),
                                 progress=False)
    assert report.ranking[0] == LLAMA_TARGET
    assert min(report.layers, key=lambda s: s.sqnr_db).name == LLAMA_TARGET
    target = report[LLAMA_TARGET]
    others = [s for s in report.layers if s.name != LLAMA_TARGET]
    assert target.cosine < min(s.cosine for s in others)
    assert target.relative_drop > max(s.relative_drop for s in others) > -1
    # 15 linears (7 per layer + lm_head), every one analyzed, the model left as it was.
    assert len(report.layers) == 15 and not report.skipped
    assert all(type(model.get_submodule(s.name)) is nn.Linear for s in report.layers)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_sqnr_matches_the_layer_output_error():
    """SQNR recomputed here from the layer's input captured in a float pass."""
    model = _llama()
    batches = _llama_batches(1)
    name = "model.layers.0.self_attn.o_proj"
    captured = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: captured.append((i[0], o)))
    with torch.no_grad():
        model(**batches[0])
    handle.remove()
    report = analyze_sensitivity(model, W4A16Config(64), batches, progress=False)
    x, y = captured[0]
    yq = quantize_linear(model.get_submodule(name), W4A16Config(64))(x)
    ref = 10 * torch.log10(y.double().pow(2).sum() / (yq.double() - y.double()).pow(2).sum()).item()
    assert report[name].sqnr_db == pytest.approx(ref, abs=1e-6)
    # int4 g64 on random (near-Gaussian) weights: ~6 dB per bit minus the Gaussian's peak factor.
    assert 15 < report[name].sqnr_db < 30


def test_bert_ranking_with_padding():
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    model = BertModel(cfg).eval()
    target = "encoder.layer.1.output.dense"  # the FFN down-projection feeding the last LayerNorm
    _make_sensitive(model, target, 200)
    ids = torch.randint(1, 128, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    batches = [{"input_ids": ids, "attention_mask": mask}]
    report = analyze_sensitivity(model, W8A16Config(), batches, progress=False)
    assert report.ranking[0] == target
    assert min(report.layers, key=lambda s: s.sqnr_db).name == target
    # The pooler is an nn.Linear too: 6 per layer + pooler.
    assert len(report.layers) == 13
    # Padding positions are out of the cosine: recomputed here over the unpadded rows only (and
    # the all-rows mean differs, so the mask matters).
    plan = report.plan()
    assert all(c == W8A16Config() for c in plan.values())
    with torch.no_grad():
        cos = row_cosines(_apply_plan(model, plan)(**batches[0]).last_hidden_state,
                          model(**batches[0]).last_hidden_state)
    assert report.evaluate().cosine == pytest.approx(cos[mask.bool()].mean().item(), abs=1e-12)
    assert abs(cos.mean().item() - cos[mask.bool()].mean().item()) > 1e-6


def _int4_exact(model, keep):
    """Every linear but ``keep`` gets weights int4 g32 represents exactly: multiples of 2^-6 in
    [-7, 7] * 2^-6 with a +7 in every group, so absmax / 7 is the power of two itself and
    quantizing changes nothing. Only the ``keep`` layers make errors."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and name not in keep:
                m.weight.copy_(torch.round(m.weight * 64).clamp(-7, 7) / 64)
                m.weight[:, ::32] = 7 / 64


def test_fallback_keeps_the_fewest_float_layers():
    """Only two layers make quantization errors; the budget cannot be met while either is
    quantized, so the fallback must keep exactly those two, and brute force over every plan with
    fewer float layers confirms none meets it. bf16 model: the weight-only GEMM then computes in
    the model's own dtype, so the exact layers differ from float only by the kernel's float32
    summation order (the CPU prepacked kernel's differs from torch's: cosine within 1e-6 of 1,
    where the two target layers lose more than 1e-6)."""
    model = _llama(3).to(torch.bfloat16)
    targets = [LLAMA_TARGET, "model.layers.0.self_attn.o_proj"]
    _int4_exact(model, targets)
    batches = _llama_batches()
    report = analyze_sensitivity(model, W4A16Config(32), batches, progress=False)
    assert sorted(report.ranking[:2]) == sorted(targets)
    assert all(s.cosine > 1 - 1e-6 for s in report.layers[2:])
    budget = 1 - 1e-6
    fb = report.fallback(min_cosine=budget, progress=False)
    assert sorted(fb.float_layers) == sorted(targets)
    assert fb.final.cosine >= budget and fb.final.meets_budget
    for k in (0, 1):
        for float_layers in itertools.combinations(report.ranking, k):
            assert report.evaluate(float_layers).cosine < budget
    assert fb.trials[0].quantized == frozenset(report.ranking) and not fb.trials[0].meets_budget
    # The plan: every linear, the config where quantized, None where float.
    assert set(fb.plan) == {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {n for n, c in fb.plan.items() if c is None} == set(targets)
    assert all(c == W4A16Config(32) for c in fb.plan.values() if c is not None)
    # Applied independently, the plan gives exactly what the fallback verified.
    assert _mean_cosine(_apply_plan(model, fb.plan), model, batches) == fb.final.cosine


def test_fallback_ladder_keeps_int8_weights_where_they_suffice():
    """int4 -> W8A16 -> float: only the two target layers make errors under int4 (the others are
    exactly representable); with the budget between "both targets W8A16" and "one of them", the
    ladder must run exactly the targets as W8A16 and nothing float. With a budget only float
    meets (1 - 1e-6: W8A16's own error is larger), it must fall through to float for both, as the
    plain fallback does."""
    model = _llama(3).to(torch.bfloat16)
    targets = [LLAMA_TARGET, "model.layers.0.self_attn.o_proj"]
    _int4_exact(model, targets)
    batches = _llama_batches()
    report = analyze_sensitivity(model, W4A16Config(32), batches, progress=False)
    both = report.evaluate(demoted=dict.fromkeys(targets, W8A16Config())).cosine
    one = max(report.evaluate(demoted={t: W8A16Config()}).cosine for t in targets)
    assert one < both < 1 - 1e-6
    fb = report.fallback(min_cosine=(one + both) / 2, ladder=(W8A16Config(),), progress=False)
    assert fb.float_layers == [] and fb.demoted == dict.fromkeys(targets, W8A16Config())
    assert {n: c for n, c in fb.plan.items() if c != W4A16Config(32)} == fb.demoted
    assert fb.final.cosine == both and fb.final.meets_budget
    # Applied independently, the plan gives exactly what the fallback verified.
    applied = copy.deepcopy(model)
    replace_linear(applied, W4A16Config(32), overrides=fb.plan)
    assert _mean_cosine(applied, model, batches) == fb.final.cosine
    tight = report.fallback(min_cosine=1 - 1e-6, ladder=(W8A16Config(),), progress=False)
    assert sorted(tight.float_layers) == sorted(targets) and tight.demoted == {}
    with pytest.raises(TypeError, match="ladder must hold quantization configs"):
        report.fallback(min_cosine=0.9, ladder=(None,))


def test_fallback_verifies_the_combined_model():
    """A budget every single-layer quantization meets but the fully quantized model misses: the
    per-layer numbers cannot decide it; the fallback evaluates combinations until one meets it."""
    model = _llama(4)
    batches = _llama_batches()
    report = analyze_sensitivity(model, W4A16Config(32), batches, progress=False)
    all_quant = report.evaluate()
    worst_single = min(s.cosine for s in report.layers)
    assert all_quant.cosine < worst_single
    budget = (all_quant.cosine + worst_single) / 2
    fb = report.fallback(min_cosine=budget, progress=False)
    assert 1 <= len(fb.float_layers) < len(report.layers)
    assert _mean_cosine(_apply_plan(model, fb.plan), model, batches) >= budget
    # Pruned: no float layer can go back to quantized alone.
    for name in fb.float_layers:
        assert report.evaluate([n for n in fb.float_layers if n != name]).cosine < budget


def test_fallback_metric_budget():
    model = _llama(5)
    _make_sensitive(model, LLAMA_TARGET, 12)
    batches = _llama_batches()
    metric = _logit_agreement(model)
    report = analyze_sensitivity(model, W4A16Config(32), batches, metric_fn=metric, progress=False)
    assert report.baseline_metric == pytest.approx(1.0)
    all_quant = report.evaluate()
    assert all_quant.relative_drop > 0.005  # int4 everywhere costs more than half a percent here
    fb = report.fallback(max_relative_drop=0.005, progress=False)
    assert fb.final.relative_drop <= 0.005
    assert LLAMA_TARGET in fb.float_layers
    relative = (report.baseline_metric - metric(_apply_plan(model, fb.plan))) / report.baseline_metric
    assert relative == pytest.approx(fb.final.relative_drop, abs=1e-12)
    # Budget already met by the fully quantized model: nothing stays float, one evaluation.
    fb0 = report.fallback(max_relative_drop=all_quant.relative_drop + 1e-3, progress=False)
    assert fb0.float_layers == [] and len(fb0.trials) == 1


def test_metric_direction():
    """A lower-is-better metric: the negated metric with higher_is_better=False ranks the same and
    has the same relative drops."""
    model = _llama(6)
    _make_sensitive(model, LLAMA_TARGET, 200)
    batches = _llama_batches(1)
    metric = _logit_agreement(model)
    up = analyze_sensitivity(model, W8A16Config(), batches, metric_fn=metric, progress=False)
    down = analyze_sensitivity(model, W8A16Config(), batches, metric_fn=lambda m: -metric(m),
                               higher_is_better=False, progress=False)
    assert up.ranking == down.ranking and up.ranking[0] == LLAMA_TARGET
    for a, b in zip(up.layers, down.layers):
        assert a.relative_drop == pytest.approx(b.relative_drop, abs=1e-12) and a.relative_drop > -1e-9
        assert a.metric_delta == a.metric - up.baseline_metric == pytest.approx(-b.metric_delta, abs=1e-12)


def test_table_and_plot(tmp_path):
    from rich.console import Console

    model = _llama()
    batches = _llama_batches(1)
    report = analyze_sensitivity(model, W8A8Config(), batches, metric_fn=_logit_agreement(model),
                                 progress=False)
    fb = report.fallback(min_cosine=0.99999, progress=False)
    console = Console(width=200, record=True)
    console.print(report.table(fb, top=5))
    text = console.export_text()
    assert report.ranking[0] in text and "rel. drop" in text and "fallback (mean cosine >= 0.99999)" in text
    assert text.count("model.") + text.count("lm_head") == 5
    path = report.plot(tmp_path / "plots" / "sens.png", fallback=fb)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    report = analyze_sensitivity(_llama(), W8A16Config(), _llama_batches(1), progress=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="needs matplotlib: pip install matplotlib"):
        report.plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_filter_and_skipped_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 8))
    batches = [torch.randn(4, 64)]
    # group 64: in_features 96 and 48 are not multiples -> skipped with replace_linear's reason.
    report = analyze_sensitivity(model, W4A16Config(64), batches, progress=False)
    assert report.ranking == ["0"]
    assert report.skipped["2"] == "in_features 96 is not a multiple of group_size 64"
    assert report.fallback(min_cosine=0.5, progress=False).plan == {"0": W4A16Config(64), "2": None, "4": None}
    report = analyze_sensitivity(model, W8A16Config(), batches, filter_fn=lambda n, m: n != "4", progress=False)
    assert sorted(report.ranking) == ["0", "2"] and report.skipped == {"4": "excluded by filter_fn"}


def test_tied_lm_head_is_left_as_replace_linear_leaves_it():
    model = tiny_llama(tie=True)  # lm_head shares the embedding matrix
    batches = [token_batch()]
    report = analyze_sensitivity(model, W8A16Config(), batches, progress=False)
    assert "lm_head" not in report.ranking and "tied to model.embed_tokens.weight" in report.skipped["lm_head"]
    fb = report.fallback(min_cosine=0.99, progress=False)
    assert fb.plan["lm_head"] is None
    assert _mean_cosine(_apply_plan(model, fb.plan), model, batches) == pytest.approx(fb.final.cosine, abs=1e-12)


def test_w8a8_static_calibrated_like_the_user_would():
    """Static scales: single-layer trials use the float model's calibration; every fallback plan is
    calibrated after the swap, so replace_linear + calibrate on the same batches reproduces it."""
    model = tiny_llama(seed=2, tie=False)
    batches = [token_batch(seed=1), token_batch(seed=2)]
    report = analyze_sensitivity(model, W8A8Config("static"), batches, progress=False)
    name = report.ranking[0]
    alone = {n: (c if n == name else None) for n, c in report.plan().items()}
    assert _mean_cosine(_apply_plan(model, alone, batches), model, batches) == pytest.approx(
        report[name].cosine, abs=1e-12)
    all_quant = report.evaluate()
    fb = report.fallback(min_cosine=1 - (1 - all_quant.cosine) / 2, progress=False)
    assert fb.float_layers
    assert _mean_cosine(_apply_plan(model, fb.plan, batches), model, batches) == pytest.approx(
        fb.final.cosine, abs=1e-12)


def test_bad_inputs():
    model = _llama()
    batches = _llama_batches(1)
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        analyze_sensitivity({}, W8A16Config(), batches)
    with pytest.raises(TypeError, match="config must be a W8A16Config, W4A16Config or W8A8Config, got str"):
        analyze_sensitivity(model, "w8a16", batches)
    with pytest.raises(ValueError, match="batches is empty"):
        analyze_sensitivity(model, W8A16Config(), [])
    with pytest.raises(TypeError, match="batches must be a list of batches.*wrap a single batch in a list"):
        analyze_sensitivity(model, W8A16Config(), batches[0])
    with pytest.raises(ValueError, match="eval_batches is empty"):
        analyze_sensitivity(model, W8A16Config(), batches, eval_batches=iter([]))
    with pytest.raises(ValueError, match=r"no nn.Linear to analyze under W8A16Config\(\)"):
        analyze_sensitivity(model, W8A16Config(), batches, filter_fn=lambda n, m: False)
    with pytest.raises(ValueError, match="metric_fn returned nan; it must return a finite float"):
        analyze_sensitivity(model, W8A16Config(), batches, metric_fn=lambda m: float("nan"), progress=False)
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return {"y": self.lin(x)}

    with pytest.raises(TypeError, match="cannot find the output tensor in a dict; pass output_fn"):
        analyze_sensitivity(DictOut(), W8A16Config(), [torch.randn(2, 4)], progress=False)

    report = analyze_sensitivity(model, W8A16Config(), batches, progress=False)
    with pytest.raises(ValueError, match="give a budget: max_relative_drop, min_cosine and/or min_worst_cosine"):
        report.fallback()
    with pytest.raises(ValueError, match="max_relative_drop needs analyze_sensitivity"):
        report.fallback(max_relative_drop=0.01)
    with pytest.raises(ValueError, match=r"min_cosine must be in \[-1, 1\], got 1.5"):
        report.fallback(min_cosine=1.5)
    with pytest.raises(ValueError, match="max_relative_drop must be a finite number >= 0, got -0.1"):
        report.fallback(max_relative_drop=-0.1)
    with pytest.raises(ValueError, match=r"evaluate: not analyzed layers: \['nope'\]"):
        report.evaluate(["nope"])
    with pytest.raises(KeyError, match="no analyzed layer named 'nope'"):
        report["nope"]
    zero = analyze_sensitivity(model, W8A16Config(), batches, metric_fn=lambda m: 0.0, progress=False)
    with pytest.raises(ValueError, match="the float model's metric is 0, a relative drop is undefined"):
        zero.fallback(max_relative_drop=0.01)
