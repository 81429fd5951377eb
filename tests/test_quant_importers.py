"""GPTQ and AWQ importers: checkpoints packed here from the published layout descriptions (AutoGPTQ
/ AutoAWQ), imported layers that dequantize to exactly the checkpoint's weights (act-order
included), whole-model imports, round trips through save/load, and the errors."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from squash_ops.quant import (
    CheckpointError, W4A16Config, W4A16Linear, awq_linear, gptq_linear, import_awq, import_gptq, load_quantized,
    save_quantized,
)
from helpers import GEMM_REL_MEAN_ERR, rel_mean_err
from quant_models import tiny_llama, tiny_opt, token_batch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ: nibble j of a word holds column 8c + AWQ_ORDER[j]


# --- packers, written from the layout descriptions (not from the importer) -------------------

def _int32(words: torch.Tensor) -> torch.Tensor:
    """uint32 bit patterns held in int64 -> int32 (two's complement)."""
    return (words - (words >= 2**31).long() * 2**32).to(torch.int32)


def pack_rows(v_kn: torch.Tensor) -> torch.Tensor:
    """GPTQ qweight: [K, N] values -> int32 [K/8, N], row 8i + j in bits 4j..4j+3 of word i."""
    k, n = v_kn.shape
    v = v_kn.long().reshape(k // 8, 8, n)
    return _int32(sum(v[:, j, :] << (4 * j) for j in range(8)))


def pack_cols(v_an: torch.Tensor, order=tuple(range(8))) -> torch.Tensor:
    """[A, N] values -> int32 [A, N/8]: nibble j of word c holds column 8c + order[j]."""
    a, n = v_an.shape
    v = v_an.long().reshape(a, n // 8, 8)
    return _int32(sum(v[:, :, order[j]] << (4 * j) for j in range(8)))


def test_packers_match_the_published_bit_layouts():
    # GPTQ: a column holding 1..8 down K is the word 0x87654321 (row 0 in the low nibble).
    assert pack_rows(torch.arange(1, 9).reshape(8, 1)).item() == _int32(torch.tensor(0x87654321)).item()
    # GPTQ qzeros: columns 0..7 in nibbles 0..7 in order.
    assert pack_cols(torch.arange(8).reshape(1, 8)).item() == 0x76543210
    # AWQ: columns 0..7 holding 0..7 land as nibbles 0,2,4,6,1,3,5,7 -> 0x75316420.
    assert pack_cols(torch.arange(8).reshape(1, 8), AWQ_ORDER).item() == 0x75316420


def _groups(k, group_size):
    return 1 if group_size == -1 else k // group_size


def make_gptq(k, n, group_size, act_order, symmetric, v2=False, bias=False, seed=0):
    """A GPTQ layer: its checkpoint tensors and its dequantized weight [K, N] by the GPTQ formula
    scales[g_idx[k], n] * (q[k, n] - zero[g_idx[k], n])."""
    gen = torch.Generator().manual_seed(seed)
    g = k if group_size == -1 else group_size
    G = _groups(k, group_size)
    q = torch.randint(0, 16, (k, n), generator=gen)
    # v1 stores zero - 1 in 4 bits, so a zero of 0 cannot be stored (test_gptq_v1_zero_of_zero).
    zero = torch.full((G, n), 8) if symmetric else torch.randint(0 if v2 else 1, 16, (G, n), generator=gen)
    scales = (torch.rand(G, n, generator=gen) * 0.02 + 1e-3).half()
    if act_order:  # channels quantized in a random (Hessian) order, g at a time
        order = torch.randperm(k, generator=gen)
        g_idx = torch.empty(k, dtype=torch.int64)
        g_idx[order] = torch.arange(k) // g
    else:
        g_idx = torch.arange(k) // g
    stored_zero = zero if v2 else (zero - 1) & 15
    ckpt = {"qweight": pack_rows(q), "qzeros": pack_cols(stored_zero), "scales": scales,
            "g_idx": g_idx.to(torch.int32)}
    if bias:
        ckpt["bias"] = torch.randn(n, generator=gen).half()
    w = scales.float()[g_idx] * (q - zero[g_idx]).float()
    return ckpt, w


def make_awq(k, n, group_size, bias=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = k if group_size == -1 else group_size
    G = _groups(k, group_size)
    q = torch.randint(0, 16, (k, n), generator=gen)
    zero = torch.randint(0, 16, (G, n), generator=gen)
    scales = (torch.rand(G, n, generator=gen) * 0.02 + 1e-3).half()
    ckpt = {"qweight": pack_cols(q, AWQ_ORDER), "qzeros": pack_cols(zero, AWQ_ORDER), "scales": scales}
    if bias:
        ckpt["bias"] = torch.randn(n, generator=gen).half()
    rows = torch.arange(k) // g
    return ckpt, scales.float()[rows] * (q - zero[rows]).float()


def _check_forward(module, w_kn, bias=None):
    x = torch.randn(3, 5, module.in_features, dtype=torch.float16)
    ref = x.double() @ w_kn.double()
    if bias is not None:
        ref = ref + bias.double()
    y = module(x)
    assert y.dtype == torch.float16
    # fp16 activations, fp32 accumulation, one fp16 rounding of the output: TARGETS' GEMM bound.
    assert rel_mean_err(y, ref) < GEMM_REL_MEAN_ERR[torch.float16]


# --- single layers ---------------------------------------------------------------------------

@pytest.mark.parametrize("group_size,act_order,symmetric", [
    (128, False, True), (128, True, True), (64, True, False), (32, False, False), (-1, False, False),
    (-1, True, True),
])
def test_gptq_layer_dequantizes_exactly(group_size, act_order, symmetric):
    k, n = 384, 48  # K = 3 groups of 128
    ckpt, w = make_gptq(k, n, group_size, act_order, symmetric, bias=True)
    m = gptq_linear(**ckpt)
    assert isinstance(m, W4A16Linear) and m.config == W4A16Config(group_size, symmetric)
    assert m.compute_dtype == torch.float16  # follows the checkpoint's fp16 scales
    # Values, zeros and fp16 scales are moved, never requantized: bit-exact.
    assert torch.equal(m.dequantized_weight(), w.T)
    # The permutation exists exactly when the groups are scattered over K.
    assert (m.input_perm is not None) == (act_order and group_size != -1)
    _check_forward(m, w, ckpt["bias"])


def test_gptq_v2_stores_zeros_as_is():
    ckpt, w = make_gptq(256, 16, 64, act_order=True, symmetric=False, v2=True, seed=3)
    zeros = torch.stack([(ckpt["qzeros"] >> (4 * j)) & 15 for j in range(8)])
    assert (zeros == 0).any()  # a zero point v1 cannot store
    assert torch.equal(gptq_linear(**ckpt, format="gptq_v2").dequantized_weight(), w.T)


@pytest.mark.parametrize("group_size", [128, 64, 32, -1])
def test_awq_layer_dequantizes_exactly(group_size):
    ckpt, w = make_awq(256, 40, group_size, bias=True, seed=group_size & 0xFF)
    m = awq_linear(**ckpt)
    assert m.config == W4A16Config(group_size, False) and m.input_perm is None
    assert torch.equal(m.dequantized_weight(), w.T)
    _check_forward(m, w, ckpt["bias"])


def test_gptq_v1_zero_of_zero_is_refused():
    ckpt, _ = make_gptq(128, 8, 128, act_order=False, symmetric=False)
    ckpt["qzeros"] = pack_cols(torch.full((1, 8), 15))  # v1: zero 0 stored as (0 - 1) & 15
    with pytest.raises(CheckpointError, match=r"layer x: zero points must be 0..15 \(found 16..16\); a GPTQ v1 "
                                              r"zero of 0 is stored as 15"):
        gptq_linear(**ckpt, name="layer x")


def test_bad_gptq_and_awq_layers():
    ckpt, _ = make_gptq(256, 16, 128, act_order=False, symmetric=True)
    with pytest.raises(CheckpointError, match=r"qweight must be int32 \[K/8, N\], got torch.int64"):
        gptq_linear(**{**ckpt, "qweight": ckpt["qweight"].long()})
    with pytest.raises(CheckpointError, match="g_idx has 512 entries but qweight packs K=256 input channels"):
        gptq_linear(**{**ckpt, "g_idx": torch.zeros(512, dtype=torch.int32)})
    uneven = torch.arange(256, dtype=torch.int32) // 128
    uneven[:3] = 1  # 125 channels in group 0, 131 in group 1
    with pytest.raises(CheckpointError, match="g_idx does not put exactly 128 input channels in each of the 2 groups"):
        gptq_linear(**{**ckpt, "g_idx": uneven})
    ckpt16, _ = make_gptq(256, 16, 16, act_order=False, symmetric=True)
    with pytest.raises(CheckpointError, match=r"group size 16 is not supported \(32, 64, 128 or per-channel\)"):
        gptq_linear(**ckpt16)
    with pytest.raises(CheckpointError, match="format must be 'gptq' or 'gptq_v2', got 'exllama'"):
        gptq_linear(**ckpt, format="exllama")
    awq, _ = make_awq(128, 16, 64)
    with pytest.raises(CheckpointError, match=r"scales must be \[K/g, 16\], got \[16, 2\] \(a GEMV-layout"):
        awq_linear(awq["qweight"], awq["qzeros"], awq["scales"].T.contiguous())


def test_act_order_permutation_survives_state_dict_round_trip_and_compile():
    ckpt, w = make_gptq(256, 32, 64, act_order=True, symmetric=False)
    m = gptq_linear(**ckpt)
    x = torch.randn(4, 256, dtype=torch.float16)
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), m(x))
    with pytest.raises(ValueError, match="input_perm must be a permutation of 0..255"):
        m.set_input_permutation(torch.zeros(256, dtype=torch.int32))


# --- whole models ----------------------------------------------------------------------------

def _llama_gptq_checkpoint():
    """A tiny Llama as a GPTQ checkpoint: every decoder linear 4-bit (act-order on the attention
    projections), embeddings and norms fp16, the tied lm_head not stored (as HF saves ties)."""
    source = tiny_llama(seed=1).half()
    ckpt, weights = {}, {}
    for i, (name, lin) in enumerate((n, m) for n, m in source.named_modules() if isinstance(m, nn.Linear)):
        if name == "lm_head":
            continue
        layer, w = make_gptq(lin.in_features, lin.out_features, 64, act_order="self_attn" in name,
                             symmetric="mlp" in name, seed=i)
        ckpt.update({f"{name}.{k}": v for k, v in layer.items()})
        weights[name] = w
    linears = set(weights)
    for name, t in source.state_dict().items():
        if name.rpartition(".")[0] not in linears and name != "lm_head.weight":
            ckpt[name] = t
    return source, ckpt, weights


def test_import_gptq_model_then_save_and_load(tmp_path):
    source, ckpt, weights = _llama_gptq_checkpoint()
    model = import_gptq(tiny_llama(seed=5), ckpt)
    for name, w in weights.items():
        m = model.get_submodule(name)
        assert isinstance(m, W4A16Linear) and torch.equal(m.dequantized_weight(), w.T), name
    assert torch.equal(model.model.embed_tokens.weight, source.model.embed_tokens.weight)
    assert model.lm_head.weight is model.model.embed_tokens.weight and not model.training
    # The same model in plain torch: the checkpoint's dequantized weights in fp16 linears.
    ref = source
    with torch.no_grad():
        for name, w in weights.items():
            ref.get_submodule(name).weight.copy_(w.T)
    batch = token_batch(2)
    with torch.no_grad():
        out, expected = model(**batch).logits, ref(**batch).logits
    # fp16 everywhere; the two differ in accumulation precision (fp32 in the op, CPU fp16 matmul in
    # torch) and hence in fp16 roundings through 2 layers: measured 1.1-1.5e-3.
    assert rel_mean_err(out, expected) < 5e-3

    save_quantized(model, tmp_path)
    with torch.device("meta"):
        skeleton = tiny_llama()
    loaded = load_quantized(skeleton, tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, out)
    q = "model.layers.0.self_attn.q_proj"
    assert torch.equal(loaded.get_submodule(q).input_perm, model.get_submodule(q).input_perm)


def test_import_awq_from_safetensors_file_with_biases(tmp_path):
    source = tiny_opt(seed=2).half()
    ckpt, weights = {}, {}
    for i, (name, lin) in enumerate((n, m) for n, m in source.named_modules() if isinstance(m, nn.Linear)):
        if name == "lm_head":
            continue
        layer, w = make_awq(lin.in_features, lin.out_features, 128 if "fc" in name else 64, bias=True, seed=i)
        ckpt.update({f"{name}.{k}": v for k, v in layer.items()})
        weights[name] = (w, layer["bias"])
    for name, t in source.state_dict().items():
        if name.rpartition(".")[0] not in weights and name != "lm_head.weight":
            ckpt[name] = t
    save_file(ckpt, tmp_path / "model.safetensors")
    model = import_awq(tiny_opt(seed=9), tmp_path)  # a directory of shards (here one)
    for name, (w, bias) in weights.items():
        m = model.get_submodule(name)
        assert torch.equal(m.dequantized_weight(), w.T) and torch.equal(m.bias, bias), name
    assert torch.equal(model.model.decoder.final_layer_norm.weight, source.model.decoder.final_layer_norm.weight)


def test_model_import_errors(tmp_path):
    source, ckpt, _ = _llama_gptq_checkpoint()
    with torch.device("meta"):
        meta = tiny_llama()
    with pytest.raises(CheckpointError, match=r"import_gptq: the checkpoint dict: the model's non-persistent "
                                              r"buffers model.rotary_emb.inv_freq, .* are on the meta device"):
        import_gptq(meta, ckpt)
    model = tiny_llama()
    with pytest.raises(CheckpointError, match=r"the checkpoint dict: layer model.layers.0.self_attn.q_proj: "
                                              r"128->128 in the checkpoint but 64->64 in the model"):
        import_gptq(tiny_llama(hidden=64), ckpt)
    with pytest.raises(CheckpointError, match="the checkpoint dict misses tensors the model needs: model.norm.weight"):
        import_gptq(model, {k: v for k, v in ckpt.items() if k != "model.norm.weight"})
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("proj"))  # untouched
    with pytest.raises(CheckpointError, match=r"no '<layer>.qweight' tensor matches a linear layer of OPTForCausalLM"):
        import_gptq(tiny_opt(), ckpt)
    with pytest.raises(FileNotFoundError, match="no safetensors file found"):
        import_awq(tiny_opt(), tmp_path)


def test_load_validates_the_permutation(tmp_path):
    import json
    from safetensors import safe_open
    from squash_ops.quant.serialization import checksum
    model = nn.Sequential(gptq_linear(**make_gptq(128, 16, 64, act_order=True, symmetric=True)[0]))
    save_quantized(model, tmp_path)
    path = tmp_path / "squash_model.safetensors"
    with safe_open(path, "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["0.input_perm"] = torch.zeros(128, dtype=torch.int32)
    save_file(tensors, path, metadata=metadata)
    # As a faulty writer would save it: the checksum matches the bad permutation.
    config = json.loads((tmp_path / "squash_config.json").read_text())
    config["checksums"]["0.input_perm"] = checksum(tensors["0.input_perm"])
    (tmp_path / "squash_config.json").write_text(json.dumps(config))
    assert config["layers"]["0"]["optional_buffers"] == ["input_perm"]
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Linear(128, 16))
    with pytest.raises(CheckpointError, match="squash_model.safetensors: layer 0: W4A16Linear: input_perm must be a "
                                              "permutation of 0..127"):
        load_quantized(skeleton, tmp_path)
