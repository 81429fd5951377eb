"""replace_linear on tiny HF models (Llama with GQA, OPT, BERT): what is replaced and skipped and
why, the packed weights, outputs against the float model and against the same model with its
weights fake-quantized, filter_fn, overrides, idempotence, memory release and the report."""

import copy
import gc
import weakref

import pytest
import torch
from rich.console import Console
from torch import nn

import squash_ops
from squash_ops.quant import W4A16Config, W8A8Config, W8A8Linear, W8A16Config, quantize_linear, replace_linear
from helpers import rel_mean_err
from quant_models import tiny_bert, tiny_llama, tiny_opt, token_batch

BUILDERS = {"llama": tiny_llama, "opt": tiny_opt, "bert": tiny_bert}
CONFIGS = [W8A16Config(), W4A16Config(64), W4A16Config(32, False), W8A8Config()]
# Every builder ties its output projection to the input embeddings.
TIED = {"llama": "lm_head", "opt": "lm_head", "bert": "cls.predictions.decoder"}


def _linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _fake_quant(float_model, qmodel, replaced):
    """``float_model`` with each replaced layer's weight set to the quantized module's dequantized
    weight and its activations treated as the module treats them: rounded to the compute dtype
    (weight-only) or quantized per token (W8A8 dynamic). Same function as ``qmodel``, plain torch."""
    ref = copy.deepcopy(float_model)
    for name in replaced:
        lin, q = ref.get_submodule(name), qmodel.get_submodule(name)
        with torch.no_grad():
            lin.weight.copy_(q.dequantized_weight())
        if isinstance(q, W8A8Linear):
            def fake_quant_input(mod, args):
                x = args[0]
                absmax = x.abs().amax(-1, keepdim=True)
                inv = torch.where(absmax > 0, 127 / absmax, torch.zeros_like(absmax))
                return (torch.clamp(torch.round(x * inv), -127, 127) * (absmax / 127),)
            lin.register_forward_pre_hook(fake_quant_input)
        else:
            cd = q.compute_dtype
            if lin.bias is not None:
                with torch.no_grad():
                    lin.bias.copy_(lin.bias.to(cd))
            lin.register_forward_pre_hook(lambda mod, args, cd=cd: (args[0].to(cd).float(),))
            lin.register_forward_hook(lambda mod, args, out, cd=cd: out.to(cd).float())
    return ref


@torch.no_grad()
def _worst_weight_error(float_model, qmodel, replaced):
    """max over replaced layers of ||W - W'|| / ||W||."""
    return max(
        float((float_model.get_submodule(n).weight - qmodel.get_submodule(n).dequantized_weight()).norm()
              / float_model.get_submodule(n).weight.norm())
        for n in replaced
    )


@pytest.mark.parametrize("config", CONFIGS, ids=squash_ops.quant.scheme_label)
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_outputs_close_to_float_and_equal_to_fake_quant(arch, config):
    model = BUILDERS[arch]()
    float_model = copy.deepcopy(model)
    report = replace_linear(model, config)  # weight-only layers: CPU-prepacked (the default here)
    assert list(report.replaced) == [n for n in _linear_names(float_model) if n != TIED[arch]]
    canonical = copy.deepcopy(model)
    squash_ops.unprepack(canonical)
    batch = token_batch()
    with torch.no_grad():
        out = model(**batch).logits
        out_canonical = canonical(**batch).logits
        ref_float = float_model(**batch).logits
        ref_fake = _fake_quant(float_model, model, report.replaced)(**batch).logits
    # Same function as plain torch on the dequantized weights: the canonical layout's weight-only
    # came out bit-exact here (the bf16 output rounding hides the fp32 summation order); W8A8 may
    # flip one int8 activation step (1/127 of a row's absmax) on a summation-order difference.
    # Wrong wiring (a layer fed another's weights, a scale off) would be an O(1) error.
    assert rel_mean_err(out_canonical, ref_fake) < 1e-3
    # The CPU prepacked kernels sum in another float32 order: their first layer's outputs differ
    # from the canonical op's by ~1e-6 (0.03% of the bf16 values flip by one ulp), but these tiny
    # random models amplify every flip layer by layer (BERT w8a16: 0.03% of the outputs differ
    # after the first linear, 58% after the fourth); measured 2.3e-3 to 4.9e-3 at the logits.
    assert rel_mean_err(out, out_canonical) < 2e-2
    # Against the float model, the error is the weight (and activation) quantization noise carried
    # through the network: measured 2.0-3.5x the worst layer's relative weight error
    # ||W - W'|| / ||W|| for weight-only (0.7% int8, 8-11% int4) and 2.9-5.0x for W8A8, whose
    # per-token activation noise is about as large as its weight noise (x sqrt 2).
    gain = 7 if isinstance(config, W8A8Config) else 5
    assert rel_mean_err(out, ref_float) < gain * _worst_weight_error(float_model, model, report.replaced)


def test_llama_report_skips_and_packed_weights():
    model = tiny_llama()
    float_model = copy.deepcopy(model)
    config = W4A16Config(128)
    report = replace_linear(model, config)
    # down_proj's in_features 320 cannot be split into groups of 128; lm_head is tied.
    downs = [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    assert report.skipped == {
        **{d: "in_features 320 is not a multiple of group_size 128" for d in downs},
        "lm_head": "weight tied to model.embed_tokens.weight; quantizing would untie them and free nothing "
                   "(name it in overrides to quantize it anyway)",
    }
    assert len(report.replaced) == 12 and set(report.replaced.values()) == {config}
    for name in report.replaced:
        mine = model.get_submodule(name)
        expected = quantize_linear(float_model.get_submodule(name), config)
        canonical = mine.canonical_buffers()  # the layers are CPU-prepacked: their canonical tensors
        assert torch.equal(canonical["qweight"], expected.qweight) and torch.equal(canonical["scales"], expected.scales)
    for name in report.skipped:
        assert type(model.get_submodule(name)) is nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    # Bytes: fp32 weights (4 B) -> 4-bit values + one fp32 scale per 128 (0.5 + 4/128 B).
    numel = sum(float_model.get_submodule(n).weight.numel() for n in report.replaced)
    assert report.weight_bytes_before == 4 * numel
    assert report.weight_bytes_after == numel // 2 + numel // 128 * 4
    float_bytes = sum(p.nbytes for p in float_model.parameters()) + sum(b.nbytes for b in float_model.buffers())
    assert report.model_bytes_before == float_bytes
    assert report.model_bytes_after == float_bytes - report.weight_bytes_before + report.weight_bytes_after


def test_filter_fn_sees_names_and_modules():
    model = tiny_opt()
    seen = []

    def attention_only(name, module):
        seen.append((name, type(module)))
        return name.endswith(("q_proj", "k_proj", "v_proj", "out_proj"))

    report = replace_linear(model, W8A16Config(), attention_only)
    assert seen == [(n, nn.Linear) for n in _linear_names(tiny_opt())]
    assert len(report.replaced) == 8
    assert report.skipped == {
        **{f"model.decoder.layers.{i}.{fc}": "excluded by filter_fn" for i in range(2) for fc in ("fc1", "fc2")},
        "lm_head": "excluded by filter_fn",
    }


def test_overrides_mix_schemes_keep_float_and_force_a_tied_layer():
    model = tiny_llama()
    batch = token_batch()
    report = replace_linear(model, W8A8Config(), overrides={
        "model.layers.0.mlp.down_proj": None,
        "model.layers.1.self_attn.q_proj": W4A16Config(32, False),
        "lm_head": W8A16Config(),
    })
    assert report.skipped == {"model.layers.0.mlp.down_proj": "kept in float by overrides"}
    assert report.replaced["model.layers.1.self_attn.q_proj"] == W4A16Config(32, False)
    assert report.replaced["lm_head"] == W8A16Config()
    assert report.replaced["model.layers.0.mlp.up_proj"] == W8A8Config()
    # Forcing the tied lm_head leaves the embedding as it was (float, still used for the input).
    assert type(model.model.embed_tokens) is nn.Embedding and model.model.embed_tokens.weight.requires_grad
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
    # The report's replaced dict replays the same choice on a fresh copy.
    again = tiny_llama()
    replay = replace_linear(again, W8A16Config(), lambda n, m: False, overrides=report.replaced)
    assert replay.replaced == report.replaced
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, model(**batch).logits)


def test_override_errors_name_the_layer():
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp.down_prj' \(did you mean "
                                         r"'model.layers.0.mlp.down_proj'\?\)"):
        replace_linear(model, W8A16Config(), overrides={"model.layers.0.mlp.down_prj": None})
    with pytest.raises(TypeError, match=r"overrides\['lm_head'\] must be a W8A16Config, W4A16Config or W8A8Config"):
        replace_linear(model, W8A16Config(), overrides={"lm_head": "w8a16"})
    with pytest.raises(TypeError, match="config must be a W8A16Config"):
        replace_linear(model, "w4a16")
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("proj"))


def test_second_call_is_idempotent_and_a_different_scheme_raises():
    model = tiny_bert()
    batch = token_batch()
    first = replace_linear(model, W8A8Config())
    with torch.no_grad():
        before = model(**batch).logits
    second = replace_linear(model, W8A8Config())
    assert second.replaced == {}
    assert second.skipped == {**{n: "already quantized (w8a8 dynamic)" for n in first.replaced}, **first.skipped}
    assert second.model_bytes_after == first.model_bytes_after
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)
    with pytest.raises(ValueError, match=r"bert.encoder.layer.0.attention.self.query is already quantized as "
                                         r"w8a8 dynamic; its float weight is gone, so it cannot become w8a16"):
        replace_linear(model, W8A16Config())
    # A filter that leaves the quantized layers out lets the rest be quantized on a second call.
    partial = tiny_bert()
    replace_linear(partial, W8A16Config(), lambda n, m: "attention" in n)
    more = replace_linear(partial, W8A16Config())
    assert set(more.replaced) == {n for n in first.replaced if "attention" not in n}


def test_float_weights_are_released():
    model = tiny_opt()
    weight = weakref.ref(model.model.decoder.layers[0].fc1.weight)
    replace_linear(model, W4A16Config(64))
    gc.collect()
    assert weight() is None


def test_structural_skips_and_errors():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd = nn.Linear(111, 16)        # odd in_features: no int4 packing
            self.shared = nn.Linear(64, 64)
            self.again = self.shared             # one module under two names
            self.attn = nn.MultiheadAttention(64, 4)
            self.normed = nn.utils.parametrizations.weight_norm(nn.Linear(64, 8))
            self.hooked = nn.Linear(64, 8)
            self.hooked.register_forward_hook(lambda *a: None)

    model = Odd()
    report = replace_linear(model, W4A16Config(32))
    assert report.skipped == {
        "odd": "in_features 111 is odd (int4 packs two input channels per byte)",
        "attn.out_proj": "inside nn.MultiheadAttention, which reads out_proj.weight directly",
        "normed": "parametrized weight (e.g. weight_norm); the parametrization would be lost",
        "hooked": "has forward hooks (e.g. accelerate offloading) that a replacement would lose",
    }
    assert list(report.replaced) == ["shared"] and model.again is model.shared
    # The W8 schemes take any in_features.
    assert "odd" in replace_linear(Odd(), W8A16Config()).replaced

    with pytest.raises(ValueError, match="model is itself a linear layer"):
        replace_linear(nn.Linear(64, 8), W8A16Config())
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(64, 8))
    with pytest.raises(ValueError, match="0 has its weight on the meta device"):
        replace_linear(meta, W8A16Config())


def test_report_renders_as_text_and_rich_table():
    report = replace_linear(tiny_llama(), W4A16Config(128))
    text = str(report)
    assert text.splitlines()[0].startswith("12 linear layers quantized, 3 left as they were; quantized weights")
    assert "model.layers.0.self_attn.q_proj  w4a16 g128 sym" in text
    assert "model.layers.1.mlp.down_proj     unchanged       in_features 320 is not a multiple" in text
    console = Console(record=True, width=220)
    console.print(report)
    rendered = console.export_text()
    assert "model.layers.1.self_attn.o_proj" in rendered and "weight tied to model.embed_tokens.weight" in rendered
    # fp32 -> 4 bits + an fp32 scale per 128 weights: 4 / (0.5 + 4/128) = 7.53x.
    assert "(7.53x smaller)" in rendered


def test_plan_replacement_is_what_replace_linear_does_and_touches_nothing():
    model = tiny_llama()
    overrides = {"model.layers.0.mlp.down_proj": None, "lm_head": W8A16Config()}
    before = {n: p.clone() for n, p in model.state_dict().items()}
    plan = squash_ops.plan_replacement(model, W4A16Config(64), overrides=overrides)
    assert all(type(model.get_submodule(n)) is nn.Linear for n in plan.names)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    report = replace_linear(model, W4A16Config(64), overrides=overrides)
    assert {layer.name: layer.config for layer in plan.layers} == report.replaced
    assert plan.names == list(report.replaced) and plan.skipped == report.skipped
    assert plan.skipped["model.layers.0.mlp.down_proj"] == "kept in float by overrides"
    assert "lm_head  w8a16" in str(plan)
    # A module under two names is one planned layer with both paths.
    shared = nn.Linear(64, 64)
    twice = nn.ModuleDict({"a": shared, "b": shared})
    assert [(p.name, p.paths) for p in squash_ops.plan_replacement(twice, W8A16Config()).layers] == [("a", ("a", "b"))]
    # It refuses what replace_linear refuses.
    with pytest.raises(ValueError, match="did you mean 'lm_head'"):
        squash_ops.plan_replacement(tiny_llama(), W8A16Config(), overrides={"lm_hed": None})


def test_top_level_exports():
    for name in ("replace_linear", "ReplaceReport", "W8A16Config", "W4A16Config", "W8A8Config", "plan_replacement",
                 "ReplacementPlan", "PlannedLayer"):
        assert name in squash_ops.__all__ and hasattr(squash_ops, name)
