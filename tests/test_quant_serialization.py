"""save_quantized / load_quantized: bit-exact round trips into float and meta skeletons (mixed
schemes, calibrated static scales, float layers, tied weights, bf16), and a clear error for every
kind of corrupt or mismatched checkpoint."""

import json

import pytest
import torch
from helpers import copy_checkpoint, edit_checkpoint_json, edit_checkpoint_tensors
import transformers
from torch import nn

from squash_ops.quant import (
    CheckpointError, W4A16Config, W8A8Config, W8A16Config, calibrate, load_quantized, replace_linear, save_quantized,
)
from squash_ops.quant.linear import _QuantLinear
from quant_models import tiny_bert, tiny_llama, tiny_opt, token_batch

BUILDERS = {"llama": tiny_llama, "opt": tiny_opt, "bert": tiny_bert}
FIRST = {"llama": "model.layers.0", "opt": "model.decoder.layers.0", "bert": "bert.encoder.layer.0"}


def _quantized(arch, dtype=torch.float32):
    """A model with every scheme in it: W4A16 by default, one static W8A8 layer (calibrated), one
    W8A16 layer, one layer kept in float."""
    model = BUILDERS[arch]().to(dtype)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    first = [n for n in names if n.startswith(FIRST[arch])]
    report = replace_linear(model, W4A16Config(64, False), overrides={
        first[0]: W8A8Config("static"), first[1]: W8A16Config(), first[2]: None,
    })
    assert {type(c) for c in report.replaced.values()} == {W4A16Config, W8A8Config, W8A16Config}
    calibrate(model, [token_batch(7)], progress=False)
    return model


def _skeleton(model, meta):
    config = model.config
    if meta:
        with torch.device("meta"):
            return type(model)(config)
    torch.manual_seed(123)  # different weights: nothing may leak from the skeleton
    return type(model)(config)


def _assert_same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    for (na, ma), (nb, mb) in zip(a.named_modules(), b.named_modules()):
        assert na == nb and type(ma) is type(mb)
        if isinstance(ma, _QuantLinear):
            assert ma.config == mb.config and getattr(ma, "compute_dtype", None) == getattr(mb, "compute_dtype", None)


@pytest.mark.parametrize("meta", [True, False], ids=["meta", "float"])
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_round_trip_is_bit_exact(arch, meta, tmp_path):
    model = _quantized(arch)
    save_quantized(model, tmp_path)
    loaded = load_quantized(_skeleton(model, meta), tmp_path)
    _assert_same_model(model, loaded)
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))
    batch = token_batch(3)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
    emb = loaded.get_input_embeddings().weight
    assert loaded.get_output_embeddings().weight is emb  # the tie comes back as one tensor


def test_bf16_model_into_fp32_skeleton_and_config_json(tmp_path):
    model = _quantized("llama", torch.bfloat16)
    save_quantized(model, tmp_path)
    # The directory is self-contained: config.json rebuilds the skeleton (fp32 by default).
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        skeleton = transformers.AutoModelForCausalLM.from_config(config)
    loaded = load_quantized(skeleton, tmp_path)
    _assert_same_model(model, loaded)
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16


def test_plain_module_with_shared_layer(tmp_path):
    torch.manual_seed(0)
    shared = nn.Linear(64, 64)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(64, 32))
    replace_linear(model, W8A16Config())
    save_quantized(model, tmp_path)
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    skeleton[2] = skeleton[0]
    loaded = load_quantized(skeleton, tmp_path)
    assert loaded[0] is loaded[2]
    x = torch.randn(3, 64)
    assert torch.equal(loaded(x), model(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _quantized("llama")
    directory = tmp_path_factory.mktemp("saved")
    save_quantized(model, directory)
    return directory




def _load(directory, skeleton=None):
    if skeleton is None:
        with torch.device("meta"):
            skeleton = tiny_llama()
    return load_quantized(skeleton, directory)


Q = "model.layers.0.self_attn.k_proj"  # W8A16 in _quantized
UP = "model.layers.1.mlp.up_proj"  # W4A16 asymmetric


def test_corrupt_files(saved, tmp_path):
    d = copy_checkpoint(saved, tmp_path)
    data = (d / "squash_model.safetensors").read_bytes()
    (d / "squash_model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"ckpt/squash_model.safetensors cannot be read \(truncated or corrupt\?\)"):
        _load(d)
    (d / "squash_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="ckpt/squash_model.safetensors not found"):
        _load(d)
    (d / "squash_config.json").write_text('{"format": "squash_ops.quantized", ')
    with pytest.raises(CheckpointError, match="ckpt/squash_config.json is not valid JSON"):
        _load(d)
    (d / "squash_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="ckpt/squash_config.json not found"):
        _load(d)


@pytest.mark.parametrize("edit,message", [
    (lambda h: h.update(format_version=3),
     r"squash_config.json has format_version 3; this squash_ops \(0.1.0\) reads versions 1, 2; upgrade squash_ops"),
    (lambda h: h.update(format="gptq"), r"squash_config.json is not a squash_ops quantized-model config \(format 'gptq'\)"),
    (lambda h: h["layers"][Q]["config"].update(scheme="w3a16"),
     rf"squash_config.json: layer {Q}: it is a 'W8A16Linear' layer \(scheme 'w3a16'\), which squash_ops 0.1.0 "
     r"cannot rebuild"),
    (lambda h: h["layers"][Q].update(module="W4A16Linear"),
     rf"layer {Q}: module 'W4A16Linear' does not match scheme 'w8a16'"),
    (lambda h: h["layers"][UP]["config"].update(group_size=48),
     rf"layer {UP}: bad entry \(ValueError: W4A16Config: group_size must be 32, 64, 128 or -1, got 48\)"),
    (lambda h: h["layers"].update({"model.layers.7.mlp.up_proj": h["layers"][UP]}),
     r"layer model.layers.7.mlp.up_proj is not in the model \(LlamaForCausalLM\)"),
    (lambda h: h.update(save_id="0" * 32), r"come from different saves"),
], ids=["version", "format", "scheme", "module", "group", "extra_layer", "save_id"])
def test_bad_config_file(saved, tmp_path, edit, message):
    d = copy_checkpoint(saved, tmp_path)
    edit_checkpoint_json(d, edit)
    with pytest.raises(CheckpointError, match=message):
        _load(d)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.update({f"{UP}.scales": t[f"{UP}.scales"][:, :1].contiguous()}),
     rf"layer {UP}: {UP}.scales has shape \[320, 1\], the model expects \[320, 2\]"),
    (lambda t: t.update({f"{UP}.qweight": t[f"{UP}.qweight"].view(torch.int8)}),
     rf"layer {UP}: {UP}.qweight has dtype int8, the model expects uint8"),
    (lambda t: t.pop(f"{UP}.zeros"),
     rf"misses tensors the model needs: {UP}.zeros \(layers {UP}\)"),
    (lambda t: t.pop("model.norm.weight"), r"misses tensors the model needs: model.norm.weight \(layers model.norm\)$"),
    (lambda t: t.update({"model.extra": torch.zeros(3)}), r"holds tensors the model does not have: model.extra"),
    (lambda t: t.update({"model.norm.weight": t["model.norm.weight"][:64].clone()}),
     r"model.norm.weight has shape \[64\], the model expects \[128\]"),
], ids=["shape", "dtype", "missing_zeros", "missing_float", "unexpected", "float_shape"])
def test_bad_tensors_file(saved, tmp_path, edit, message):
    d = copy_checkpoint(saved, tmp_path)
    edit_checkpoint_tensors(d, edit)
    with pytest.raises(CheckpointError, match="squash_model.safetensors.*" + message):
        _load(d)


def test_wrong_model_for_the_checkpoint(saved):
    with torch.device("meta"):
        opt = tiny_opt()
        narrow = tiny_llama(hidden=64)
    with pytest.raises(CheckpointError, match="squash_config.json was saved from a LlamaForCausalLM, not a OPTForCausalLM"):
        load_quantized(opt, saved)
    with pytest.raises(CheckpointError, match=r"layer model.layers.0.self_attn.q_proj is 128->128 in the checkpoint "
                                              r"but 64->64 in the model"):
        load_quantized(narrow, saved)


def test_saving_a_meta_model_raises(tmp_path):
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="0.weight is on the meta device"):
        save_quantized(model, tmp_path)
