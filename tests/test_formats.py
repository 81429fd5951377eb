"""Weight formats (docs/FORMATS.md): quantize/dequantize int8 and int4, pack/unpack int4.

References are written here, not taken from the ops: the quantization codes are recomputed with
the documented formula in float32 torch arithmetic (IEEE division and multiplication, rounding by
torch.round = half-to-even), so they must match the op bit for bit; dequantized values are
checked against float64 (q - z) * s and against the s/2 error bound.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import squash_ops as so
from helpers import raises_value_error as _raises

ops = torch.ops.squash
HYPO = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FLOATS = [torch.float32, torch.float16, torch.bfloat16]


# ---------------------------------------------------------------- references (written here)
def ref_unpack(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K/2] -> int64 [..., K]: element 2j is the low nibble of byte j."""
    p = packed.long()
    return torch.stack([p & 15, p >> 4], dim=-1).flatten(-2)


def div32(a: torch.Tensor, b) -> torch.Tensor:
    # torch's `scalar / tensor` is reciprocal-then-multiply: spell out an IEEE float32 division.
    a = a if torch.is_tensor(a) else torch.tensor(float(a))
    b = b if torch.is_tensor(b) else torch.tensor(float(b))
    a, b = torch.broadcast_tensors(a.float(), b.float())
    return torch.div(a.contiguous(), b.contiguous())


def ref_quantize_int8(w: torch.Tensor):
    w = w.float()
    amax = w.abs().amax(dim=1)
    inv = torch.where(amax > 0, div32(127.0, amax), torch.zeros_like(amax))
    q = torch.round(w * inv[:, None]).clamp(-127, 127).to(torch.int8)
    return q, div32(amax, 127.0)


def ref_quantize_int4(w: torch.Tensor, g: int, symmetric: bool):
    """Returns (codes int64 [N, K] in 0..15, scales f32 [N, K/g], zeros int64 [N, K/g])."""
    n, k = w.shape
    wg = w.float().reshape(n, k // g, g)
    if symmetric:
        s = div32(wg.abs().amax(-1), 7.0)
        z = torch.full_like(s, 8, dtype=torch.int64)
        q = torch.round(div32(wg, s[..., None])).clamp(-8, 7).long() + 8
        q = torch.where(s[..., None] > 0, q, 8)
    else:
        gmin, gmax = wg.amin(-1), wg.amax(-1)
        lo, hi = gmin.clamp(max=0), gmax.clamp(min=0)  # the range always includes 0
        s = ((hi.double() - lo.double()) / 15).float()
        s = torch.where(s == 0, torch.maximum(-lo, hi), s)  # subnormal ranges (not hit here)
        const = gmin == gmax  # exact-constant guard: s = |c| (1 for c == 0)
        s = torch.where(const, torch.where(gmin != 0, gmin.abs(), torch.ones_like(s)), s)
        z = torch.round(div32(-lo, s)).clamp(0, 15).long()
        q = (torch.round(div32(wg, s[..., None])).long() + z[..., None]).clamp(0, 15)
    return q.reshape(n, k), s, z


def ref_dequantize_int4(codes, s, z, g):
    n, k = codes.shape
    w = (codes.double().reshape(n, k // g, g) - z.double()[..., None]) * s.double()[..., None]
    return w.reshape(n, k)


def make_weight(n, k, dtype, kind="normal", scale=1.0, gen=None):
    w = torch.randn(n, k, generator=gen) * scale
    if kind == "positive":  # every group on one side of 0 (the raw-min/max formula fails here)
        w = w.abs() + 0.5 * scale
    elif kind == "negative":
        w = -w.abs() - 0.5 * scale
    elif kind == "constant_groups":  # some groups constant (incl. zero), others random
        w[0, :] = 3.0 * scale
        if n > 1:
            w[1, :] = -2.5 * scale
        if n > 2:
            w[2, :] = 0.0
    return w.to(dtype)


# ---------------------------------------------------------------- int8
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 111), (64, 384), (11, 4104)])
def test_quantize_int8_weight_matches_formula(dtype, shape):
    w = make_weight(*shape, dtype)
    w[0, 0] = 0  # zeros in the weight are fine, just not everywhere
    q, s = so.quantize_int8_weight(w)
    rq, rs = ref_quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == shape and s.dtype == torch.float32 and s.shape == shape[:1]
    assert torch.equal(q, rq) and torch.equal(s, rs)
    assert q.min() >= -127 and q.max() <= 127
    # dequantize vs float64 q * s: one rounding of an exact product, so equal to it in float32
    d = so.dequantize_int8_weight(q, s)
    assert d.dtype == torch.float32 and torch.equal(d, (q.double() * s.double()[:, None]).float())


def test_quantize_int8_zero_row():
    w = torch.randn(3, 40)
    w[1] = 0
    q, s = so.quantize_int8_weight(w)
    assert s[1] == 0 and torch.all(q[1] == 0)
    assert torch.all(so.dequantize_int8_weight(q, s)[1] == 0)


@HYPO
@given(n=st.integers(1, 9), k=st.integers(1, 300), dtype=st.sampled_from(FLOATS),
       exp=st.integers(-3, 3), seed=st.integers(0, 2**31 - 1))
def test_int8_round_trip_error_bound(n, k, dtype, exp, seed):
    gen = torch.Generator().manual_seed(seed)
    w = make_weight(n, k, dtype, scale=10.0**exp, gen=gen)
    q, s = so.quantize_int8_weight(w)
    err = (so.dequantize_int8_weight(q, s).double() - w.double()).abs()
    # |w - q*s| <= s/2 from rounding, plus float32 slop: 1/127 and s carry 1 ulp each, w*inv and
    # q*s one rounding each, |q| <= 127 -> about 4 * 127 * 2^-24 < 2^-14 (in units of s).
    assert torch.all(err <= s.double()[:, None] * (0.5 + 2.0**-14))
    assert torch.equal(q, ref_quantize_int8(w)[0])


# ---------------------------------------------------------------- int4
def _groups(k):
    return [g for g in (32, 64, 128, -1) if g == -1 or k % g == 0]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,group_size", [((5, 128), 32), ((5, 192), 64), ((3, 384), 128),
                                              ((7, 4104), -1), ((2, 96), 96), ((4, 4160), 64)])
def test_quantize_int4_weight_matches_formula(symmetric, dtype, shape, group_size):
    w = make_weight(*shape, dtype, kind="constant_groups")
    qweight, scales, zeros = so.quantize_int4_weight(w, group_size=group_size, symmetric=symmetric)
    n, k = shape
    g = k if group_size == -1 else group_size
    rq, rs, rz = ref_quantize_int4(w, g, symmetric)
    assert qweight.dtype == torch.uint8 and qweight.shape == (n, k // 2)
    assert scales.dtype == torch.float32 and scales.shape == (n, k // g)
    codes = ref_unpack(qweight)
    assert torch.equal(codes, rq) and torch.equal(scales, rs)
    if symmetric:
        assert zeros is None
        assert codes.min() >= 1 and codes.max() <= 15  # clamp(.., -8, 7) + 8 with |w/s| <= 7
    else:
        assert zeros.dtype == torch.uint8 and zeros.shape == (n, k // g)
        assert torch.equal(zeros.long(), rz) and zeros.max() <= 15
    # dequantize vs float64 (q - z) * s: an exact product rounded once, equal in float32
    d = so.dequantize_int4_weight(qweight, scales, zeros, group_size=group_size)
    assert d.dtype == torch.float32 and torch.equal(d, ref_dequantize_int4(codes, scales, rz, g).float())


@pytest.mark.parametrize("dtype", FLOATS)
def test_int4_asymmetric_constant_groups_are_exact(dtype):
    # The guard: a constant group c gets s = |c| (1 for c = 0), z = (c < 0), q = z + sign(c).
    w = torch.tensor([[1.5] * 32 + [-0.75] * 32 + [0.0] * 32 + [3e-3] * 32]).to(dtype)
    qweight, scales, zeros = so.quantize_int4_weight(w, group_size=32, symmetric=False)
    assert torch.equal(so.dequantize_int4_weight(qweight, scales, zeros, group_size=32), w.float())
    assert scales.tolist() == [[1.5, 0.75, 1.0, w[0, -1].float().item()]]
    assert zeros.tolist() == [[0, 1, 0, 0]]
    # symmetric: an all-zero group has s = 0 and q = 8
    qweight, scales, _ = so.quantize_int4_weight(w, group_size=32, symmetric=True)
    assert scales[0, 2] == 0 and torch.all(ref_unpack(qweight)[0, 64:96] == 8)


@HYPO
@given(n=st.integers(1, 6), groups=st.integers(1, 4), group_size=st.sampled_from([32, 64, 128, -1]),
       symmetric=st.booleans(), dtype=st.sampled_from(FLOATS), exp=st.integers(-3, 3),
       kind=st.sampled_from(["normal", "positive", "negative", "constant_groups"]),
       k_channel=st.integers(1, 150), seed=st.integers(0, 2**31 - 1))
def test_int4_round_trip_error_bound(n, groups, group_size, symmetric, dtype, exp, kind, k_channel, seed):
    k = 2 * k_channel if group_size == -1 else groups * group_size
    gen = torch.Generator().manual_seed(seed)
    w = make_weight(n, k, dtype, kind=kind, scale=10.0**exp, gen=gen)
    qweight, scales, zeros = so.quantize_int4_weight(w, group_size=group_size, symmetric=symmetric)
    d = so.dequantize_int4_weight(qweight, scales, zeros, group_size=group_size)
    g = k if group_size == -1 else group_size
    s = scales.double().repeat_interleave(g, dim=1)
    # |w - (q-z)*s| <= s/2 from rounding, plus float32 slop (s, w/s and (q-z)*s one rounding each,
    # |q - z| <= 15) < 2^-17 * s. Holds for one-sided groups too (the range includes 0).
    assert torch.all((d.double() - w.double()).abs() <= s * (0.5 + 2.0**-17))
    codes = ref_unpack(qweight)
    assert codes.min() >= 0 and codes.max() <= 15
    assert torch.equal(codes, ref_quantize_int4(w, g, symmetric)[0])


# ---------------------------------------------------------------- pack / unpack
def test_pack_nibble_order():
    v = torch.tensor([[1, 2, 15, 0, 7, 9]], dtype=torch.uint8)
    assert so.pack_int4(v).tolist() == [[0x21, 0x0F, 0x97]]
    assert torch.equal(so.unpack_int4(so.pack_int4(v)), v)


@HYPO
@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), half=st.integers(1, 70),
       seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(lead, half, seed):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randint(0, 16, (*lead, 2 * half), dtype=torch.uint8, generator=gen)
    p = so.pack_int4(v)
    assert p.shape == (*lead, half) and p.dtype == torch.uint8
    assert torch.equal(p.long(), v[..., 0::2].long() | (v[..., 1::2].long() << 4))
    assert torch.equal(so.unpack_int4(p), v)
    # and the other way round: every byte survives unpack -> pack
    b = torch.randint(0, 256, (*lead, half), dtype=torch.uint8, generator=gen)
    assert torch.equal(so.pack_int4(so.unpack_int4(b)), b)


def test_pack_unpack_non_contiguous():
    v = torch.randint(0, 16, (6, 10), dtype=torch.uint8)
    vt = v.t()  # [10, 6], strided
    assert torch.equal(so.unpack_int4(so.pack_int4(vt)), vt)
    p = torch.randint(0, 256, (8, 6), dtype=torch.uint8)[:, ::2]
    assert torch.equal(so.unpack_int4(p), ref_unpack(p).to(torch.uint8))


def test_quantize_non_contiguous_weight():
    w = torch.randn(64, 40).t()  # [40, 64], strided
    assert torch.equal(so.quantize_int8_weight(w)[0], so.quantize_int8_weight(w.contiguous())[0])
    a = so.quantize_int4_weight(w, group_size=32, symmetric=False)
    b = so.quantize_int4_weight(w.contiguous(), group_size=32, symmetric=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- opcheck
def test_opcheck_formats():
    w = torch.randn(6, 64, dtype=torch.bfloat16)
    q8, s8 = ops.quantize_int8_weight(w)
    q4, s4, z4 = ops.quantize_int4_weight(w, 32, False)
    cases = [
        (ops.quantize_int8_weight, (w,)),
        (ops.dequantize_int8_weight, (q8, s8)),
        (ops.quantize_int4_weight, (w.float(), 32, False)),
        (ops.quantize_int4_weight, (w, -1, True)),
        (ops.dequantize_int4_weight, (q4, s4, z4, 32)),
        (ops.dequantize_int4_weight, (q4, s4, None, 32)),
        (ops.pack_int4, (torch.randint(0, 16, (2, 3, 8), dtype=torch.uint8),)),
        (ops.unpack_int4, (torch.randint(0, 256, (5, 4), dtype=torch.uint8),)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_int8():
    _raises(r"quantize_int8_weight: weight must be float32 or float16 or bfloat16, got int32",
            so.quantize_int8_weight, torch.ones(4, 4, dtype=torch.int32))
    _raises(r"weight must be 2-D \[N, K\]", so.quantize_int8_weight, torch.randn(8))
    _raises(r"weight must not be empty, got shape \[0, 8\]", so.quantize_int8_weight, torch.randn(0, 8))
    q, s = so.quantize_int8_weight(torch.randn(4, 8))
    _raises(r"dequantize_int8_weight: qweight must be int8, got uint8",
            so.dequantize_int8_weight, q.to(torch.uint8), s)
    _raises(r"scales must be \[N\] = \[4\] float32, got shape \[5\]", so.dequantize_int8_weight, q, torch.ones(5))
    _raises(r"scales must be float32 or float16 or bfloat16, got float64",
            so.dequantize_int8_weight, q, s.double())


def test_bad_inputs_int4():
    w = torch.randn(4, 96)
    _raises(r"quantize_int4_weight: K must be even for int4 .* got K=95",
            so.quantize_int4_weight, torch.randn(4, 95), group_size=-1)
    _raises(r"group_size must be 32, 64, 128, -1 \(per-channel\) or K=96, got 48",
            so.quantize_int4_weight, w, group_size=48)
    _raises(r"group_size 64 must divide K=96 \(K % group_size = 32\)", so.quantize_int4_weight, w, group_size=64)
    _raises(r"group_size must be .* got 0", so.quantize_int4_weight, w, group_size=0)
    _raises(r"weight must not be empty", so.quantize_int4_weight, torch.randn(0, 64), group_size=32)
    q, s, z = so.quantize_int4_weight(w, group_size=32, symmetric=False)
    _raises(r"dequantize_int4_weight: scales must be \[N, K/group_size\] = \[4, 3\] float32, got shape \[4, 2\]",
            so.dequantize_int4_weight, q, s[:, :2], z, group_size=32)
    _raises(r"zeros must be \[N, K/group_size\] = \[4, 3\] uint8, got shape \[3, 3\]",
            so.dequantize_int4_weight, q, s, z[:3], group_size=32)
    _raises(r"zeros must be uint8, got int8", so.dequantize_int4_weight, q, s, z.to(torch.int8), group_size=32)
    _raises(r"qweight must be uint8, got int8", so.dequantize_int4_weight, q.to(torch.int8), s, z, group_size=32)
    # the default group_size=128 does not divide K=96: caught, never silently misread
    _raises(r"group_size 128 must divide K=96", so.dequantize_int4_weight, q, s, z)
    _raises(r"qweight must be a non-empty 2-D \[N, K/2\] uint8", so.dequantize_int4_weight,
            torch.empty(0, 48, dtype=torch.uint8), s, z, group_size=32)


def test_bad_inputs_pack():
    _raises(r"pack_int4: values must be in 0..15 \(4-bit\), got a value of 16",
            so.pack_int4, torch.tensor([[3, 16]], dtype=torch.uint8))
    _raises(r"pack_int4: values must be \[..., K\] with K even and > 0, got shape \[2, 3\]",
            so.pack_int4, torch.zeros(2, 3, dtype=torch.uint8))
    _raises(r"got shape \[2, 0\]", so.pack_int4, torch.zeros(2, 0, dtype=torch.uint8))
    _raises(r"pack_int4: values must be uint8, got int8", so.pack_int4, torch.zeros(2, 4, dtype=torch.int8))
    _raises(r"unpack_int4: packed must be uint8, got int32", so.unpack_int4, torch.zeros(2, 4, dtype=torch.int32))
    _raises(r"unpack_int4: packed must be \[..., K/2\] with K/2 > 0, got shape \[\]",
            so.unpack_int4, torch.tensor(3, dtype=torch.uint8))
    # empty leading dims are fine
    assert so.pack_int4(torch.zeros(0, 4, dtype=torch.uint8)).shape == (0, 2)
    assert so.unpack_int4(torch.zeros(3, 0, 2, dtype=torch.uint8)).shape == (3, 0, 4)
