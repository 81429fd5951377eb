"""No silent garbage (issue 13): every wrong input is refused with a message naming the argument,
on every op and on every path a call can take (the CPU kernels, the fake kernels that meta tensors
and torch.compile run), and the model transforms are all or nothing.

Per kind, across every op it touches:
- device mixing: each tensor argument of each op moved to ``meta`` alone;
- one dtype vocabulary: each tensor argument in a wrong dtype, named as Python names it;
- fake kernels: the same bad shapes / group sizes / K / dtypes refused on meta with the CPU's
  message, and under torch.compile;
- documented ranges: int4 zero points, static activation scales, softmax_scale;
- non-finite weights refused by the weight quantizers and replace_linear; finite int4 groups always
  get a positive finite scale;
- the int8 row rule (NaN, inf, zero and tiny rows) of the activation and norm quantizers, property
  tested against float64 on every device and CPU path;
- all-or-nothing transforms (replace_linear, migration, quantize_w8a8, the importers) and
  checkpoints (malformed squash_config.json, checksums, kinds this version cannot rebuild).
"""

import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import squash_ops as so
from squash_ops.quant import (
    CheckpointError, W4A16Config, W8A8Config, W8A16Config, empty_quantized_linear, import_gptq, load_quantized,
    replace_linear, save_quantized,
)
from helpers import GEMM_REL_MEAN_ERR, rel_mean_err
from quant_models import tiny_bert, tiny_llama, token_batch

ops = torch.ops.squash
F16 = torch.float16


def _int4(n=16, k=64, g=32):
    q, s, z = so.quantize_int4_weight(torch.randn(n, k), group_size=g, symmetric=False)
    return q, s, z


def _valid_calls():
    """op name -> positional arguments of a valid CPU call (small shapes, every optional given)."""
    x = torch.randn(3, 64, dtype=F16)
    q8, s8 = so.quantize_int8_weight(torch.randn(16, 64))
    q4, s4, z4 = _int4()
    p4, sp4, zp4 = so.prepack_int4_weight(q4, s4, z4, group_size=32)
    p8, sp8 = so.prepack_int8_weight(q8, s8)
    c4, cs4, cz4 = so.cpu_prepack_int4_weight(q4, s4, z4, group_size=32)
    c8, cs8 = so.cpu_prepack_int8_weight(q8, s8)
    bias = torch.randn(16, dtype=F16)
    xq, xs = so.quantize_activation_int8(x)
    w, b = torch.randn(64, dtype=F16), torch.randn(64, dtype=F16)
    scale = torch.tensor([0.02])
    q, k = torch.randn(2, 5, 4, 16, dtype=F16), torch.randn(2, 6, 2, 16, dtype=F16)
    qv, kv = torch.randn(7, 4, 16, dtype=F16), torch.randn(9, 2, 16, dtype=F16)
    cu_q, cu_k = torch.tensor([0, 3, 7], dtype=torch.int32), torch.tensor([0, 4, 9], dtype=torch.int32)
    kc = torch.randn(2, 8, 2, 16, dtype=F16)
    return {
        "quantize_int8_weight": [torch.randn(16, 64)],
        "dequantize_int8_weight": [q8, s8],
        "quantize_int4_weight": [torch.randn(16, 64), 32, False],
        "dequantize_int4_weight": [q4, s4, z4, 32],
        "pack_int4": [torch.randint(0, 16, (4, 8), dtype=torch.uint8)],
        "unpack_int4": [q4],
        "w8a16_gemm": [x, q8, s8, bias],
        "w4a16_gemm": [x, q4, s4, z4, 32, bias],
        "quantize_activation_int8": [x.float(), scale],
        "quantize_activation_int8_transformed": [x, torch.rand(64) + 0.5, 16, scale],
        "w8a8_gemm": [xq, xs, q8, s8, bias.float(), F16],
        "prepack_int4_weight": [q4, s4, z4, 32],
        "prepack_int8_weight": [q8, s8],
        "unprepack_int4_weight": [p4, sp4, zp4, 64, 32],
        "unprepack_int8_weight": [p8, sp8, 64],
        "w4a16_gemm_prepacked": [x, p4, sp4, zp4, 64, 32, bias],
        "w8a16_gemm_prepacked": [x, p8, sp8, 64, bias],
        "cpu_prepack_int4_weight": [q4, s4, z4, 32],
        "cpu_prepack_int8_weight": [q8, s8],
        "cpu_unprepack_int4_weight": [c4, cs4, cz4, 16, 64, 32],
        "cpu_unprepack_int8_weight": [c8, cs8, 16],
        "w4a16_gemm_cpu_prepacked": [x, c4, cs4, cz4, 16, 32, bias],
        "w8a16_gemm_cpu_prepacked": [x, c8, cs8, 16, bias],
        "layer_norm": [x, w, b, 1e-5],
        "add_layer_norm": [x, x.clone(), w, b, 1e-5],
        "layer_norm_quant": [x, w, b, 1e-5, scale],
        "add_layer_norm_quant": [x, x.clone(), w, b, 1e-5, scale],
        "rms_norm": [x, w, 1e-6],
        "add_rms_norm": [x, x.clone(), w, 1e-6],
        "rms_norm_quant": [x, w, 1e-6, scale],
        "add_rms_norm_quant": [x, x.clone(), w, 1e-6, scale],
        "layer_norm_and_quant": [x, x.clone(), w, b, 1e-5, scale],
        "rms_norm_and_quant": [x, x.clone(), w, 1e-6, scale],
        "attention": [q, k, k.clone(), None, False],
        "attention_varlen": [qv, kv, kv.clone(), cu_q, cu_k, 4, 5, None, False],
        "attention_decode": [q[:, :1], kc, kc.clone(), torch.tensor([5, 8], dtype=torch.int32), None, True],
    }


VALID = _valid_calls()


def _arg_names(op):
    return [a.name for a in getattr(ops, op).default._schema.arguments]


def _to_meta(args):
    return [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]


def _message(op, args):
    with pytest.raises(ValueError) as e:
        getattr(ops, op)(*args)
    return str(e.value).splitlines()[0]


def test_every_op_is_covered():
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("squash::")}
    assert registered == set(VALID)


@pytest.mark.parametrize("op", sorted(VALID))
def test_valid_call_on_meta_gives_the_cpu_shapes(op):
    args = VALID[op]
    cpu, meta = getattr(ops, op)(*args), getattr(ops, op)(*_to_meta(args))
    cpu, meta = (cpu, meta) if isinstance(cpu, tuple) else ((cpu,), (meta,))
    assert [(t.shape, t.dtype) for t in cpu] == [(t.shape, t.dtype) for t in meta]
    assert all(t.is_meta for t in meta)


# ---- one dtype vocabulary: torch's Python names in every message ----

_CPP_DTYPE_NAMES = re.compile(r"\b(Byte|Char|Short|Int|Long|Half|Float|Double|Bool|BFloat16)\b")


def _dtype_cases():
    for op, args in sorted(VALID.items()):
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                yield pytest.param(op, i, id=f"{op}-{_arg_names(op)[i]}")


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op,index", list(_dtype_cases()))
def test_a_wrong_dtype_is_named_as_python_names_it(op, index, device):
    """Each tensor argument in a dtype no op takes (float64, or int16 for integer tensors): the
    message names it 'float64' / 'int16' as torch's Python API does, and no C++ enum name
    ('Half', 'Char', ...) appears, on the CPU kernel and on the fake kernel (meta) alike."""
    args = list(VALID[op])
    wrong = torch.float64 if args[index].is_floating_point() else torch.int16
    args[index] = args[index].to(wrong)
    msg = _message(op, _to_meta(args) if device == "meta" else args)
    assert str(wrong).removeprefix("torch.") in msg and not _CPP_DTYPE_NAMES.search(msg), msg


# ---- device mixing: one argument on meta, the rest on the CPU ----


def _device_cases():
    for op, args in sorted(VALID.items()):
        names = _arg_names(op)
        tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        if len(tensors) > 1:  # (quantize_int8_weight, pack_int4, ... take one tensor: nothing to mix)
            for i in tensors:
                yield pytest.param(op, i, id=f"{op}-{names[i]}")


@pytest.mark.parametrize("op,index", list(_device_cases()))
def test_one_argument_on_meta_is_refused_naming_it(op, index):
    args = list(VALID[op])
    args[index] = args[index].to("meta")
    name = _arg_names(op)[index]
    msg = _message(op, args)
    m = re.fullmatch(rf"squash::{op}: (\w+) must be on (cpu|meta) like (\w+), got (cpu|meta)", msg)
    assert m, msg
    arg, ref_device, ref, got = m.groups()
    # The moved argument is named: either it is not on the reference's device, or it is the
    # reference and another argument is not on its (meta) device.
    assert (arg, ref_device, got) == (name, "cpu", "meta") or (ref, ref_device, got) == (name, "meta", "cpu"), msg


@pytest.mark.parametrize("config", [W8A16Config(), W4A16Config(32), W4A16Config(32, False), W8A8Config(),
                                    W8A8Config("static")], ids=str)
def test_meta_layer_never_loaded_refuses_to_run(config):
    layer = empty_quantized_linear(config, 64, 16, device="meta")
    with pytest.raises(RuntimeError, match=r"weights are on the meta device \(never loaded\)"):
        layer(torch.randn(3, 64))
    if config.name != "w8a8":
        layer.prepack()
        with pytest.raises(RuntimeError, match="never loaded"):
            layer(torch.randn(3, 64))
    if config != W8A8Config("static"):  # (a static layer needs its calibrated scale first)
        # On meta in and out (shape tracing) it still runs.
        assert layer(torch.randn(3, 64, device="meta")).shape == (3, 16)


# ---- fake kernels: bad metadata refused on meta with the CPU kernel's message ----


def _bad(op, index, value):
    args = list(VALID[op])
    args[index] = value(args[index]) if callable(value) else value
    return args


V = VALID
BAD_CALLS = {
    # formats
    "int8 weight 1-D": ("quantize_int8_weight", _bad("quantize_int8_weight", 0, lambda w: w[0]), "weight must be 2-D"),
    "int8 weight dtype": ("quantize_int8_weight", _bad("quantize_int8_weight", 0, lambda w: w.double()),
                          "weight must be float32 or float16 or bfloat16, got float64"),
    "int4 group not dividing": ("quantize_int4_weight", _bad("quantize_int4_weight", 1, 128), "group_size"),
    "int4 odd K": ("quantize_int4_weight", _bad("quantize_int4_weight", 0, lambda w: w[:, :63]), "K must be even"),
    "dequant int8 scales": ("dequantize_int8_weight", _bad("dequantize_int8_weight", 1, lambda s: s[:8]),
                            r"scales must be \[N\] = \[16\]"),
    "dequant int4 zeros dtype": ("dequantize_int4_weight", _bad("dequantize_int4_weight", 2, lambda z: z.int()),
                                 "zeros must be uint8, got int32"),
    "dequant int4 group": ("dequantize_int4_weight", _bad("dequantize_int4_weight", 3, 48), "group_size must be"),
    "pack odd": ("pack_int4", _bad("pack_int4", 0, lambda v: v[:, :7]), "K even"),
    "unpack dtype": ("unpack_int4", _bad("unpack_int4", 0, lambda p: p.view(torch.int8)), "packed must be uint8"),
    # GEMMs
    "w8a16 K": ("w8a16_gemm", _bad("w8a16_gemm", 0, lambda x: x[:, :32]), r"qweight must be \[N, K\]"),
    "w8a16 x dtype": ("w8a16_gemm", _bad("w8a16_gemm", 0, lambda x: x.float()), "x must be float16 or bfloat16"),
    "w8a16 bias": ("w8a16_gemm", _bad("w8a16_gemm", 3, lambda b: b[:8]), r"bias must be \[N\]"),
    "w8a16 strided x": ("w8a16_gemm", _bad("w8a16_gemm", 0, lambda x: torch.randn(64, 3, dtype=F16).t()),
                        "contiguous last dimension"),
    "w4a16 group": ("w4a16_gemm", _bad("w4a16_gemm", 4, 64), r"scales must be \[N, K/group_size\]"),
    "w4a16 K": ("w4a16_gemm", _bad("w4a16_gemm", 0, lambda x: x[:, :32]), r"qweight must be \[N, K/2\]"),
    "w4a16 zeros shape": ("w4a16_gemm", _bad("w4a16_gemm", 3, lambda z: z[:, :1].contiguous()), "zeros must be"),
    "act quant scale shape": ("quantize_activation_int8", _bad("quantize_activation_int8", 1, torch.ones(2)),
                              "scale must have exactly 1 element"),
    "w8a8 x_scales": ("w8a8_gemm", _bad("w8a8_gemm", 1, lambda s: s[:2]), "x_scales must be"),
    "w8a8 out_dtype": ("w8a8_gemm", _bad("w8a8_gemm", 5, torch.int8), "out_dtype must be"),
    "w8a8 w_scales": ("w8a8_gemm", _bad("w8a8_gemm", 3, lambda s: s[:3]), "w_scales must be"),
    # prepacked
    "prepack int4 N": ("prepack_int4_weight", [V["prepack_int4_weight"][0][:12], V["prepack_int4_weight"][1][:12],
                                               V["prepack_int4_weight"][2][:12], 32], "multiple of 8"),
    "prepack int8 scales": ("prepack_int8_weight", _bad("prepack_int8_weight", 1, lambda s: s[:8]), "scales must be"),
    "unprepack int4 k": ("unprepack_int4_weight", _bad("unprepack_int4_weight", 3, 192), "packed must be"),
    "unprepack int8 k": ("unprepack_int8_weight", _bad("unprepack_int8_weight", 2, 60), "k must be a positive multiple"),
    "prepacked w4 K in last tile": ("w4a16_gemm_prepacked", _bad("w4a16_gemm_prepacked", 0, lambda x: x[:, :56]),
                                    r"K = k = 64"),
    "prepacked w8 K in last tile": ("w8a16_gemm_prepacked", _bad("w8a16_gemm_prepacked", 0, lambda x: x[:, :56]),
                                    r"K = k = 64"),
    "prepacked w8 k": ("w8a16_gemm_prepacked", [torch.randn(3, 128, dtype=F16), *V["w8a16_gemm_prepacked"][1:3], 128],
                       r"packed must be \[N/8, ceil\(K/64\), 512\] = \[N/8, 2, 512\]"),
    # norms
    "norm weight": ("layer_norm", _bad("layer_norm", 1, lambda w: w[:32]), r"weight must be 1-D \[hidden=64\]"),
    "norm eps": ("rms_norm", _bad("rms_norm", 2, -1.0), "eps must be finite and >= 0"),
    "norm residual dtype": ("add_rms_norm", _bad("add_rms_norm", 1, lambda r: r.float()), "residual must be float16"),
    "norm x dtype": ("layer_norm_quant", _bad("layer_norm_quant", 0, lambda x: x.double()),
                     "x must be float16 or bfloat16 or float32, got float64"),
    "norm scale dtype": ("add_layer_norm_quant", _bad("add_layer_norm_quant", 5, torch.ones(1, dtype=F16)),
                         "scale must be float32"),
    "norm bias dtype": ("layer_norm", _bad("layer_norm", 2, lambda b: b.bfloat16()),
                        r"bias must be float16 \(like x\) or float32"),
    # attention
    "attention heads": ("attention", [V["attention"][0], *[torch.randn(2, 6, 3, 16, dtype=F16)] * 2, None, False],
                        r"heads of q \(4\) must be a multiple of heads of k \(3\)"),
    "attention head_dim": ("attention", _bad("attention", 2, lambda v: v[..., :8].contiguous()), "must have k's shape"),
    "attention dtype": ("attention", _bad("attention", 1, lambda k: k.float()), "k must have q's dtype"),
    "varlen cu dtype": ("attention_varlen", _bad("attention_varlen", 3, lambda c: c.long()), "cu_seqlens_q must be int32"),
    "varlen cu_k len": ("attention_varlen", _bad("attention_varlen", 4, lambda c: c[:2]), "cu_seqlens_k"),
    "varlen max_seqlen": ("attention_varlen", _bad("attention_varlen", 5, -1), "max_seqlen_q must be >= 0"),
    "decode cache_seqlens": ("attention_decode", _bad("attention_decode", 3, lambda c: c[:1]), "cache_seqlens"),
    "decode batch": ("attention_decode", [V["attention_decode"][0], *[torch.randn(1, 8, 2, 16, dtype=F16)] * 2,
                                          V["attention_decode"][3], None, True], r"k_cache.shape\[0\] must be 2 \(batch of q\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_fake_kernel_refuses_what_the_cpu_kernel_refuses(case):
    op, args, match = BAD_CALLS[case]
    cpu = _message(op, args)
    assert cpu.startswith(f"squash::{op}: ")
    assert re.search(match, cpu), cpu
    assert _message(op, _to_meta(args)) == cpu


def test_torch_compile_refuses_wrong_shapes_at_trace_time():
    q8, s8 = so.quantize_int8_weight(torch.randn(16, 64))

    @torch.compile(fullgraph=True, backend="eager", dynamic=False)
    def f(x):
        return so.w8a16_gemm(x, q8, s8)

    assert f(torch.randn(2, 64, dtype=F16)).shape == (2, 16)
    with pytest.raises(Exception, match=r"squash::w8a16_gemm: qweight must be \[N, K\] = \[16, 48\] int8"):
        f(torch.randn(2, 48, dtype=F16))


# ---- documented ranges, checked in the ops ----


def test_int4_zero_points_above_15_are_refused():
    x, q4, s4, z4, _, bias = VALID["w4a16_gemm"]
    bad = z4.clone()
    bad[3, 1] = 16
    msg = r"zeros must hold 4-bit zero points 0..15, got a value of 16"
    with pytest.raises(ValueError, match=rf"squash::w4a16_gemm: {msg}"):
        so.w4a16_gemm(x, q4, s4, bad, 32, bias)
    with pytest.raises(ValueError, match=rf"squash::dequantize_int4_weight: {msg}"):
        so.dequantize_int4_weight(q4, s4, bad, 32)
    with pytest.raises(ValueError, match=rf"squash::prepack_int4_weight: {msg}"):
        so.prepack_int4_weight(q4, s4, bad, 32)
    with pytest.raises(ValueError, match=rf"squash::cpu_prepack_int4_weight: {msg}"):
        so.cpu_prepack_int4_weight(q4, s4, bad, 32)
    # The CPU prepacked GEMM runs the canonical one, so packed zeros are checked too.
    p4, sp4, zp4 = so.prepack_int4_weight(q4, s4, z4, 32)
    zp4 = zp4.clone()
    zp4[0, 0, 0] = 200
    with pytest.raises(ValueError, match="got a value of 200"):
        so.w4a16_gemm_prepacked(x, p4, sp4, zp4, 64, 32)


# The CUDA GEMMs read zero points on the device (a host check would sync every call): a zero point
# above 15 makes every weight of its group NaN, so its output channel is NaN for every token, bias
# or not, x row of zeros or not (csrc/kernels/gemm/gemm_common.cuh). Each path a call can take is
# forced through SQUASH_WOQ_CONFIG ("" = the heuristic) at a token count it runs.
W4A16_CUDA_PATHS = [("", 1), ("", 40), ("", 300), ("gemv_m1", 1), ("gemv_m4:3", 3), ("gemv_m16", 16),
                    ("mma_m8", 5), ("mma_m64:2", 64), ("dequant", 7), ("cutlass_sm90_64x128", 100),
                    ("cutlass_sm90_128x128", 200)]
PK_CUDA_PATHS = [("", 1), ("", 64), ("", 300), ("pk_m16_n16", 5), ("pk_m16_n32:3", 16), ("pk_m16_n64", 33),
                 ("pk_m32_n64:2", 40), ("pk_m64_n128", 100), ("dequant", 7)]
BAD_ZEROS = {3: 16, 70: 255, 135: 100}  # output channel -> zero point, put in its first, middle, last group


def _bad_groups(groups):
    return dict(zip(BAD_ZEROS, (0, groups // 2, groups - 1)))


def _check_nan_channels(out, ref):
    """The BAD_ZEROS channels are NaN in every row; every other channel matches the CPU op run
    with the valid zero points (it does not read the bad ones)."""
    out = out.cpu()
    bad = sorted(BAD_ZEROS)
    good = [n for n in range(out.shape[-1]) if n not in BAD_ZEROS]
    assert out[:, bad].isnan().all(), "a zero point above 15 must make its output channel NaN"
    assert torch.isfinite(out[:, good]).all()
    assert rel_mean_err(out[:, good], ref[:, good]) <= GEMM_REL_MEAN_ERR[out.dtype]


def _run_w4a16_with_bad_zeros(m, k, group):
    n = 136
    q, s, z = so.quantize_int4_weight(torch.randn(n, k), group_size=group, symmetric=False)
    bad = z.clone()
    for ch, gi in _bad_groups(z.shape[1]).items():
        bad[ch, gi] = BAD_ZEROS[ch]
    x, bias = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(n, dtype=torch.bfloat16)
    x[0] = 0  # NaN * 0 is NaN: the channel shows even where x cannot
    out = so.w4a16_gemm(x.cuda(), q.cuda(), s.cuda(), bad.cuda(), group, bias.cuda())
    _check_nan_channels(out, so.w4a16_gemm(x, q, s, z, group, bias))


@pytest.mark.gpu
@pytest.mark.parametrize("group", [128, -1], ids=["g128", "per_channel"])
@pytest.mark.parametrize("config, m", W4A16_CUDA_PATHS, ids=[f"{c or 'heuristic'}-m{m}" for c, m in W4A16_CUDA_PATHS])
def test_cuda_w4a16_zero_point_above_15_makes_its_output_channel_nan(config, m, group, monkeypatch):
    major, minor = torch.cuda.get_device_capability()
    if config.startswith("cutlass_sm90") and (major, minor) != (9, 0):  # woq_cutlass_config_runs_on
        pytest.skip(f"{config} does not run int4 on compute capability {major}.{minor}")
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", config)
    _run_w4a16_with_bad_zeros(m, 1024, group)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 300])
def test_cuda_w4a16_zero_point_above_15_odd_k(m):
    """K % 8 != 0: every M dequantizes one weight per thread (the scalar kernel) for cuBLAS."""
    _run_w4a16_with_bad_zeros(m, 1030, -1)


@pytest.mark.gpu
@pytest.mark.parametrize("group", [32, 128, -1], ids=["g32", "g128", "per_channel"])
@pytest.mark.parametrize("config, m", PK_CUDA_PATHS, ids=[f"{c or 'heuristic'}-m{m}" for c, m in PK_CUDA_PATHS])
def test_cuda_w4a16_prepacked_zero_point_above_15_makes_its_output_channel_nan(config, m, group, monkeypatch):
    """prepack_int4_weight refuses such zeros (a host check, once at load); packed zeros passed to
    the GEMM directly are read on the device like the canonical ones."""
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", config)
    n, k = 136, 1024
    q, s, z = so.quantize_int4_weight(torch.randn(n, k), group_size=group, symmetric=False)
    packed, sp, zp = so.prepack_int4_weight(q.cuda(), s.cuda(), z.cuda(), group)
    bad = zp.clone()
    for ch, gi in _bad_groups(zp.shape[1]).items():
        bad[ch // 8, gi, ch % 8] = BAD_ZEROS[ch]  # packed zeros: [N/8, G, 8]
    x, bias = torch.randn(m, k, dtype=torch.float16), torch.randn(n, dtype=torch.float16)
    x[0] = 0
    out = so.w4a16_gemm_prepacked(x.cuda(), packed, sp, bad, k, group, bias.cuda())
    _check_nan_channels(out, so.w4a16_gemm(x, q, s, z, group, bias))


@pytest.mark.parametrize("isa", so.cpu.runnable_isas())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("group", [32, 128, -1], ids=["g32", "g128", "per_channel"])
def test_cpu_prepacked_zero_point_above_15_makes_its_output_channel_nan(group, dtype, isa):
    """cpu_prepack_int4_weight refuses such zeros; packed zeros edited afterwards reach the CPU
    kernels, which make the group NaN as CUDA does (no per-call scan of the zeros). Every path:
    scalar, AVX2, and the AVX-512 BF16 kernel (bf16 activations) with 1, 3 and 9 rows."""
    n, k = 136, 1024
    q, s, z = so.quantize_int4_weight(torch.randn(n, k), group_size=group, symmetric=False)
    packed, sp, zp = so.cpu_prepack_int4_weight(q, s, z, group)
    bad = zp.clone()
    for ch, gi in _bad_groups(zp.shape[1]).items():
        bad[ch // 16, gi, ch % 16] = BAD_ZEROS[ch]  # CPU packed zeros: [ceil(N/16), G, 16]
    for m in (1, 3, 9):
        x, bias = torch.randn(m, k, dtype=dtype), torch.randn(n, dtype=dtype)
        x[0] = 0
        with so.cpu.use_isa(isa):
            out = so.w4a16_gemm_cpu_prepacked(x, packed, sp, bad, n=n, group_size=group, bias=bias)
        _check_nan_channels(out, so.w4a16_gemm(x, q, s, z, group, bias))


@pytest.mark.gpu
def test_cuda_load_time_ops_refuse_zero_points_above_15():
    """The load-time ops check zero points on CUDA too (one sync, at load, not per GEMM)."""
    q, s, z = (t.cuda() for t in _int4())
    bad = z.clone()
    bad[5, 1] = 16
    msg = r"zeros must hold 4-bit zero points 0..15, got a value of 16"
    with pytest.raises(ValueError, match=rf"squash::prepack_int4_weight: {msg}"):
        so.prepack_int4_weight(q, s, bad, 32)
    with pytest.raises(ValueError, match=rf"squash::dequantize_int4_weight: {msg}"):
        so.dequantize_int4_weight(q, s, bad, 32)


@pytest.mark.parametrize("value", [0.0, -0.0, -0.5, math.inf, -math.inf, math.nan])
def test_static_activation_scale_must_be_finite_and_positive(value):
    x = torch.randn(3, 64)
    with pytest.raises(ValueError, match=r"squash::quantize_activation_int8: scale must be finite and > 0, got"):
        so.quantize_activation_int8(x, torch.tensor([value]))
    with pytest.raises(ValueError, match=r"squash::rms_norm_quant: scale must be finite and > 0, got"):
        so.rms_norm_quant(x, scale=torch.tensor([value]))


@pytest.mark.gpu
@pytest.mark.parametrize("value", [0.0, -0.5, math.inf, math.nan])
@pytest.mark.parametrize("hidden", [64, 24576], ids=["row", "fallback"])
def test_cuda_static_activation_scale_out_of_range_shows_as_nan(value, hidden):
    """CUDA reads the static scale on the device (no sync to check it): a scale outside (0, inf)
    gives every row scale NaN and q = 0, so a W8A8 layer returns NaN instead of finite garbage."""
    x = torch.randn(3, hidden, device="cuda")
    scale = torch.tensor([value], device="cuda")
    for q, s in (so.quantize_activation_int8(x, scale), so.rms_norm_quant(x, scale=scale),
                 so.layer_norm_quant(x, scale=scale)):
        assert s.isnan().all() and (q == 0).all()


@pytest.mark.parametrize("value", [0.0, -0.25, math.inf, -math.inf, math.nan, 1e-50, 1e39])
@pytest.mark.parametrize("op", ["attention", "attention_varlen", "attention_decode"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_softmax_scale_must_be_finite_and_positive(op, value, device):
    args = list(VALID[op])
    args[_arg_names(op).index("softmax_scale")] = value
    args = _to_meta(args) if device == "meta" else args
    with pytest.raises(ValueError, match=rf"squash::{op}: softmax_scale must be a finite number > 0 \(or None for "
                                         rf"1/sqrt\(head_dim\)\), got {re.escape(f'{value:g}')}"):
        getattr(ops, op)(*args)


# ---- weight quantization refuses non-finite weights ----

WEIGHT_QUANTIZERS = {
    "int8": lambda w: so.quantize_int8_weight(w),
    "int4-sym": lambda w: so.quantize_int4_weight(w, 32, True),
    "int4-asym": lambda w: so.quantize_int4_weight(w, 32, False),
}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(WEIGHT_QUANTIZERS)), st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(0, 7), st.integers(0, 63))
def test_non_finite_weights_are_refused(scheme, dtype, value, row, col):
    w = torch.randn(8, 64).to(dtype)
    w[row, col] = value
    op = "quantize_int8_weight" if scheme == "int8" else "quantize_int4_weight"
    with pytest.raises(ValueError, match=rf"squash::{op}: weight must be finite, got {value:g} at \[{row}, {col}\] "
                                         r"\(1 non-finite element\)"):
        WEIGHT_QUANTIZERS[scheme](w)


_SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1e-40, -3e-39, 1e-30, 65504.0, -65504.0, 3.4e38, -3.4e38, 1.0, -1.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_SPECIAL), st.floats(width=32, allow_nan=False, allow_infinity=False)), min_size=32, max_size=32))
def test_asymmetric_int4_groups_get_a_positive_finite_scale(values):
    w = torch.tensor([values], dtype=torch.float32)
    q, s, z = so.quantize_int4_weight(w, group_size=32, symmetric=False)
    scale = float(s)
    assert math.isfinite(scale) and scale > 0 and math.copysign(1, scale) == 1
    assert 0 <= int(z) <= 15
    # Every element dequantizes within half a step (float64 reference of the op's dequantization).
    back = (so.unpack_int4(q).double() - int(z)) * scale
    assert float((back - w.double()).abs().max()) <= scale / 2 * (1 + 2**-20)


def test_replace_linear_refuses_a_non_finite_weight_naming_the_layer_and_touches_nothing():
    model = tiny_llama()
    bad = "model.layers.1.mlp.up_proj"
    with torch.no_grad():
        model.get_submodule(bad).weight[5, 7] = math.inf
    before = dict(model.named_modules())
    with pytest.raises(ValueError, match=rf"replace_linear: {bad}.weight holds 1 non-finite value \(first: inf at "
                                         rf"\[5, 7\]\).*overrides=\{{'{bad}': None\}}"):
        replace_linear(model, W8A16Config())
    assert dict(model.named_modules()) == before
    # Kept in float, the rest quantizes.
    report = replace_linear(model, W8A16Config(), overrides={bad: None})
    assert bad in report.skipped and len(report.replaced) > 0


# ---- the int8 row rule: NaN shows, inf and zero rows, tiny rows quantize (CPU and CUDA) ----

_ROW_SPECIAL = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-45, -1e-40, 3e-39, 1e-38, -4e-37, 5e-37,
                1e-30, 65504.0, 3.4e38, -1.0, 2.5]
_DEVICES = ["cpu"] + (["cuda"] if so.cuda_available() else [])


def _row_rule(y, static):
    """q and scale of one row of exact values y (float64) by the documented rule (README, 'NaN
    shows, tiny values quantize'), and v = y * inv in float64 for the tie window."""
    finite = y[~y.isnan()]
    absmax = finite.abs().max().item() if finite.numel() else 0.0
    f32 = lambda a: torch.tensor(a, dtype=torch.float32).item()  # noqa: E731
    if static is not None:
        scale = f32(static)
        inv = 1.0 / scale
    else:
        scale, inv = f32(absmax / 127.0), (127.0 / absmax if absmax > 0 else 0.0)
    v = y * inv
    q = torch.where(v.isnan(), 0.0, v.clamp(-127, 127).round())  # round: half to even
    return q, (math.nan if y.isnan().any() else scale), v


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.sampled_from(_ROW_SPECIAL), st.floats(width=32)), min_size=1, max_size=40),
       op=st.sampled_from(["quantize_activation_int8", "quantize_activation_int8_transformed", "rms_norm_quant",
                           "layer_norm_quant"]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), static=st.sampled_from([None, 0.02, 1e-38]),
       device=st.sampled_from(_DEVICES), isa=st.sampled_from(so.cpu.runnable_isas()))
def test_int8_rows_follow_the_rule(values, op, dtype, static, device, isa):
    """Rows of special values (NaN, inf, zeros, subnormals, values where 127 / absmax overflows,
    huge ones) through every int8 quantizer, against the rule in float64 (the transformed one
    with no multiply and no rotation, so y is x: its row buffer must keep the rule). The norm ops get the
    values exactly as their y: RMSNorm of ones with eps 0 gives y = weight, LayerNorm of ones
    without weight y = bias (the values in float32 beside float16 x, which cannot hold them)."""
    n = len(values)
    vdt = torch.float32 if dtype == torch.float16 and op.startswith(("rms", "layer")) else dtype
    vals = torch.tensor(values, dtype=torch.float64).to(vdt)
    scale = None if static is None else torch.tensor([static], device=device)
    ones = torch.ones(1, n, dtype=dtype, device=device)
    with so.cpu.use_isa(isa):
        if op == "quantize_activation_int8":
            q, s = so.quantize_activation_int8(vals.view(1, n).to(device), scale)
        elif op == "quantize_activation_int8_transformed":
            q, s = so.quantize_activation_int8_transformed(vals.view(1, n).to(device), None, 0, scale)
        elif op == "rms_norm_quant":
            q, s = so.rms_norm_quant(ones, vals.to(device), eps=0.0, scale=scale)
        else:
            q, s = so.layer_norm_quant(ones, None, vals.to(device), scale=scale)
    q_ref, s_ref, v = _row_rule(vals.double(), static)
    q, s = q[0].cpu().double(), s[0].item()
    assert s == s_ref or (math.isnan(s) and math.isnan(s_ref)), (s, s_ref)
    # float32 y * inv may round across a tie that float64 does not: one step, there only.
    near_tie = (v - v.floor() - 0.5).abs() < 1e-4
    assert ((q - q_ref).abs() <= near_tie.double()).all(), (q, q_ref)


# ---- model transforms are all or nothing ----


def _snapshot(model):
    """Module objects at every path and every tensor's bytes."""
    return dict(model.named_modules()), {n: t.detach().clone() for n, t in model.state_dict().items()}


def _assert_untouched(model, snapshot):
    modules, tensors = snapshot
    assert dict(model.named_modules()) == modules
    now = model.state_dict()
    assert list(now) == list(tensors)
    for name, t in tensors.items():  # bit for bit (NaN included)
        assert now[name].dtype == t.dtype and now[name].shape == t.shape, name
        assert torch.equal(now[name].reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8)), name


def test_migration_checks_every_site_before_converting_any():
    from squash_ops.migration import migrate_gamma

    model = tiny_llama(tie=False)
    with torch.no_grad():
        for m in model.modules():  # gammas != 1: every site has something to fold
            if type(m).__name__.endswith("RMSNorm"):
                m.weight.uniform_(0.5, 2.0)
        model.lm_head.weight[0, 0] = math.nan  # the last site's consumer (behind the final norm)
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"lm_head: its weight holds inf or NaN"):
        migrate_gamma(model)
    _assert_untouched(model, snap)


def test_migration_refuses_a_fold_that_overflows():
    from squash_ops.migration import migrate_gamma

    model = tiny_llama().half()
    with torch.no_grad():
        model.model.layers[1].post_attention_layernorm.weight[3] = 60000.0
        model.model.layers[1].mlp.up_proj.weight[:, 3] = 2.0
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.(gate|up)_proj: folding the norm's gamma into its "
                                         r"torch.float16 weight overflows"):
        migrate_gamma(model)
    _assert_untouched(model, snap)


def test_quantize_w8a8_refused_late_leaves_the_model_as_it_was():
    from squash_ops.migration import quantize_w8a8

    model = tiny_llama(tie=False)
    with torch.no_grad():  # only replace_linear's check would see this one
        model.model.layers[1].self_attn.o_proj.weight[2, 2] = math.nan
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"model.layers.1.self_attn.o_proj.weight holds 1 non-finite value"):
        quantize_w8a8(model, W8A8Config("static"), calibration=[token_batch()])
    _assert_untouched(model, snap)
    with pytest.raises(ValueError, match="percentile must be in"):
        quantize_w8a8(model, W8A8Config("static"), calibration=[token_batch()], method="percentile",
                      percentile=math.nan)
    _assert_untouched(model, snap)


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_quantize_w8a8_failing_in_calibration_restores_the_model(family):
    from squash_ops.migration import quantize_w8a8

    model = tiny_llama(tie=False) if family == "llama" else tiny_bert()
    snap = _snapshot(model)
    batch = token_batch()
    # The second batch's token ids are beyond the vocabulary: the model raises IndexError on it,
    # after the norms were migrated and the linears quantized.
    bad_batches = [batch, {**batch, "input_ids": batch["input_ids"] + 10_000}]
    with pytest.raises(IndexError):
        quantize_w8a8(model, W8A8Config("static"), calibration=bad_batches)
    _assert_untouched(model, snap)
    # The restored model still transforms and runs.
    quantize_w8a8(model, W8A8Config("static"), calibration=[batch])
    assert torch.isfinite(model(**batch).logits).all()


@pytest.mark.parametrize("fault", ["zeros", "scales", "norm"])
def test_importer_with_a_bad_later_layer_leaves_the_model_as_it_was(fault):
    from test_quant_importers import _llama_gptq_checkpoint

    _, ckpt, _ = _llama_gptq_checkpoint()
    last = "model.layers.1.mlp.down_proj"
    if fault == "zeros":  # a v1 zero of 0 reads back as 16
        ckpt[f"{last}.qzeros"] = torch.full_like(ckpt[f"{last}.qzeros"], -1)
    elif fault == "scales":
        ckpt[f"{last}.scales"][0, 0] = math.inf
    else:  # a float tensor of the wrong shape, checked after every layer converted
        ckpt["model.norm.weight"] = ckpt["model.norm.weight"][:5]
    model = tiny_llama(seed=5)
    snap = _snapshot(model)
    with pytest.raises(CheckpointError, match="import_gptq: the checkpoint dict"):
        import_gptq(model, ckpt)
    _assert_untouched(model, snap)


# ---- checkpoints ----


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_llama()
    replace_linear(model, W4A16Config(64, False), overrides={"model.layers.0.self_attn.q_proj": W8A16Config()})
    path = tmp_path_factory.mktemp("ckpt")
    save_quantized(model, path)
    return model, path


def _copy(saved, tmp_path):
    import shutil

    _, path = saved
    for f in path.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _edit_config(path, edit):
    cfg_path = path / "squash_config.json"
    cfg = json.loads(cfg_path.read_text())
    edit(cfg)
    cfg_path.write_text(json.dumps(cfg))


LAYER = "model.layers.0.mlp.up_proj"
MALFORMED = {
    "negative in_features": (lambda s: s.update(in_features=-128), r"in_features must be an integer in 1\.\.\d+, got -128"),
    "absurd out_features": (lambda s: s.update(out_features=10**13), "out_features must be an integer"),
    "float in_features": (lambda s: s.update(in_features=128.0), "in_features must be an integer"),
    "string out_features": (lambda s: s.update(out_features="320"), "out_features must be an integer"),
    "bool in_features": (lambda s: s.update(in_features=True), "in_features must be an integer"),
    "string bias": (lambda s: s.update(bias="false"), "bias must be true or false"),
    "compute dtype": (lambda s: s.update(compute_dtype="zeros"), "compute_dtype must be null, float16 or bfloat16"),
    "optional buffers": (lambda s: s.update(optional_buffers="input_perm"), "optional_buffers must be a list"),
    "unknown buffer": (lambda s: s.update(optional_buffers=["extra"]), "unknown buffer 'extra'"),
    "group size type": (lambda s: s["config"].update(group_size=64.0),
                        r"bad entry \(ValueError: W4A16Config: group_size must be 32, 64, 128 or -1, got 64.0\)"),
    "symmetric type": (lambda s: s["config"].update(symmetric="no"),
                       r"bad entry \(ValueError: W4A16Config: symmetric must be True or False, got 'no'\)"),
    "missing key": (lambda s: s.pop("bias"), "the entry has no 'bias'"),
    "config not a dict": (lambda s: s.update(config=[1]), "config must be an object, got list"),
    "future module": (lambda s: (s.update(module="W4A8Linear"), s["config"].update(scheme="w4a8")),
                      r"it is a 'W4A8Linear' layer \(scheme 'w4a8'\), which squash_ops .* cannot rebuild .*Upgrade"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_config_entry_gives_a_checkpoint_error_naming_file_and_layer(saved, tmp_path, case):
    edit, match = MALFORMED[case]
    path = _copy(saved, tmp_path)
    _edit_config(path, lambda cfg: edit(cfg["layers"][LAYER]))
    skeleton = tiny_llama(seed=3)
    snap = _snapshot(skeleton)
    with pytest.raises(CheckpointError, match=rf"squash_config.json: layer {LAYER}: {match}"):
        load_quantized(skeleton, path)
    _assert_untouched(skeleton, snap)


@pytest.mark.parametrize("edit,match", [
    (lambda cfg: cfg["layers"].update({LAYER: 3}), rf"layer {LAYER}: its entry must be an object"),
    (lambda cfg: cfg.update(aliases={"a": 1}), "'aliases' must map tensor names to strings"),
    (lambda cfg: cfg.update(checksums=[]), "'checksums' must map tensor names to strings"),
])
def test_malformed_config_header(saved, tmp_path, edit, match):
    path = _copy(saved, tmp_path)
    _edit_config(path, edit)
    with pytest.raises(CheckpointError, match=match):
        load_quantized(tiny_llama(seed=3), path)


@pytest.mark.parametrize("tensor", [f"{LAYER}.qweight", f"{LAYER}.scales", "model.embed_tokens.weight"])
def test_flipped_byte_is_caught_by_the_checksum(saved, tmp_path, tensor):
    path = _copy(saved, tmp_path)
    f = path / "squash_model.safetensors"
    from safetensors import safe_open

    with safe_open(f, "pt") as h:
        metadata = h.metadata()
    tensors = load_file(f)
    flat = tensors[tensor].view(-1).view(torch.uint8)
    flat[flat.numel() // 2] ^= 0x10  # one bit, same shape and dtype
    save_file(tensors, f, metadata=metadata)
    skeleton = tiny_llama(seed=3)
    snap = _snapshot(skeleton)
    layer = f"layer {LAYER}: " if tensor.startswith(LAYER) else ""
    with pytest.raises(CheckpointError, match=rf"squash_model.safetensors: {layer}{tensor} does not match its "
                                              r"checksum: the file is corrupt"):
        load_quantized(skeleton, path)
    _assert_untouched(skeleton, snap)


def test_checkpoint_without_checksums_still_loads_with_a_warning(saved, tmp_path):
    model, _ = saved
    path = _copy(saved, tmp_path)
    _edit_config(path, lambda cfg: cfg.pop("checksums"))
    with pytest.warns(UserWarning, match="records no tensor checksums"):
        loaded = load_quantized(tiny_llama(seed=3), path)
    x = token_batch()
    assert torch.equal(loaded(**x).logits, model(**x).logits)


def test_checksums_cover_every_stored_tensor(saved):
    _, path = saved
    cfg = json.loads((path / "squash_config.json").read_text())
    stored = load_file(path / "squash_model.safetensors")
    assert set(cfg["checksums"]) == set(stored)
    assert all(v.startswith("sha256:") and len(v) == 7 + 64 for v in cfg["checksums"].values())
