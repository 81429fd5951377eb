"""W8A16Linear / W4A16Linear in the prepacked layouts (module.prepack(), squash_ops.prepack(model)):
the same outputs as the canonical module (CUDA layout: bit-exact on the CPU, where its GEMM is
unprepack + the canonical reference; CPU layout: within the GEMM tolerance, its own kernels sum
in another order), no canonical copy kept, canonical state_dict and checkpoints, clear errors
for shapes a layout cannot hold, the CPU layout by default on the CPU, re-packing on a device
change, and torch.compile without breaks."""

import copy
import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

import squash_ops
from squash_ops.quant import (
    W4A16Config, W4A16Linear, W8A8Config, W8A16Config, W8A16Linear, load_quantized, quantize_linear,
    replace_linear, save_quantized,
)
from helpers import GEMM_REL_MEAN_ERR, rel_mean_err
from quant_models import tiny_llama, token_batch

# (K, config): awkward K for each group size (1056 = 33 groups of 32, not a multiple of 64/128;
# 264 per channel is not a multiple of the int8 tile's 64 or the int4 tile's 128, so the layout
# pads K) and g128 on a K that ends mid-tile.
CASES = [
    (1056, W4A16Config(32, True)), (1056, W4A16Config(32, False)), (264, W4A16Config(-1, True)),
    (264, W4A16Config(-1, False)), (640, W4A16Config(128, False)), (264, W8A16Config()), (1056, W8A16Config()),
]


def _linear(k, n, bias, seed=0):
    torch.manual_seed(seed + k + n)
    lin = nn.Linear(k, n, bias=bias)
    if bias:
        with torch.no_grad():
            lin.bias.uniform_(-1, 1)
    return lin


def _pair(k, n, config, bias=True, compute_dtype=None, layout="cuda"):
    """(canonical module, the same module prepacked in `layout`)."""
    m = quantize_linear(_linear(k, n, bias), config, compute_dtype)
    return m, copy.deepcopy(m).prepack(layout)


def assert_matches_canonical(y, ref, layout):
    """CUDA layout on the CPU: the canonical op itself (bit-exact). CPU layout: its own kernel,
    another float32 summation order, one rounding: the GEMM tolerance of the compute dtype
    (bf16 for float32 modules)."""
    if layout == "cuda":
        assert torch.equal(y, ref)
    else:
        assert y.dtype == ref.dtype and y.shape == ref.shape
        assert rel_mean_err(y, ref) < GEMM_REL_MEAN_ERR.get(ref.dtype, GEMM_REL_MEAN_ERR[torch.bfloat16])


@pytest.mark.parametrize("layout", ["cuda", "cpu"])
@pytest.mark.parametrize("k,config", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_prepacked_module_equals_canonical(k, config, dtype, bias, layout):
    canon, pk = _pair(k, 24, config, bias, layout=layout)
    assert pk.prepacked and not canon.prepacked and pk.prepack_layout == layout
    for shape in [(1, k), (2, 3, k)]:  # decode (M=1) and leading batch dims
        x = torch.randn(shape, dtype=dtype)
        y = pk(x)
        assert y.dtype == dtype and y.shape == (*shape[:-1], 24)
        assert_matches_canonical(y, canon(x), layout)
    assert torch.equal(pk.dequantized_weight(), canon.dequantized_weight())


@pytest.mark.parametrize("layout", ["cuda", "cpu"])
@pytest.mark.parametrize("config", [W4A16Config(32, False), W8A16Config()], ids=str)
def test_prepack_frees_canonical_and_unprepack_is_bit_exact(config, layout):
    canon, pk = _pair(1056, 40, config, layout=layout)
    names = dict(pk.named_buffers())
    assert "qweight" not in names and "scales" not in names and "zeros" not in names
    # CUDA layout: 8-column tiles; CPU layout: 16-column panels (40 -> 3, padded), k-major.
    assert names["packed"].shape[0] == (40 // 8 if layout == "cuda" else 3)
    if layout == "cpu":
        assert names["packed"].shape[1] == 1056
    back = copy.deepcopy(pk).unprepack()
    assert not back.prepacked and "packed" not in dict(back.named_buffers())
    for name, t in canon.named_buffers():
        got = getattr(back, name)
        assert got.dtype == t.dtype and torch.equal(got, t), name


def test_prepack_keeps_gptq_input_perm():
    canon = quantize_linear(_linear(264, 32, True), W4A16Config(-1, False))
    torch.manual_seed(1)
    canon.set_input_permutation(torch.randperm(264))
    pk = copy.deepcopy(canon).prepack()
    assert torch.equal(pk.input_perm, canon.input_perm)
    x = torch.randn(5, 264, dtype=torch.bfloat16)
    assert torch.equal(pk(x), canon(x))
    # The permutation really matters: without it the output differs.
    plain = copy.deepcopy(pk)
    plain.input_perm = None
    assert not torch.equal(plain(x), pk(x))
    assert torch.equal(pk.dequantized_weight(), canon.dequantized_weight())


def test_prepack_and_unprepack_are_idempotent():
    canon, pk = _pair(264, 16, W4A16Config(-1, True))
    packed = pk.packed
    assert pk.prepack() is pk and pk.packed is packed  # second prepack: nothing happens
    canon_q = canon.qweight
    assert canon.unprepack() is canon and canon.qweight is canon_q
    report = squash_ops.prepack(nn.Sequential(pk))
    assert report.converted == [] and report.skipped == {"0": "already prepacked"}


@pytest.mark.parametrize("layout", ["cuda", "cpu"])
@pytest.mark.parametrize("config", [W4A16Config(32, True), W4A16Config(32, False), W8A16Config()], ids=str)
def test_state_dict_is_canonical(config, layout):
    canon, pk = _pair(1056, 24, config, layout=layout)
    sc, sp = canon.state_dict(), pk.state_dict()
    assert list(sc) == list(sp)
    for key in sc:
        assert sp[key].dtype == sc[key].dtype and torch.equal(sp[key], sc[key]), key
    # A canonical dict loads into a prepacked module (converted on the way in, stays prepacked)...
    fresh = copy.deepcopy(pk)
    for t in fresh.buffers():
        t.zero_()
    fresh.load_state_dict(sc)
    assert fresh.prepacked and fresh.prepack_layout == layout and torch.equal(fresh.packed, pk.packed)
    x = torch.randn(3, 1056, dtype=torch.float16)
    assert torch.equal(fresh(x), pk(x))
    assert_matches_canonical(fresh(x), canon(x), layout)
    # ... and a prepacked module's dict into a canonical one.
    empty = type(canon)(1056, 24, True, **({} if config.name == "w8a16" else {"config": config}))
    empty.load_state_dict(sp)
    assert torch.equal(empty(x), canon(x))


def test_unsupported_shapes_raise_and_model_helper_reports_why():
    bad_n = quantize_linear(_linear(264, 20, True), W4A16Config(-1, True))
    with pytest.raises(ValueError, match=r"W4A16Linear.prepack: .*multiples of 8, got N=20, K=264"):
        bad_n.prepack("cuda")
    bad_k = quantize_linear(_linear(262, 16, False), W8A16Config())
    with pytest.raises(ValueError, match=r"W8A16Linear.prepack: .*got N=16, K=262"):
        bad_k.prepack("cuda")
    with pytest.raises(ValueError, match=r"W8A16Linear.prepack: layout must be one of"):
        bad_k.prepack("gpu")
    assert not bad_n.prepacked and not bad_k.prepacked  # untouched by the failed attempt
    # The CPU layout pads N to whole panels and takes any K.
    for m in (bad_n, bad_k):
        x = torch.randn(3, m.in_features)
        ref = m(x)
        assert_matches_canonical(copy.deepcopy(m).prepack()(x), ref, "cpu")
    good = quantize_linear(_linear(264, 24, True), W8A16Config())
    w8a8 = quantize_linear(_linear(264, 24, True), W8A8Config())
    model = nn.Sequential(bad_n, nn.ReLU(), bad_k, w8a8, good)
    report = squash_ops.prepack(model, layout="cuda")
    assert report.converted == ["4"] and len(report) == 1
    assert set(report.skipped) == {"0", "2", "3"}
    assert "N=20" in report.skipped["0"] and "K=262" in report.skipped["2"]
    assert report.skipped["3"] == "W8A8Linear has no prepacked kernel"
    back = squash_ops.unprepack(model)
    assert back.converted == ["4"] and not good.prepacked


def _tiny_quantized():
    model = tiny_llama().eval()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    replace_linear(model, W4A16Config(64, False), overrides={names[1]: W8A16Config(), names[2]: W4A16Config(-1, True)},
                   prepack=False)
    # A GPTQ act-order style permutation on one layer: saved as input_perm, kept when prepacked.
    layer = model.get_submodule(names[3])
    torch.manual_seed(3)
    layer.set_input_permutation(torch.randperm(layer.in_features))
    return model


def _file_tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_save_of_prepacked_model_is_canonical_and_round_trips(tmp_path):
    canon = _tiny_quantized()
    pk = copy.deepcopy(canon)
    report = squash_ops.prepack(pk, layout="cuda")
    assert len(report) == sum(isinstance(m, (W4A16Linear, W8A16Linear)) for m in canon.modules())
    ids = token_batch(0)
    ref = canon(**ids).logits
    assert torch.equal(pk(**ids).logits, ref)

    save_quantized(canon, tmp_path / "canon")
    save_quantized(pk, tmp_path / "pk")
    assert all(m.prepacked for m in pk.modules() if isinstance(m, (W4A16Linear, W8A16Linear)))  # save leaves it so
    a, b = _file_tensors(tmp_path / "canon/squash_model.safetensors"), _file_tensors(tmp_path / "pk/squash_model.safetensors")
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    ha, hb = (json.loads((tmp_path / d / "squash_config.json").read_text()) for d in ("canon", "pk"))
    ha.pop("save_id"), hb.pop("save_id")
    assert ha == hb

    # Round trips: prepacked in the CPU layout on request and by default on the CPU (its kernel
    # is the fast one there), canonical with prepack=False; the weights bit-exact either way.
    for prepack, expect in [(True, True), (None, True), (False, False)]:
        loaded = load_quantized(tiny_llama(seed=9), tmp_path / "pk", prepack=prepack)
        quantized = [m for m in loaded.modules() if isinstance(m, (W4A16Linear, W8A16Linear))]
        assert quantized and all(m.prepacked == expect for m in quantized)
        assert all(m.prepack_layout == ("cpu" if expect else None) for m in quantized)
        assert_matches_canonical(loaded(**ids).logits, ref, "cpu" if expect else "cuda")
        sd, sref = loaded.state_dict(), canon.state_dict()
        assert list(sd) == list(sref)
        for key in sref:
            assert torch.equal(sd[key], sref[key]), key


def test_replace_linear_prepack_choice_on_cpu():
    model = tiny_llama()
    replace_linear(model, W4A16Config(64, True))
    layers = [m for m in model.modules() if isinstance(m, W4A16Linear)]
    # The default prepacks where it is faster: on the CPU, the CPU layout (its AVX2 kernel).
    assert layers and all(m.prepacked and m.prepack_layout == "cpu" for m in layers)
    assert all(m.prepack_pays() for m in layers)
    canonical = tiny_llama()
    replace_linear(canonical, W4A16Config(64, True), prepack=False)
    assert not any(m.prepacked for m in canonical.modules() if isinstance(m, W4A16Linear))
    ids = token_batch(1)
    assert_matches_canonical(model(**ids).logits, canonical(**ids).logits, "cpu")


def test_device_change_repacks_for_the_new_device():
    """A prepacked module that changes device type is re-packed in that device's layout (here:
    CUDA layout on the CPU -> meta, which takes the CPU layout); a move within the device type
    keeps the buffers as they are."""
    canon, pk = _pair(264, 40, W4A16Config(-1, False), layout="cuda")
    packed = pk.packed
    assert pk.to("cpu").packed is packed and pk.prepack_layout == "cuda"
    pk.to("meta")
    assert pk.prepacked and pk.prepack_layout == "cpu" and pk.packed.device.type == "meta"
    assert pk.packed.shape == (3, 264, 8)
    _, cpu_pk = _pair(264, 40, W4A16Config(-1, False), layout="cpu")
    cpu_pk.to("meta")
    assert cpu_pk.prepack_layout == "cpu" and cpu_pk.packed.shape == (3, 264, 8)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compile_fullgraph_prepacked_mlp(backend):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(264, 128), nn.GELU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32))
    perm_layer = quantize_linear(mlp[0], W4A16Config(-1, False))
    perm_layer.set_input_permutation(torch.randperm(264))
    q = nn.Sequential(perm_layer, mlp[1], quantize_linear(mlp[2], W4A16Config(32)), mlp[3],
                      quantize_linear(mlp[4], W8A16Config()))
    assert len(squash_ops.prepack(q)) == 3
    x = torch.randn(4, 264)
    eager = q(x)
    torch._dynamo.reset()
    compiled = torch.compile(q, fullgraph=True, backend=backend)(x)
    assert torch.equal(compiled, eager)


@pytest.mark.gpu
@pytest.mark.parametrize("k,config", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 5, 97])  # decode, small-M kernel, the dequant + cuBLAS path
def test_cuda_replace_linear_prepacks_and_matches_cpu(k, config, dtype, m):
    model = nn.Sequential(_linear(k, 48, True, seed=m))
    cpu = copy.deepcopy(model)
    replace_linear(cpu, config, compute_dtype=dtype, prepack=False)
    replace_linear(model.cuda(), config, compute_dtype=dtype)  # default: prepacked on CUDA
    assert model[0].prepacked and model[0].prepack_layout == "cuda" and not cpu[0].prepacked
    x = torch.randn(m, k, dtype=dtype)
    y = model(x.cuda())
    ref = cpu(x)
    # Different float32 summation order (tensor cores, per-group partial sums) and one rounding
    # to dtype: the GEMM tolerance of the dtype.
    assert rel_mean_err(y.cpu(), ref) < GEMM_REL_MEAN_ERR[dtype]
    cpu[0].prepack("cuda")
    assert torch.equal(model[0].packed.cpu(), cpu[0].packed)  # prepack is the same on both devices
    assert model[0].cpu().prepack_layout == "cpu"  # moved to the CPU: re-packed in the CPU layout


def test_import_gptq_act_order_prepacked_equals_canonical():
    from test_quant_importers import _llama_gptq_checkpoint
    from squash_ops.quant import import_gptq

    _, ckpt, weights = _llama_gptq_checkpoint()
    canon = import_gptq(tiny_llama(seed=5), ckpt, prepack=False)
    pk = import_gptq(tiny_llama(seed=5), ckpt)  # CPU default: the CPU layout
    q = "model.layers.0.self_attn.q_proj"
    assert pk.get_submodule(q).prepacked and pk.get_submodule(q).input_perm is not None
    assert not canon.get_submodule(q).prepacked
    for name, w in weights.items():
        assert torch.equal(pk.get_submodule(name).dequantized_weight(), w.T), name
    batch = token_batch(2)
    with torch.no_grad():
        assert_matches_canonical(pk(**batch).logits, canon(**batch).logits, "cpu")
