"""CPU prepacked weight-only GEMMs (cpu_prepack_int4/int8_weight, w4a16/w8a16_gemm_cpu_prepacked).

- Layout: the packed bytes are rebuilt here from docs/FORMATS.md's formulas ("CPU prepacked
  layout"), independently of the ops' view/permute code, and must match bit for bit; unprepack
  gives the canonical tensors back bit for bit (N padded to 16-column panels included).
- GEMMs: every kernel path the CPU runs (scalar and AVX2, forced with squash_ops.cpu.use_isa) vs
  the float64 dequantize-then-matmul reference of test_gemm.py with its per-element float32 bound,
  over awkward shapes (N = 111 pads a panel, K = 4104 per channel, M = 1..65 crossing the 4-row
  tiles), every int4 group size with and without zero points, int8, fp16 and bf16, with and
  without bias, 3-D and row-strided x, and 0 rows.
- Bad input: ValueErrors naming the argument and the expected shape/dtype. opcheck on every op.
"""

import pytest
import torch
from helpers import raises_value_error as _raises
from test_gemm import FORMATS, HALF, _fmt_id, assert_close_to_ref, make_weights, ref_linear, ref_unpack

import squash_ops as so

ops = torch.ops.squash
pytestmark = pytest.mark.usefixtures("one_thread")

# Every path this CPU can run (use_isa refuses the others). avx512: W4A16 with bf16 activations on
# AVX-512 BF16 where the CPU has it, the rest on the AVX2 kernel.
ISAS = so.cpu.runnable_isas()
MS = [1, 2, 3, 4, 5, 16, 17, 64, 65]


def _k_for(fmt):
    # K = 4104 (= 8 * 513) where the group allows it (int8, per channel); 384 = 3 groups of 128.
    return 4104 if fmt[0] == "int8" or fmt[1] == -1 else 384


def _prepack(fmt, wts):
    if fmt[0] == "int8":
        return so.cpu_prepack_int8_weight(wts["qweight"], wts["scales"])
    return so.cpu_prepack_int4_weight(wts["qweight"], wts["scales"], wts["zeros"], wts["group_size"])


def _gemm(fmt, x, packed, n, bias=None):
    if fmt[0] == "int8":
        return so.w8a16_gemm_cpu_prepacked(x, *packed, n=n, bias=bias)
    return so.w4a16_gemm_cpu_prepacked(x, *packed, n=n, group_size=fmt[1], bias=bias)


# ---------------------------------------------------------------- layout reference (written here)
def ref_cpu_prepack_int4(qweight, n, k):
    """packed[p, k, j] = code[16p + j, k] | code[16p + 8 + j, k] << 4 (padded columns: code 0)."""
    codes = torch.zeros(-(-n // 16) * 16, k, dtype=torch.int64)
    codes[:n] = ref_unpack(qweight)
    packed = torch.empty(codes.shape[0] // 16, k, 8, dtype=torch.int64)
    for p in range(packed.shape[0]):
        for j in range(8):
            packed[p, :, j] = codes[16 * p + j] | (codes[16 * p + 8 + j] << 4)
    return packed.to(torch.uint8)


def ref_panel_groups(t, n):
    """[N, G] -> [P, G, 16]: element [p, g, c] = t[16p + c, g], padded channels 0."""
    padded = torch.zeros(-(-n // 16) * 16, t.shape[1], dtype=t.dtype)
    padded[:n] = t
    return padded.reshape(-1, 16, t.shape[1]).transpose(1, 2)


def _layout_cases():
    for fmt in FORMATS:
        for n, k in [(111, 64), (16, 4104), (5, 2)]:
            if fmt[0] == "int8" or fmt[1] == -1 or k % fmt[1] == 0:
                yield pytest.param(fmt, n, k, id=f"{_fmt_id(fmt)}-n{n}-k{k}")


@pytest.mark.parametrize("fmt,n,k", list(_layout_cases()))
def test_layout_and_exact_round_trip(fmt, n, k):
    wts, _ = make_weights(fmt, n, k, torch.float16, torch.float16)
    packed = _prepack(fmt, wts)
    if fmt[0] == "int8":
        q, s = wts["qweight"], wts["scales"]
        # packed[p, k, c] = q[16p + c, k]; scales [P, 16]; padded channels 0.
        assert torch.equal(packed[0], ref_panel_groups(q, n))
        assert torch.equal(packed[1], ref_panel_groups(s.float()[:, None], n).reshape(-1, 16))
        q2, s2 = so.cpu_unprepack_int8_weight(*packed, n=n)
        assert torch.equal(q2, q) and torch.equal(s2, s.float())
        return
    q, s, z = wts["qweight"], wts["scales"], wts["zeros"]
    assert torch.equal(packed[0], ref_cpu_prepack_int4(q, n, k))
    assert torch.equal(packed[1], ref_panel_groups(s.float(), n))
    assert (packed[2] is None) == (z is None)
    if z is not None:
        assert torch.equal(packed[2], ref_panel_groups(z, n))
    q2, s2, z2 = so.cpu_unprepack_int4_weight(*packed, n=n, k=k, group_size=fmt[1])
    assert torch.equal(q2, q) and torch.equal(s2, s.float())
    assert (z2 is None) == (z is None) and (z is None or torch.equal(z2, z))


# ---------------------------------------------------------------- GEMMs vs float64
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("fmt", FORMATS, ids=_fmt_id)
def test_gemm_vs_float64(fmt, dtype, isa):
    n, k = 111, _k_for(fmt)
    wts, w64 = make_weights(fmt, n, k, dtype, torch.float32)
    packed = _prepack(fmt, wts)
    bias = torch.randn(n).to(dtype)
    with so.cpu.use_isa(isa):
        for i, m in enumerate(MS):
            x = torch.randn(m, k).to(dtype)
            b = bias if i % 2 else None
            ref, err32 = ref_linear(x, w64, b)
            assert_close_to_ref(_gemm(fmt, x, packed, n, b), ref, err32, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("k", [4102, 4100, 4104])
def test_int4_per_channel_any_k(k, sym, isa):
    """The AVX-512 BF16 kernel decodes int4 k four at a time, 16 k per step for one row, 8 for two,
    4 for more: K = 4104 ends in single quads, 4100 in one after 256 steps, and K = 4102 (not a
    multiple of 4) goes back to the k-pair tile. M = 9 is a tile of 8 rows and one of 1."""
    fmt, n, dtype = ("int4", -1, sym), 37, torch.bfloat16
    wts, w64 = make_weights(fmt, n, k, dtype, torch.float32)
    packed = _prepack(fmt, wts)
    with so.cpu.use_isa(isa):
        for m in (1, 2, 3, 9):
            x = torch.randn(m, k).to(dtype)
            ref, err32 = ref_linear(x, w64, None)
            assert_close_to_ref(_gemm(fmt, x, packed, n), ref, err32, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", 128, False)], ids=_fmt_id)
def test_gemm_leading_dims_strided_rows_and_empty(fmt, isa):
    n, k, dtype = 40, 256, torch.bfloat16
    wts, w64 = make_weights(fmt, n, k, dtype, torch.bfloat16)
    packed = _prepack(fmt, wts)
    with so.cpu.use_isa(isa):
        x = torch.randn(2, 3, 2 * k).to(dtype)[..., :k]  # rows strided by 2K
        ref, err32 = ref_linear(x, w64, None)
        assert_close_to_ref(_gemm(fmt, x, packed, n), ref, err32, dtype)
        assert _gemm(fmt, x[:, :0], packed, n).shape == (2, 0, n)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", [FORMATS[0], ("int4", -1, False)], ids=_fmt_id)
def test_gemm_several_panel_blocks_and_row_tiles(fmt, isa):
    """N = 300 at K = 4104: the AVX2 kernel walks 19 panels in blocks of <= 256 KiB of weights
    (int8: 4 panels, int4: 8) and M = 9 in row tiles of 4, 4, 1 inside each block."""
    n, k, dtype = 300, 4104, torch.float16
    wts, w64 = make_weights(fmt, n, k, dtype, torch.float32)
    packed = _prepack(fmt, wts)
    x = torch.randn(9, k).to(dtype)
    ref, err32 = ref_linear(x, w64, None)
    with so.cpu.use_isa(isa):
        assert_close_to_ref(_gemm(fmt, x, packed, n), ref, err32, dtype)


@pytest.mark.parametrize("fmt", FORMATS, ids=_fmt_id)
def test_paths_agree_with_canonical_op(fmt):
    """Scalar path, AVX2 path and the canonical CPU op all within the float32 bound of each other's
    reference (same weights, same x): a layout bug in one path cannot hide behind the others."""
    n, k, dtype = 48, _k_for(fmt), torch.float16
    wts, w64 = make_weights(fmt, n, k, dtype, torch.float16)
    packed = _prepack(fmt, wts)
    x = torch.randn(3, k).to(dtype)
    ref, err32 = ref_linear(x, w64, None)
    if fmt[0] == "int8":
        canon = so.w8a16_gemm(x, wts["qweight"], wts["scales"])
    else:
        canon = so.w4a16_gemm(x, wts["qweight"], wts["scales"], wts["zeros"], fmt[1])
    assert_close_to_ref(canon, ref, err32, dtype)
    for isa in ISAS:
        with so.cpu.use_isa(isa):
            out = _gemm(fmt, x, packed, n)
        assert_close_to_ref(out, ref, err32, dtype)
        assert (out.double() - canon.double()).abs().max() <= 2 * (err32 + 2.0**-11 * ref.abs()).max()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", FORMATS, ids=_fmt_id)
def test_prefill_rows(fmt, isa):
    """Above 128 rows the op dequantizes once and runs ATen's float32 GEMM: the canonical op's
    exact arithmetic (bit-identical to it), and within the float32 bound of float64 at 129 rows
    (just past the switch) and 200. The exception: bf16 activations on the avx512 path of a CPU
    with AVX-512 BF16 keep their kernel at any M (faster than float32 there), so they are held to
    the float32 bound only."""
    n, k, dtype = 40, _k_for(fmt), torch.bfloat16
    wts, w64 = make_weights(fmt, n, k, dtype, torch.float32)
    packed = _prepack(fmt, wts)
    bias = torch.randn(n).to(dtype)
    for m in (129, 200):
        x = torch.randn(m, k).to(dtype)
        with so.cpu.use_isa(isa):
            out = _gemm(fmt, x, packed, n, bias)
        if fmt[0] == "int8":
            canon = so.w8a16_gemm(x, wts["qweight"], wts["scales"], bias=bias)
        else:
            canon = so.w4a16_gemm(x, wts["qweight"], wts["scales"], wts["zeros"], fmt[1], bias=bias)
        if isa != "avx512":
            assert torch.equal(out, canon)
        ref, err32 = ref_linear(x, w64, bias)
        assert_close_to_ref(out, ref, err32, dtype)


# ---------------------------------------------------------------- opcheck and bad input
def _opcheck_cases():
    n, k = 24, 128
    wts4, _ = make_weights(("int4", 64, False), n, k, torch.bfloat16, torch.float32)
    wts8, _ = make_weights(FORMATS[0], n, k, torch.bfloat16, torch.float32)
    p4 = ops.cpu_prepack_int4_weight(wts4["qweight"], wts4["scales"], wts4["zeros"], 64)
    p8 = ops.cpu_prepack_int8_weight(wts8["qweight"], wts8["scales"])
    x = torch.randn(3, k, dtype=torch.bfloat16)
    bias = torch.randn(n, dtype=torch.bfloat16)
    return [
        (ops.cpu_prepack_int4_weight, (wts4["qweight"], wts4["scales"], wts4["zeros"], 64)),
        (ops.cpu_prepack_int4_weight, (wts4["qweight"], wts4["scales"], None, 64)),
        (ops.cpu_unprepack_int4_weight, (*p4, n, k, 64)),
        (ops.cpu_prepack_int8_weight, (wts8["qweight"], wts8["scales"])),
        (ops.cpu_unprepack_int8_weight, (*p8, n)),
        (ops.w4a16_gemm_cpu_prepacked, (x, *p4, n, 64, bias)),
        (ops.w4a16_gemm_cpu_prepacked, (x, p4[0], p4[1], None, n, 64, None)),
        (ops.w8a16_gemm_cpu_prepacked, (x, *p8, n, bias)),
    ]


def test_opcheck():
    for op, args in _opcheck_cases():
        torch.library.opcheck(op, args)


def test_bad_input_names_argument_and_expectation():
    n, k = 24, 128
    wts4, _ = make_weights(("int4", 64, False), n, k, torch.bfloat16, torch.float32)
    wts8, _ = make_weights(FORMATS[0], n, k, torch.bfloat16, torch.float32)
    p4 = so.cpu_prepack_int4_weight(wts4["qweight"], wts4["scales"], wts4["zeros"], 64)
    p8 = so.cpu_prepack_int8_weight(wts8["qweight"], wts8["scales"])
    x = torch.randn(2, k, dtype=torch.bfloat16)
    _raises(r"w4a16_gemm_cpu_prepacked: x must be .*float16 or .*bfloat16", so.w4a16_gemm_cpu_prepacked,
            x.float(), *p4, n=n, group_size=64)
    _raises(r"w4a16_gemm_cpu_prepacked: packed must be \[ceil\(n/16\), K, 8\].*\[2, 128, 8\]",
            so.w4a16_gemm_cpu_prepacked, x, *p4, n=40, group_size=64)
    _raises(r"w4a16_gemm_cpu_prepacked: packed must be .*\[2, 64, 8\]", so.w4a16_gemm_cpu_prepacked,
            x[:, :64], *p4, n=n, group_size=64)
    _raises(r"w4a16_gemm_cpu_prepacked: scales must be \[ceil\(n/16\), K/group_size, 16\]",
            so.w4a16_gemm_cpu_prepacked, x, *p4, n=n, group_size=128)
    _raises(r"w4a16_gemm_cpu_prepacked: group_size must be", so.w4a16_gemm_cpu_prepacked, x, *p4, n=n,
            group_size=48)
    _raises(r"w4a16_gemm_cpu_prepacked: bias must be \[n\] = \[24\]", so.w4a16_gemm_cpu_prepacked, x, *p4,
            n=n, group_size=64, bias=torch.zeros(23, dtype=torch.bfloat16))
    _raises(r"w4a16_gemm_cpu_prepacked: n must be > 0", so.w4a16_gemm_cpu_prepacked, x, *p4, n=0, group_size=64)
    _raises(r"w4a16_gemm_cpu_prepacked: scales must be contiguous", so.w4a16_gemm_cpu_prepacked, x, p4[0],
            p4[1].transpose(0, 1), p4[2], n=n, group_size=64)
    _raises(r"w8a16_gemm_cpu_prepacked: packed must be .*int8", so.w8a16_gemm_cpu_prepacked, x,
            p8[0].view(torch.uint8), p8[1], n=n)
    _raises(r"w8a16_gemm_cpu_prepacked: scales must be \[ceil\(n/16\), 16\]", so.w8a16_gemm_cpu_prepacked,
            x, p8[0], p8[1].reshape(-1), n=n)
    _raises(r"cpu_prepack_int4_weight: scales must be \[N, K/group_size\]", so.cpu_prepack_int4_weight,
            wts4["qweight"], wts4["scales"][:, :1], wts4["zeros"], 64)
    _raises(r"cpu_prepack_int8_weight: qweight must be .*int8", so.cpu_prepack_int8_weight,
            wts8["qweight"].float(), wts8["scales"])
    _raises(r"cpu_unprepack_int4_weight: packed must be", so.cpu_unprepack_int4_weight, *p4, n=n, k=256,
            group_size=64)
    _raises(r"cpu_unprepack_int8_weight: scales must be", so.cpu_unprepack_int8_weight, p8[0], p8[1][:1], n=n)
