"""Prepacked weight-only GEMMs: prepack/unprepack (layout, exact round trip) and the prepacked GEMMs.

- Layout: the packed bytes are rebuilt here from the formulas of prepacked_layout.h / FORMATS.md
  (per byte: which column and which k each nibble holds), independently of the ops' view/permute
  implementation, and must match bit for bit.
- Round trip: unprepack(prepack(w)) == w exactly, over random shapes and formats (hypothesis).
- GEMMs (CPU): vs the float64 reference of tests/test_gemm.py with its tight bounds, and equal to
  the canonical op on the same weights.
- GPU (marked gpu): the CUDA kernel vs the CPU op over every format, dtype, awkward shape and
  token count, for the heuristic's pick and every forced config; outputs poisoned first.
"""

import os

import pytest
import torch
from helpers import GEMM_REL_MEAN_ERR, rel_mean_err, raises_value_error as _raises
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gemm import FORMATS, HALF, _fmt_id, assert_close_to_ref, make_weights, ref_linear, ref_unpack

import squash_ops as so

ops = torch.ops.squash
HYPO = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TILE_K = {4: 128, 8: 64}


# ---------------------------------------------------------------- layout reference (written here)
def _byte_fields():
    b = torch.arange(512)
    lane, i, bw = b // 16, (b // 4) % 4, b % 4
    return lane // 4, lane % 4, i, bw  # g (column in tile), t, word, byte in word


def ref_prepack(codes, bits):
    """codes: int64 [N, K] (int4: 0..15, int8: -128..127) -> packed uint8 [N/8, ceil(K/tile_k), 512]."""
    n, k = codes.shape
    kt = -(-k // TILE_K[bits])
    g, t, i, bw = _byte_fields()
    cols = 8 * torch.arange(n // 8)[:, None, None] + g  # [N/8, 1, 512]
    base = TILE_K[bits] * torch.arange(kt)[None, :, None]  # [1, KT, 1]

    def value(kin, pad):
        kk = base + kin
        padded = torch.full((n, kt * TILE_K[bits]), pad, dtype=torch.int64)
        padded[:, :k] = codes if bits == 4 else codes + 128
        return padded[cols.expand(-1, kt, -1), kk.expand(n // 8, -1, -1)]

    if bits == 4:  # nibble `high` of byte bw of word i: k = 32i + 8t + 4 (bw & 1) + 2 high + (bw >> 1)
        lo = value(32 * i + 8 * t + 4 * (bw & 1) + (bw >> 1), 0)
        hi = value(32 * i + 8 * t + 4 * (bw & 1) + 2 + (bw >> 1), 0)
        return (lo | (hi << 4)).to(torch.uint8)
    # int8: byte bw of word i: k = 32 (i >> 1) + 8t + 4 (i & 1) + bw, stored q + 128
    return value(32 * (i >> 1) + 8 * t + 4 * (i & 1) + bw, 128).to(torch.uint8)


def ref_pack_groups(t):
    n, groups = t.shape
    return t.reshape(n // 8, 8, groups).transpose(1, 2)


@pytest.mark.parametrize("n,k,group_size", [(8, 128, 128), (24, 256, 32), (16, 4104, -1), (40, 4160, 64), (8, 8, -1)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_prepack_int4_layout_matches_formula(n, k, group_size, symmetric):
    q, s, z = so.quantize_int4_weight(torch.randn(n, k), group_size=group_size, symmetric=symmetric)
    packed, sp, zp = so.prepack_int4_weight(q, s, z, group_size=group_size)
    assert packed.dtype == torch.uint8 and packed.shape == (n // 8, -(-k // 128), 512)
    assert torch.equal(packed, ref_prepack(ref_unpack(q), 4))
    assert sp.dtype == torch.float32 and torch.equal(sp, ref_pack_groups(s))
    if symmetric:
        assert zp is None
        # the op itself returns zeros filled with 8
        assert torch.all(ops.prepack_int4_weight(q, s, None, group_size)[2] == 8)
    else:
        assert torch.equal(zp, ref_pack_groups(z))


@pytest.mark.parametrize("n,k", [(8, 64), (24, 136), (16, 4104), (8, 8)])
def test_prepack_int8_layout_matches_formula(n, k):
    q, s = so.quantize_int8_weight(torch.randn(n, k))
    q[0, :4] = torch.tensor([-128, -127, 127, 0], dtype=torch.int8)  # the extremes of int8
    packed, sp = so.prepack_int8_weight(q, s.half())
    assert packed.dtype == torch.uint8 and packed.shape == (n // 8, -(-k // 64), 512)
    assert torch.equal(packed, ref_prepack(q.long(), 8))
    assert sp.dtype == torch.float32 and torch.equal(sp, s.half().float())


@HYPO
@given(tiles_n=st.integers(1, 5), k8=st.integers(1, 40), group_size=st.sampled_from([32, 64, 128, -1]),
       symmetric=st.booleans(), scale_dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2**31 - 1))
def test_int4_round_trip(tiles_n, k8, group_size, symmetric, scale_dtype, seed):
    n, k = 8 * tiles_n, 8 * k8
    if group_size != -1:
        k = group_size * (-(-k // group_size))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    groups = 1 if group_size == -1 else k // group_size
    s = (torch.rand(n, groups, generator=gen) + 0.1).to(scale_dtype)
    z = None if symmetric else torch.randint(0, 16, (n, groups), dtype=torch.uint8, generator=gen)
    packed, sp, zp = so.prepack_int4_weight(q, s, z, group_size=group_size)
    q2, s2, z2 = so.unprepack_int4_weight(packed, sp, zp, k, group_size=group_size)
    assert torch.equal(q2, q) and torch.equal(s2, s.float())
    assert (z2 is None) if symmetric else torch.equal(z2, z)


@HYPO
@given(tiles_n=st.integers(1, 5), k8=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_int8_round_trip(tiles_n, k8, seed):
    n, k = 8 * tiles_n, 8 * k8
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
    s = torch.rand(n, generator=gen)
    q2, s2 = so.unprepack_int8_weight(*so.prepack_int8_weight(q, s), k)
    assert torch.equal(q2, q) and torch.equal(s2, s)


# ---------------------------------------------------------------- prepacked GEMMs (CPU)
def prepack(fmt, wts):
    if fmt[0] == "int8":
        packed, sp = so.prepack_int8_weight(wts["qweight"], wts["scales"])
        return dict(packed=packed, scales=sp, k=wts["qweight"].shape[1])
    packed, sp, zp = so.prepack_int4_weight(wts["qweight"], wts["scales"], wts["zeros"], group_size=wts["group_size"])
    return dict(packed=packed, scales=sp, zeros=zp, k=2 * wts["qweight"].shape[1], group_size=wts["group_size"])


def run_prepacked(fmt, x, pw, bias=None):
    if fmt[0] == "int8":
        return so.w8a16_gemm_prepacked(x, pw["packed"], pw["scales"], pw["k"], bias=bias)
    return so.w4a16_gemm_prepacked(x, pw["packed"], pw["scales"], pw["zeros"], pw["k"], group_size=pw["group_size"],
                                   bias=bias)


def run_canonical(fmt, x, wts, bias=None):
    if fmt[0] == "int8":
        return so.w8a16_gemm(x, wts["qweight"], wts["scales"], bias=bias)
    return so.w4a16_gemm(x, wts["qweight"], wts["scales"], wts["zeros"], group_size=wts["group_size"], bias=bias)


# (leading dims, N, K): N = 8 and 24 (not a multiple of 16), K = 8, 4104 (% 32 != 0), 4160 (% 128 != 0)
SHAPES = [((1,), 8, 128), ((3,), 24, 256), ((2, 3), 40, 4104), ((5,), 16, 4160), ((1,), 8, 8)]


def _ok(fmt, k):
    return fmt[0] == "int8" or fmt[1] == -1 or k % fmt[1] == 0


FMT_SHAPES = [pytest.param(f, s, id=f"{_fmt_id(f)}-{s[0]}x{s[1]}x{s[2]}") for f in FORMATS for s in SHAPES if _ok(f, s[2])]


@pytest.mark.parametrize("fmt,shape", FMT_SHAPES)
@pytest.mark.parametrize("dtype", HALF)
def test_prepacked_gemm_vs_float64(fmt, shape, dtype):
    lead, n, k = shape
    wts, w64 = make_weights(fmt, n, k, dtype, dtype if lead == (3,) else torch.float32)
    x = torch.randn(*lead, k, dtype=dtype)
    bias = torch.randn(n, dtype=dtype) if n % 16 else None
    out = run_prepacked(fmt, x, prepack(fmt, wts), bias)
    ref, err32 = ref_linear(x, w64, bias)
    assert_close_to_ref(out, ref, err32, dtype)
    assert torch.equal(out, run_canonical(fmt, x, wts, bias))


def test_prepacked_gemm_empty_rows_and_strided_x():
    fmt = ("int4", 32, False)
    wts, _ = make_weights(fmt, 16, 128, torch.float16, torch.float32)
    pw = prepack(fmt, wts)
    assert run_prepacked(fmt, torch.randn(2, 0, 128, dtype=torch.float16), pw).shape == (2, 0, 16)
    big = torch.randn(4, 200, dtype=torch.float16)
    x = big[:, 40:168]
    assert torch.equal(run_prepacked(fmt, x, pw), run_prepacked(fmt, x.contiguous(), pw))


# ---------------------------------------------------------------- opcheck and torch.compile
def test_opcheck_prepacked():
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    q4, s4, z4 = so.quantize_int4_weight(torch.randn(16, 64), group_size=32, symmetric=False)
    q8, s8 = so.quantize_int8_weight(torch.randn(16, 64))
    p4, sp4, zp4 = ops.prepack_int4_weight(q4, s4, z4, 32)
    p8, sp8 = ops.prepack_int8_weight(q8, s8)
    bias = torch.randn(16, dtype=torch.bfloat16)
    cases = [
        (ops.prepack_int4_weight, (q4, s4, z4, 32)),
        (ops.prepack_int4_weight, (q4, s4[:, :1].contiguous().half(), None, -1)),
        (ops.unprepack_int4_weight, (p4, sp4, zp4, 64, 32)),
        (ops.unprepack_int4_weight, (p4, sp4, None, 64, 32)),
        (ops.prepack_int8_weight, (q8, s8)),
        (ops.unprepack_int8_weight, (p8, sp8, 64)),
        (ops.w4a16_gemm_prepacked, (x, p4, sp4, zp4, 64, 32, bias)),
        (ops.w4a16_gemm_prepacked, (x.half().reshape(1, 3, 64), p4, sp4, None, 64, 32, None)),
        (ops.w8a16_gemm_prepacked, (x, p8, sp8, 64, bias)),
        (ops.w8a16_gemm_prepacked, (x.half(), p8, sp8, 64, None)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


class TinyPrepackedMLP(torch.nn.Module):
    def __init__(self, k=64, h=96, n=40):
        super().__init__()
        self.k, self.h = k, h
        q1, s1, z1 = so.quantize_int4_weight(torch.randn(h, k) * 0.1, group_size=32, symmetric=False)
        p1, sp1, zp1 = so.prepack_int4_weight(q1, s1, z1, group_size=32)
        p2, sp2 = so.prepack_int8_weight(*so.quantize_int8_weight(torch.randn(n, h) * 0.1))
        for name, t in dict(p1=p1, sp1=sp1, zp1=zp1, p2=p2, sp2=sp2, b2=torch.randn(n).half()).items():
            self.register_buffer(name, t)

    def forward(self, x):
        h = torch.relu(so.w4a16_gemm_prepacked(x, self.p1, self.sp1, self.zp1, self.k, group_size=32))
        return so.w8a16_gemm_prepacked(h, self.p2, self.sp2, self.h, bias=self.b2)


def test_torch_compile_fullgraph():
    model = TinyPrepackedMLP()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for lead in [(3,), (2, 5)]:
        x = torch.randn(*lead, 64, dtype=torch.float16)
        out = compiled(x)
        assert out.shape == (*lead, 40) and torch.equal(out, model(x))


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_prepack():
    q4, s4, z4 = so.quantize_int4_weight(torch.randn(16, 96), group_size=32, symmetric=False)
    _raises(r"prepack_int4_weight: N = qweight.shape\[0\] must be a positive multiple of 8 .*got 12",
            so.prepack_int4_weight, q4[:12], s4[:12], z4[:12], group_size=32)
    q, s, _ = so.quantize_int4_weight(torch.randn(8, 36), group_size=-1)
    _raises(r"K = 2 \* qweight.shape\[1\] must be a positive multiple of 8 .*got 36", so.prepack_int4_weight,
            q, s, group_size=-1)
    _raises(r"prepack_int4_weight: qweight must be uint8, got int8", so.prepack_int4_weight, q4.view(torch.int8),
            s4, z4, group_size=32)
    _raises(r"group_size 64 must divide K=96", so.prepack_int4_weight, q4, s4, z4, group_size=64)
    _raises(r"scales must be \[N, K/group_size\] = \[16, 3\]", so.prepack_int4_weight, q4, s4[:, :2], z4, group_size=32)
    _raises(r"zeros must be uint8, got int64", so.prepack_int4_weight, q4, s4, z4.long(), group_size=32)
    _raises(r"qweight must be 2-D \[N, K/2\] uint8", so.prepack_int4_weight, q4[None], s4, z4, group_size=32)
    q8, s8 = so.quantize_int8_weight(torch.randn(16, 40))
    _raises(r"prepack_int8_weight: K = qweight.shape\[1\] must be a positive multiple of 8 .*got 36",
            so.prepack_int8_weight, q8[:, :36], s8)
    _raises(r"prepack_int8_weight: qweight must be int8, got uint8", so.prepack_int8_weight, q8.view(torch.uint8), s8)
    _raises(r"prepack_int8_weight: scales must be \[N\] = \[16\]", so.prepack_int8_weight, q8, s8[:8])


def test_bad_inputs_unprepack():
    p4, sp4, zp4 = so.prepack_int4_weight(*so.quantize_int4_weight(torch.randn(16, 256), group_size=64,
                                                                   symmetric=False), group_size=64)
    _raises(r"unprepack_int4_weight: packed must be \[N/8, ceil\(K/128\), 512\] = \[N/8, 3, 512\] uint8 for K=320",
            so.unprepack_int4_weight, p4, sp4, zp4, 320, group_size=64)
    _raises(r"unprepack_int4_weight: scales must be \[N/8, K/group_size, 8\] = \[2, 2, 8\] float32",
            so.unprepack_int4_weight, p4, sp4, zp4, 256, group_size=128)
    _raises(r"unprepack_int4_weight: k must be a positive multiple of 8", so.unprepack_int4_weight, p4, sp4, zp4,
            252, group_size=-1)
    p8, sp8 = so.prepack_int8_weight(*so.quantize_int8_weight(torch.randn(16, 64)))
    _raises(r"unprepack_int8_weight: packed must be \[N/8, ceil\(K/64\), 512\] = \[N/8, 2, 512\]",
            so.unprepack_int8_weight, p8, sp8, 128)
    _raises(r"unprepack_int8_weight: scales must be float32, got float16", so.unprepack_int8_weight, p8, sp8.half(), 64)


def test_bad_inputs_prepacked_gemm():
    x = torch.randn(3, 256, dtype=torch.float16)
    p4, sp4, zp4 = so.prepack_int4_weight(*so.quantize_int4_weight(torch.randn(16, 256), group_size=64,
                                                                   symmetric=False), group_size=64)
    gemm4 = so.w4a16_gemm_prepacked
    _raises(r"w4a16_gemm_prepacked: x must be float16 or bfloat16, got float32", gemm4, x.float(), p4, sp4, zp4,
            256, 64)
    _raises(r"w4a16_gemm_prepacked: k must be a positive multiple of 8 .*got 252", gemm4,
            x[:, :252], p4, sp4, zp4, 252, 64)
    _raises(r"x must be \[\.\.\., K\] with K = k = 256 \(the prepacked weight's in_features\), got shape \[3, 128\]",
            gemm4, x[:, :128], p4, sp4, zp4, 256, 64)
    _raises(r"packed must be \[N/8, ceil\(K/128\), 512\] = \[N/8, 1, 512\] uint8 for K=128", gemm4, x[:, :128], p4,
            sp4, zp4, 128, 64)
    _raises(r"scales must be float32, got float16", gemm4, x, p4, sp4.half(), zp4, 256, 64)
    _raises(r"scales must be \[N/8, K/group_size, 8\] = \[2, 2, 8\] float32, got shape \[2, 4, 8\]", gemm4, x, p4,
            sp4, zp4, 256, 128)
    _raises(r"zeros must be \[N/8, K/group_size, 8\] = \[2, 4, 8\] uint8, got shape \[2, 4, 4\]", gemm4, x, p4, sp4,
            zp4[..., :4].contiguous(), 256, 64)
    _raises(r"packed must be contiguous", gemm4, x, p4.transpose(0, 1).contiguous().transpose(0, 1), sp4, zp4, 256, 64)
    _raises(r"bias must be float16, got bfloat16", gemm4, x, p4, sp4, zp4, 256, 64, bias=torch.randn(16).bfloat16())
    _raises(r"bias must be \[N\] = \[16\] float16, got shape \[8\]", gemm4, x, p4, sp4, zp4, 256, 64,
            bias=torch.randn(8).half())
    _raises(r"x must have a contiguous last dimension", gemm4, torch.randn(256, 3, dtype=torch.float16).t(), p4,
            sp4, zp4, 256, 64)
    p8, sp8 = so.prepack_int8_weight(*so.quantize_int8_weight(torch.randn(16, 256)))
    _raises(r"w8a16_gemm_prepacked: packed must be \[N/8, ceil\(K/64\), 512\] = \[N/8, 4, 512\] uint8", so.w8a16_gemm_prepacked,
            x, p4, sp8, 256)
    _raises(r"w8a16_gemm_prepacked: scales must be \[N\] = \[16\] float32", so.w8a16_gemm_prepacked, x, p8, sp8[:8], 256)


# The layout pads K to whole tiles (int8: 64, int4: 128), so a weight of K=56 and an x of K=64 (or
# the other way round) have the same packed shape: only the recorded k tells them apart.
@pytest.mark.parametrize("fmt,k_weight,k_x", [(FORMATS[0], 56, 64), (FORMATS[0], 64, 56), (FORMATS[-1], 120, 128),
                                              (FORMATS[-1], 128, 120)])
def test_prepacked_k_inside_the_last_tile_is_refused(fmt, k_weight, k_x):
    pw = prepack(fmt, make_weights(fmt, 16, k_weight, torch.float16, torch.float32)[0])
    assert pw["k"] == k_weight
    x = torch.randn(2, k_x, dtype=torch.float16)
    op = "w8a16" if fmt[0] == "int8" else "w4a16"
    with pytest.raises(ValueError, match=rf"squash::{op}_gemm_prepacked: x must be \[\.\.\., K\] with K = k = "
                                         rf"{k_weight} \(the prepacked weight's in_features\), got shape \[2, {k_x}\]"):
        run_prepacked(fmt, x, pw)
    # The module records its in_features and refuses the same input before the op.
    linear = torch.nn.Linear(k_weight, 16)
    cfg = so.W8A16Config() if fmt[0] == "int8" else so.W4A16Config(group_size=fmt[1], symmetric=fmt[2])
    m = so.quant.quantize_linear(linear, cfg, torch.float16).prepack()
    with pytest.raises(ValueError, match=rf"input must be \[\.\.\., {k_weight}\], got shape \[2, {k_x}\]"):
        m(x)


# ---------------------------------------------------------------- GPU: the CUDA kernel vs the CPU op
# Every format and dtype, N = 24 (a half n16 pair), 11008, K = 4104 (per-channel and int8: not a
# multiple of 32 or 128), K = 4224 = 33 * 128 and 4160 = 65 * 64 (grouped), token counts across
# every config boundary (16, 32, 64) and the M-chunked (> 64) and dequantize (> 256) paths.
GPU_M = [1, 2, 3, 5, 8, 9, 16, 17, 33, 64, 65, 128, 300]
SANITIZE = bool(os.environ.get("SQUASH_SANITIZE"))  # memcheck/racecheck: a few blocks per kernel are enough


def _gpu_nk(fmt):
    if SANITIZE:
        return [(24, 4104 if fmt[0] == "int8" or fmt[1] == -1 else 4224)]
    if fmt[0] == "int8" or fmt[1] == -1:
        return [(11008, 4104), (24, 4104)]
    return [(11008, 4224), (24, 4160)] if fmt[1] in (32, 64) else [(11008, 4224), (24, 4224)]


def _poisoned_cuda_cache(nbytes):
    """Fills the caching allocator's next blocks with NaN, so an output element the kernel does not
    write (the op allocates its output with torch.empty) comes back as NaN and fails the check."""
    torch.empty(nbytes // 2 + 1024, dtype=torch.float16, device="cuda").fill_(float("nan"))


def _check_gpu(fmt, x, out_cpu, pw_gpu, bias, dtype):
    """The CUDA op on x vs out_cpu, the CPU op's result for the same x and weights."""
    _poisoned_cuda_cache(out_cpu.numel() * 2)
    out_gpu = run_prepacked(fmt, x.cuda(), pw_gpu, bias.cuda() if bias is not None else None)
    assert out_gpu.is_cuda and out_gpu.dtype == dtype and out_gpu.shape == out_cpu.shape
    out_gpu = out_gpu.cpu()
    assert torch.isfinite(out_gpu).all(), "non-finite output (unwritten or wrong elements)"
    # TARGETS.md bounds (1e-3 fp16, 4e-3 bf16); the kernel accumulates in float32 like the CPU op,
    # so a correct kernel lands far below them (the host emulation's worst case is the final
    # rounding); M > 256 dequantizes to x.dtype first (cuBLAS path), which stays within them.
    assert rel_mean_err(out_gpu, out_cpu) <= GEMM_REL_MEAN_ERR[dtype] / (1 if x.shape[0] > 256 else 8)


def _to_gpu(pw):
    return {key: (v.cuda() if torch.is_tensor(v) else v) for key, v in pw.items()}


GPU_FORMATS = [FORMATS[0], ("int4", 128, True), ("int4", 128, False), ("int4", 64, True), ("int4", 32, False),
               ("int4", -1, True), ("int4", -1, False)]


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", GPU_FORMATS, ids=_fmt_id)
@pytest.mark.parametrize("dtype", HALF)
def test_gpu_prepacked_matches_cpu(fmt, dtype):
    ms = GPU_M[:6] if SANITIZE else GPU_M
    for n, k in _gpu_nk(fmt):
        wts, _ = make_weights(fmt, n, k, dtype, torch.float32 if n > 24 else dtype)
        pw = prepack(fmt, wts)
        pw_gpu = _to_gpu(pw)
        # prepacking on the GPU gives the same bytes
        pw_on_gpu = prepack(fmt, _to_gpu(wts))
        assert all(torch.equal(pw_on_gpu[key].cpu(), v) for key, v in pw.items() if torch.is_tensor(v))
        # One CPU reference for all token counts (rows are independent): the canonical CPU op,
        # which the CPU prepacked op equals by construction (test_prepacked_gemm_vs_float64).
        xs, bias = torch.randn(sum(ms), k, dtype=dtype), torch.randn(n, dtype=dtype)
        refs = {b: run_canonical(fmt, xs, wts, bias if b else None) for b in (False, True)}
        row = 0
        for m in ms:
            use_bias = m % 2 == 1
            _check_gpu(fmt, xs[row : row + m], refs[use_bias][row : row + m], pw_gpu, bias if use_bias else None, dtype)
            row += m


# heuristics.h kPkConfigs; any config runs any M (rows past its max M run as further row chunks).
PK_CONFIGS = ["pk_m16_n16", "pk_m16_n32", "pk_m16_n64", "pk_m32_n64", "pk_m64_n128"]


@pytest.mark.gpu
@pytest.mark.parametrize("config", PK_CONFIGS)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", 32, False), ("int4", 128, True), ("int4", -1, False)],
                         ids=_fmt_id)
def test_gpu_prepacked_forced_configs(config, splits, fmt, monkeypatch):
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", f"{config}:{splits}")
    dtype = torch.bfloat16 if splits == 1 else torch.float16
    n, k = (24, 4104) if fmt[0] == "int8" or fmt[1] == -1 else (40, 4160 if fmt[1] == 32 else 4224)
    wts, _ = make_weights(fmt, n, k, dtype, torch.float32)
    pw = prepack(fmt, wts)
    pw_gpu = _to_gpu(pw)
    for m in (1, 40, 100) if SANITIZE else (1, 7, 16, 40, 64, 100):
        x, bias = torch.randn(m, k, dtype=dtype), torch.randn(n, dtype=dtype)
        _check_gpu(fmt, x, run_prepacked(fmt, x, pw, bias), pw_gpu, bias, dtype)


@pytest.mark.gpu
def test_gpu_prepacked_leading_dims_strided_and_empty():
    fmt = ("int4", 128, False)
    n, k = 40, 4224
    wts, _ = make_weights(fmt, n, k, torch.bfloat16, torch.float32)
    pw = prepack(fmt, wts)
    pw_gpu = _to_gpu(pw)
    big = torch.randn(2, 3, k + 64, dtype=torch.bfloat16)
    for x in (big[..., 8 : 8 + k],  # leading dims with a row stride, rows 16-byte aligned
              big[..., 4 : 4 + k]):  # rows only 8-byte aligned: the binding copies them
        _check_gpu(fmt, x, run_prepacked(fmt, x, pw), pw_gpu, None, torch.bfloat16)
    out = run_prepacked(fmt, torch.randn(0, k, dtype=torch.bfloat16).cuda(), pw_gpu)
    assert out.shape == (0, n) and out.is_cuda


@pytest.mark.gpu
def test_gpu_prepacked_config_env(monkeypatch):
    fmt = ("int4", 64, True)
    wts, _ = make_weights(fmt, 16, 256, torch.float16, torch.float32)
    pw = _to_gpu(prepack(fmt, wts))
    x = torch.randn(3, 256, dtype=torch.float16, device="cuda")
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", "pk_nope")
    with pytest.raises(RuntimeError, match=r"unknown SQUASH_WOQ_CONFIG 'pk_nope' \(prepacked configs: pk_m16_n16, "):
        run_prepacked(fmt, x, pw)
    # the canonical ops' kernel names do not apply to the prepacked op (and vice versa)
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", "gemv_m4")
    ref = run_prepacked(fmt, x, pw)
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", "dequant")
    assert rel_mean_err(run_prepacked(fmt, x, pw).cpu(), ref.cpu()) <= GEMM_REL_MEAN_ERR[torch.float16]
    monkeypatch.setenv("SQUASH_WOQ_CONFIG", "pk_m16_n16:2")
    assert so.w4a16_gemm(x, wts["qweight"].cuda(), wts["scales"].cuda(), group_size=64).shape == (3, 16)
