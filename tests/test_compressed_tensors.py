"""compressed-tensors in and out, checked against the real package: ours -> theirs -> ours exact on
tiny Llama / OPT / BERT; checkpoints written by their compressor -> ours exact; a GPTQ group
act-order (g_idx) checkpoint; migration folded or refused; clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

pytest.importorskip("compressed_tensors", reason="compressed-tensors is not installed (scripts/setup.sh)")

import squash_ops  # noqa: E402
from squash_ops.migration import quantize_w8a8  # noqa: E402
from squash_ops.quant import CheckpointError, W4A16Config, W4A16Linear, W8A8Config, W8A8Linear, W8A16Config, W8A16Linear  # noqa: E402,E501
from squash_ops.quant.compressed_tensors import pack_int32, unpack_int32  # noqa: E402
from squash_ops.quant.linear import _QuantLinear  # noqa: E402
from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs, QuantizationConfig, QuantizationScheme, apply_quantization_config,
)
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402
from transformers import CompressedTensorsConfig  # noqa: E402
from quant_models import random_norms, tiny_bert, tiny_llama, tiny_opt, token_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
BUILDERS = {"llama": tiny_llama, "opt": tiny_opt, "bert": tiny_bert}
CONFIGS = [W4A16Config(32, False), W4A16Config(64), W4A16Config(-1, False), W8A16Config(), W8A8Config()]


def _quantized(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, _QuantLinear)}


def _their_model(directory, cls):
    """The checkpoint as compressed-tensors decompresses it through transformers (float weights)."""
    return cls.from_pretrained(directory, quantization_config=CompressedTensorsConfig(dequantize=True),
                               dtype=torch.float32)


def _their_layers(directory, skeleton):
    """Each quantized layer's weight as compressed-tensors decompresses it, module by module: the
    config parsed by its own QuantizationConfig (which refuses unknown keys), each layer's scheme
    found by its own matcher. (transformers' dequantize=True path gives every dense layer the first
    config group, so a mixed-scheme checkpoint needs this.)"""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.utils.match import is_match

    qc = QuantizationConfig.model_validate(json.loads((directory / "config.json").read_text())["quantization_config"])
    tensors = load_file(directory / "model.safetensors")
    out = {}
    for name, module in skeleton.named_modules():
        scheme = next((g for g in qc.config_groups.values() if is_match(name, module, g.targets, qc.ignore)), None)
        if scheme is None:
            continue
        state = {k.removeprefix(name + "."): v for k, v in tensors.items() if k.rpartition(".")[0] == name}
        out[name] = BaseCompressor.get_value_from_registry(scheme.format).decompress(state, scheme)["weight"]
    return out


def test_packing_matches_theirs():
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32

    for bits in (4, 8):
        q = torch.randint(-(1 << bits - 1), 1 << bits - 1, (6, 52), dtype=torch.int8)  # 52: a part-filled last word
        ours = pack_int32(q.to(torch.int16) + (1 << bits - 1), bits)
        assert torch.equal(ours, pack_to_int32(q, bits))
        assert torch.equal(unpack_int32(ours, bits, 52) - (1 << bits - 1), q.to(torch.int16))
        assert torch.equal(unpack_from_int32(ours, bits, q.shape), q)


@pytest.mark.parametrize("config", CONFIGS, ids=squash_ops.quant.scheme_label)
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_ours_theirs_ours_exact(arch, config, tmp_path):
    model = BUILDERS[arch]()
    squash_ops.replace_linear(model, config)
    squash_ops.export_compressed_tensors(model, tmp_path)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["format"] == ("int-quantized" if isinstance(config, W8A8Config) else "pack-quantized")

    theirs = _their_model(tmp_path, type(model))
    for name, layer in _quantized(model).items():
        assert torch.equal(theirs.get_submodule(name).weight, layer.dequantized_weight()), name

    back = squash_ops.import_compressed_tensors(BUILDERS[arch](), tmp_path)
    for name, layer in _quantized(model).items():
        other = back.get_submodule(name)
        assert type(other) is type(layer) and other.config == layer.config
        for key, t in layer.canonical_buffers().items():
            assert (t is None) == (other.canonical_buffers()[key] is None), (name, key)
            assert t is None or torch.equal(t, other.canonical_buffers()[key]), (name, key)
    batch = token_batch()
    with torch.no_grad():
        assert torch.equal(back(**batch).logits, model(**batch).logits)


def test_mixed_schemes_and_float_layers(tmp_path):
    model = tiny_llama()
    overrides = {"model.layers.0.self_attn.q_proj": None, "model.layers.0.mlp.up_proj": W8A16Config(),
                 "model.layers.1.self_attn.v_proj": W8A8Config()}
    squash_ops.replace_linear(model, W4A16Config(32, False), overrides=overrides)
    squash_ops.export_compressed_tensors(model, tmp_path)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "mixed-precision" and len(qc["config_groups"]) == 3
    assert "model.layers.0.self_attn.q_proj" in qc["ignore"] and "lm_head" in qc["ignore"]  # float, tied
    theirs = _their_layers(tmp_path, tiny_llama())
    assert theirs.keys() == _quantized(model).keys()
    for name, layer in _quantized(model).items():
        assert torch.equal(theirs[name], layer.dequantized_weight()), name
    back = squash_ops.import_compressed_tensors(tiny_llama(), tmp_path)
    assert {n: m.config for n, m in _quantized(back).items()} == {n: m.config for n, m in _quantized(model).items()}
    batch = token_batch()
    with torch.no_grad():
        assert torch.equal(back(**batch).logits, model(**batch).logits)


def _their_checkpoint(model, scheme: QuantizationScheme, fmt: str, directory):
    """``model`` quantized and saved by compressed-tensors itself (min-max scales from its own
    calculate_qparams), as llmcompressor does: apply the config, compress, save, update config."""
    # The output heads stay float, as llmcompressor's recipes leave them (and transformers 5.17 cannot
    # load a compressed head tied to the embeddings).
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme},
                                                        ignore=["lm_head", "cls.predictions.decoder"]))
    args = scheme.weights
    for module in model.modules():
        if hasattr(module, "weight_scale"):
            w = module.weight.data
            if args.strategy == "group":
                w = w.reshape(w.shape[0], -1, args.group_size)
                lo, hi = w.amin(-1), w.amax(-1)
            else:
                lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
            scale, zero = calculate_qparams(lo, hi, args)
            module.weight_scale.data.copy_(scale)
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.data.copy_(zero)
    compressor = ModelCompressor.from_pretrained_model(model, fmt)
    compressor.compress_model(model)
    model.save_pretrained(directory)
    compressor.update_config(directory)


W4_GROUP_ASYM = QuantizationArgs(num_bits=4, symmetric=False, strategy="group", group_size=32)
W4_CHANNEL_SYM = QuantizationArgs(num_bits=4, symmetric=True, strategy="channel")
W8_CHANNEL_SYM = QuantizationArgs(num_bits=8, symmetric=True, strategy="channel")
TOKEN_DYNAMIC = QuantizationArgs(num_bits=8, symmetric=True, strategy="token", dynamic=True)
THEIR_SCHEMES = {
    "w4a16-g32-asym": (W4_GROUP_ASYM, None, "pack-quantized", W4A16Linear),
    "w4a16-channel-sym": (W4_CHANNEL_SYM, None, "pack-quantized", W4A16Linear),
    "w8a16-channel": (W8_CHANNEL_SYM, None, "pack-quantized", W8A16Linear),
    "w8a8-dynamic": (W8_CHANNEL_SYM, TOKEN_DYNAMIC, "int-quantized", W8A8Linear),
}


@pytest.mark.parametrize("scheme", list(THEIR_SCHEMES))
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_their_checkpoint_imports_exactly(arch, scheme, tmp_path):
    weights, acts, fmt, cls = THEIR_SCHEMES[scheme]
    _their_checkpoint(BUILDERS[arch](), QuantizationScheme(targets=["Linear"], weights=weights,
                                                          input_activations=acts), fmt, tmp_path)
    reference = BUILDERS[arch]()
    theirs = _their_model(tmp_path, type(reference))
    ours = squash_ops.import_compressed_tensors(reference, tmp_path)
    layers = _quantized(ours)
    assert len(layers) >= 12 and all(type(m) is cls for m in layers.values())
    for name, layer in layers.items():
        assert torch.equal(layer.dequantized_weight(), theirs.get_submodule(name).weight), name
    if acts is not None:
        assert all(m.config == W8A8Config("dynamic") for m in layers.values())


def test_int8_minus_128_runs_exactly(tmp_path, each_cpu_isa):
    """compressed-tensors' symmetric int8 scale is absmax / 127.5, so its weights reach -128, which
    squash's own quantizer never produces: the imported W8A8 and W8A16 layers compute with it
    exactly on every CPU kernel path (the CUDA kernels are not checked here)."""
    n, k = 16, 64
    q = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    q[:, :5] = -128
    scale = torch.rand(n, 1) / 50 + 1e-3
    w8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    for fmt, tensors, acts in (
        ("int-quantized", {"0.weight": q, "0.weight_scale": scale},
         {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}),
        ("pack-quantized", {"0.weight_packed": pack_int32(q.to(torch.int16) + 128, 8), "0.weight_scale": scale,
                            "0.weight_shape": torch.tensor([n, k])}, None),
    ):
        d = tmp_path / fmt
        d.mkdir()
        save_file(tensors, d / "model.safetensors")
        (d / "config.json").write_text(json.dumps({"quantization_config": {
            "quant_method": "compressed-tensors", "format": fmt, "ignore": [],
            "config_groups": {"g": {"targets": ["Linear"], "weights": w8, "input_activations": acts}}}}))
        layer = squash_ops.import_compressed_tensors(torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)), d)[0]
        assert torch.equal(layer.dequantized_weight(), q.float() * scale)
        x = torch.randn(3, k)
        if isinstance(layer, W8A8Linear):
            xq, xs = squash_ops.quantize_activation_int8(x)
            exact = (xq.double() @ q.double().T).float() * xs.reshape(-1, 1) * scale.T
            assert torch.equal(layer(x), exact)
        else:
            xb = x.to(torch.bfloat16)
            assert torch.equal(layer(xb), (xb.float() @ (q.float() * scale).T).to(torch.bfloat16))


def test_gptq_group_act_order_checkpoint(tmp_path):
    """An older llmcompressor GPTQ checkpoint (actorder "group": a weight_g_idx per layer, groups
    scattered over K); compressed-tensors 0.20 no longer writes these, so it is built here."""
    model = tiny_llama()
    squash_ops.replace_linear(model, W4A16Config(32, False))
    squash_ops.export_compressed_tensors(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    layer = "model.layers.0.mlp.up_proj"
    k = model.get_submodule(layer).in_features
    g_idx = torch.arange(k, dtype=torch.int32)[torch.randperm(k)] // 32  # each group: 32 scattered channels
    tensors[f"{layer}.weight_g_idx"] = g_idx
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["actorder"] = "group"
    (tmp_path / "config.json").write_text(json.dumps(config))

    # The stored values of channel k belong to group g_idx[k]: W[n, k] = (q[n, k] - z[n, g]) * s[n, g].
    n = model.get_submodule(layer).out_features
    q = unpack_int32(tensors[f"{layer}.weight_packed"], 4, k).float()
    z = unpack_int32(tensors[f"{layer}.weight_zero_point"].T.contiguous(), 4, n).T.float()
    s = tensors[f"{layer}.weight_scale"]
    expected = (q - z[:, g_idx.long()]) * s[:, g_idx.long()]
    imported = squash_ops.import_compressed_tensors(tiny_llama(), tmp_path).get_submodule(layer)
    assert imported.input_perm is not None
    assert torch.equal(imported.dequantized_weight(), expected)
    # An act-order layer has no place in what compressed-tensors 0.20 reads: its export is refused.
    with pytest.raises(ValueError, match=f"{layer} is an act-order"):
        squash_ops.export_compressed_tensors(squash_ops.import_compressed_tensors(tiny_llama(), tmp_path),
                                             tmp_path / "again")


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_migration_is_folded_into_the_norms(arch, tmp_path):
    model = random_norms(BUILDERS[arch]())
    report = quantize_w8a8(model, W8A8Config())
    assert any(s.migrated_channels for s in report.migration.sites)  # migrated for real
    squash_ops.export_compressed_tensors(model, tmp_path)
    theirs = _their_model(tmp_path, type(model))
    for name, module in model.named_modules():
        if isinstance(module, squash_ops.migration.MigratedNorm):
            folded = torch.ones_like(module.factor) if module.weight is None else module.weight  # None: all ones
            assert torch.equal(theirs.get_submodule(name).weight, folded), name
        elif isinstance(module, _QuantLinear):
            assert torch.equal(theirs.get_submodule(name).weight, module.dequantized_weight()), name
    # Our own import of it runs the same function up to where the fused norm -> int8 differs from
    # the plain norm then per-token int8 (rounding of the float norm output).
    back = squash_ops.import_compressed_tensors(BUILDERS[arch](), tmp_path)
    batch = token_batch()
    with torch.no_grad():
        a, b = model(**batch).logits, back(**batch).logits
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


def test_folded_smoothing_and_rotation_export_and_runtime_transforms_are_refused(tmp_path):
    model = random_norms(tiny_llama())
    # The attention-output rotation folds into the value and output projections too: no runtime op.
    report = quantize_w8a8(model, W8A8Config(), calibration=[token_batch(), token_batch(1)], smooth=True,
                           runtime_smoothing=False, rotate_attn_out=16)
    assert not any(getattr(m, "input_mul", None) is not None for m in model.modules())
    assert not any(m.config.rotation for m in model.modules() if isinstance(m, W8A8Linear))
    squash_ops.export_compressed_tensors(model, tmp_path / "folded")
    theirs = _their_model(tmp_path / "folded", type(model))
    for name, module in model.named_modules():
        if isinstance(module, squash_ops.migration.MigratedNorm):
            folded = torch.ones_like(module.factor) if module.weight is None else module.weight
            assert torch.equal(theirs.get_submodule(name).weight, folded), name
        elif isinstance(module, _QuantLinear):
            assert torch.equal(theirs.get_submodule(name).weight, module.dequantized_weight()), name
    smoothed_kinds = {site.kind for site in report.smoothing.sites if site.alpha is not None}
    assert smoothed_kinds == {"norm", "value"}, str(report.smoothing)  # both folded kinds, for real
    # FFN-down smoothing multiplies the input at run time; a rotation rotates it: no place for either.
    layer = "model.layers.1.mlp.down_proj"
    smoothed = tiny_llama()
    linear = smoothed.get_submodule(layer)
    smoothed.model.layers[1].mlp.down_proj = W8A8Linear.from_linear(linear, W8A8Config(),
                                                                    smoothing=torch.rand(linear.in_features) + 0.5)
    with pytest.raises(ValueError, match=f"{layer} multiplies its input per channel at run time"):
        squash_ops.export_compressed_tensors(smoothed, tmp_path / "smoothed")
    rotated = tiny_llama()
    squash_ops.replace_linear(rotated, W8A8Config(), overrides={layer: W8A8Config(rotation=32)})
    with pytest.raises(ValueError, match=f"{layer} rotates its input by 32-blocks of a Hadamard matrix"):
        squash_ops.export_compressed_tensors(rotated, tmp_path / "rotated")


def test_refusals_name_the_layer(tmp_path):
    bert = random_norms(tiny_bert())
    quantize_w8a8(bert, W8A8Config())
    with pytest.raises(ValueError, match=r"bert.encoder.layer.0.attention.output scales its residual"):
        squash_ops.export_compressed_tensors(bert, tmp_path / "bert")
    static = tiny_llama()
    squash_ops.replace_linear(static, W8A8Config("static"))
    squash_ops.calibrate(static, [token_batch()], progress=False)
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.q_proj is W8A8 with static activation"):
        squash_ops.export_compressed_tensors(static, tmp_path / "static")
    w4 = tiny_llama()
    squash_ops.replace_linear(w4, W4A16Config(32))
    with pytest.raises(ValueError, match=r"model.layers.0.self_attn.q_proj.scales is not representable in "
                                         r"torch.bfloat16"):
        squash_ops.export_compressed_tensors(w4, tmp_path / "bf16", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="has no quantized layer"):
        squash_ops.export_compressed_tensors(tiny_llama(), tmp_path / "float")

    squash_ops.export_compressed_tensors(w4, tmp_path / "ok")
    skeleton = tiny_llama()
    before = {k: v.clone() for k, v in skeleton.state_dict().items()}
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="plain/config.json: no quantization_config with quant_method"):
        squash_ops.import_compressed_tensors(skeleton, tmp_path / "plain")
    tensors = load_file(tmp_path / "ok" / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight_packed"
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, tmp_path / "ok" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"layer model.layers.1.mlp.down_proj: weight_packed is \[128, 39\], "
                                              r"expected \[128, 40\]"):
        squash_ops.import_compressed_tensors(skeleton, tmp_path / "ok")
    assert all(torch.equal(before[k], v) for k, v in skeleton.state_dict().items())  # left as it was
