"""Tests of squash::attention, attention_varlen and attention_decode.

Correctness follows FlashAttention's rule (TARGETS.md): max |out - ref| <= 2 * max |out_pt - ref|
+ floor, where ref is the attention below computed in float64 (float32 on the GPU) from the SAME
low-precision inputs, and out_pt is the same torch math done in the inputs' dtype. The CPU op is
also compared bitwise across ops (varlen and decode run the same per-sequence routine as
attention) and across memory layouts (strides must not change a single bit). The CPU tests marked
with ``each_cpu_isa`` run once per ISA path: the scalar reference and the vectorized AVX2 block
(head dims that are multiples of 8; others stay on the reference).
"""

import math
import os

import pytest
import torch
from torch import nn

import squash_ops  # noqa: F401  (registers torch.ops.squash)
from squash_ops import attention, attention_decode, attention_varlen

LOW = [torch.float16, torch.bfloat16]
NEG_INF = float("-inf")

# Absolute floor of the FA rule, in fp32 ulps of the output magnitude. The op accumulates in
# fp32 (D-term dots, Sk-term sums, exp), which costs tens of fp32 ulps (eps 1.2e-7). This floor
# is ~128x below one fp16 ulp (9.8e-4) and ~1000x below one bf16 ulp (7.8e-3), so for fp16/bf16
# inputs it does not loosen the 2x rule; it matters only where the comparison path is itself
# (near-)exact: fp32 inputs (torch's fp32 math vs ours) and degenerate rows (Sk=1: out == v).
FLOOR_FP32_ULPS = 64
# lse is computed in fp32 from the same inputs as the reference: its error is a few fp32 ulps of
# the scores (~1e-6); 1e-4 relative (atol 1e-5 for lse near 0) leaves room and still catches a
# wrong scale, log base or mask (those move lse by >= 1e-2).
LSE_RTOL, LSE_ATOL = 1e-4, 1e-5


# ---------------------------------------------------------------------------------------------
# Reference: explicit scores, bottom-right causal mask, softmax, GQA via repeat_interleave.
# ---------------------------------------------------------------------------------------------


def attn_ref(q, k, v, scale=None, causal=False, dtype=torch.float64):
    """Attention of q [B,Sq,Hq,D] over k, v [B,Sk,Hkv,D], done in `dtype`.

    Returns (out [B,Sq,Hq,D] in `dtype`, lse [B,Hq,Sq] in `dtype`). Rows that see no key give
    out 0 and lse -inf.
    """
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    k = k.repeat_interleave(Hq // Hkv, dim=2)
    v = v.repeat_interleave(Hq // Hkv, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if causal:
        i = torch.arange(Sq, device=q.device)[:, None]
        j = torch.arange(Sk, device=q.device)[None, :]
        scores = scores.masked_fill(j > i + Sk - Sq, NEG_INF)
    lse = torch.logsumexp(scores, dim=-1)
    sees_key = torch.isfinite(lse)[..., None]
    p = torch.where(sees_key, torch.softmax(scores, dim=-1), torch.zeros((), dtype=dtype, device=q.device))
    out = torch.einsum("bhqk,bkhd->bqhd", p, v)
    return out, lse


def assert_fa_rule(out, q, k, v, scale=None, causal=False, lse=None, ref_dtype=torch.float64):
    """FlashAttention's rule against the reference, and lse within LSE_RTOL."""
    assert out.shape == q.shape and out.dtype == q.dtype
    ref, ref_lse = attn_ref(q, k, v, scale, causal, ref_dtype)
    if lse is not None:
        assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
        torch.testing.assert_close(lse.double(), ref_lse.double(), rtol=LSE_RTOL, atol=LSE_ATOL)
    if out.numel() == 0:
        return
    pt, _ = attn_ref(q, k, v, scale, causal, q.dtype)
    err = (out.double() - ref.double()).abs().max().item()
    pt_err = (pt.double() - ref.double()).abs().max().item()
    floor = FLOOR_FP32_ULPS * torch.finfo(torch.float32).eps * max(1.0, ref.abs().max().item())
    assert err <= 2 * pt_err + floor, f"max err {err:.3g} > 2 * torch {q.dtype} err {pt_err:.3g} + {floor:.2g}"


def rand(*shape, dtype=torch.float16, device="cpu"):
    return torch.randn(*shape, device=device).to(dtype)


def qkv(B, Sq, Sk, Hq, Hkv, D, dtype, device="cpu"):
    return (rand(B, Sq, Hq, D, dtype=dtype, device=device),
            rand(B, Sk, Hkv, D, dtype=dtype, device=device),
            rand(B, Sk, Hkv, D, dtype=dtype, device=device))


def masked_rows(Sq, Sk, causal):
    """Number of leading query rows that see no key."""
    if Sk == 0:
        return Sq
    return max(0, Sq - Sk) if causal else 0


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


SHAPES = [(s, d) for s in (1, 97, 257) for d in (59, 64, 128)] + [(1025, 59), (1025, 128)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen,head_dim", SHAPES)
@pytest.mark.parametrize("dtype", LOW)
def test_attention_shapes(dtype, seqlen, head_dim, causal, each_cpu_isa):
    # Fewer heads/batch as seqlen grows to keep CPU time low (the fp16 torch path is slow on
    # CPU); GQA 2:1 everywhere.
    B, Hq, Hkv = (2, 4, 2) if seqlen < 257 else (1, 4, 2) if seqlen < 1025 else (1, 2, 1)
    q, k, v = qkv(B, seqlen, seqlen, Hq, Hkv, head_dim, dtype)
    out, lse = attention(q, k, v, causal=causal, return_lse=True)
    assert lse.shape == (B, Hq, seqlen)
    assert_fa_rule(out, q, k, v, causal=causal, lse=lse)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sq,sk", [(1, 97), (59, 257), (97, 1025), (257, 97), (97, 1), (3, 0), (0, 5)])
@pytest.mark.parametrize("dtype", LOW)
def test_attention_unequal_seqlens(dtype, sq, sk, causal, each_cpu_isa):
    q, k, v = qkv(2, sq, sk, 4, 2, 64, dtype)
    out, lse = attention(q, k, v, causal=causal, return_lse=True)
    assert_fa_rule(out, q, k, v, causal=causal, lse=lse)
    # Bottom-right alignment: with Sq > Sk the first Sq - Sk queries see no key.
    n = masked_rows(sq, sk, causal)
    assert (out[:, :n] == 0).all() and (lse[:, :, :n] == NEG_INF).all()
    assert torch.isfinite(out).all() and torch.isfinite(lse[:, :, n:]).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (8, 2), (16, 2), (8, 1), (6, 1)])
def test_attention_gqa(hq, hkv, causal):
    # Ratios 1, 2, 4, 8 and MQA (hkv 1, also with a non-power-of-two ratio).
    q, k, v = qkv(2, 97, 130, hq, hkv, 64, torch.bfloat16)
    out, lse = attention(q, k, v, causal=causal, return_lse=True)
    assert_fa_rule(out, q, k, v, causal=causal, lse=lse)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_attention_strided_inputs(dtype):
    # q, k, v as views of a packed qkv projection [B, S, Hq + 2*Hkv, D] (strided seq and batch
    # dims), k additionally from a [B, H, S, D] buffer (transposed), and a batch-broadcast v
    # (stride 0). The result must be bit-identical to the contiguous inputs' and pass the rule.
    B, S, Hq, Hkv, D = 3, 97, 4, 2, 59
    packed = rand(B, S, Hq + 2 * Hkv, D, dtype=dtype)
    q, _, _ = packed.split([Hq, Hkv, Hkv], dim=2)
    k = rand(B, Hkv, S, D, dtype=dtype).transpose(1, 2)
    v = rand(1, S, Hkv, D, dtype=dtype).expand(B, S, Hkv, D)
    assert not q.is_contiguous() and not k.is_contiguous() and v.stride(0) == 0
    for causal in (False, True):
        out, lse = attention(q, k, v, causal=causal, return_lse=True)
        out_c, lse_c = attention(q.contiguous(), k.contiguous(), v.contiguous(), causal=causal, return_lse=True)
        assert torch.equal(out, out_c) and torch.equal(lse, lse_c)
        assert out.is_contiguous()
        assert_fa_rule(out, q, k, v, causal=causal, lse=lse)


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_attention_fp32_and_scale(scale, each_cpu_isa):
    q, k, v = qkv(2, 33, 75, 4, 1, 48, torch.float32)
    out, lse = attention(q, k, v, softmax_scale=scale, causal=True, return_lse=True)
    assert_fa_rule(out, q, k, v, scale=scale, causal=True, lse=lse)
    # The default scale is 1/sqrt(D).
    assert torch.equal(attention(q, k, v, softmax_scale=1 / math.sqrt(48)), attention(q, k, v))


def test_attention_large_scores_stable(each_cpu_isa):
    # Scores in the hundreds: a softmax without max-subtraction overflows exp() in fp32.
    q, k, v = qkv(1, 97, 97, 2, 2, 64, torch.float16)
    q = (q.float() * 40).half()
    out, lse = attention(q, k, v, causal=True, return_lse=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all() and lse.abs().max() > 100
    assert_fa_rule(out, q, k, v, causal=True, lse=lse)


@pytest.mark.parametrize("head_dim", [8, 24, 32, 40, 72, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_vector_head_dims(dtype, head_dim, each_cpu_isa):
    # Head dims that the AVX2 block splits into 1-8 vectors per 64-column chunk (72 = 64 + 8,
    # 256 = 4 x 64), query counts around its 4-row tiles and key counts around its 16-key tiles.
    for sq, sk in ((1, 1), (3, 17), (15, 16), (17, 33), (33, 15)):
        q, k, v = qkv(2, sq, sk, 4, 2, head_dim, dtype)
        for causal in (False, True):
            out, lse = attention(q, k, v, causal=causal, return_lse=True)
            assert_fa_rule(out, q, k, v, causal=causal, lse=lse)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_nan_shows_where_it_reaches(causal, each_cpu_isa):
    # A NaN in query row 5 reaches that row only; a NaN in key row 9 reaches every row that sees
    # key 9 (causal: rows >= 9) and no other. Finite rows match the reference.
    q, k, v = qkv(1, 20, 20, 2, 2, 32, torch.float32)
    q[0, 5, 1, 3] = float("nan")
    k[0, 9, 0, 7] = float("nan")
    out, lse = attention(q, k, v, causal=causal, return_lse=True)
    bad = torch.isnan(out).any(-1)[0]  # [Sq, Hq]
    expect = torch.zeros(20, 2, dtype=torch.bool)
    expect[5, 1] = True
    expect[9 if causal else 0:, 0] = True
    assert torch.equal(bad, expect) and torch.equal(torch.isnan(lse[0]).T, expect)
    ok = ~expect
    ref, _ = attn_ref(q, k, v, causal=causal)
    torch.testing.assert_close(out[0][ok].double(), ref[0][ok], rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 5, 2, 8, 7), (2, 0, 2, 8, 7), (2, 5, 2, 8, 0)])
def test_attention_empty_dims(shape, each_cpu_isa):
    B, Sq, Hq, D, Sk = shape
    q, k, v = qkv(B, Sq, Sk, Hq, 1, D, torch.float16)
    for causal in (False, True):
        out, lse = attention(q, k, v, causal=causal, return_lse=True)
        assert out.shape == (B, Sq, Hq, D) and lse.shape == (B, Hq, Sq)
        if Sk == 0:  # every row sees no key
            assert out.numel() > 0 and (out == 0).all() and (lse == NEG_INF).all()
        else:
            assert out.numel() == 0 and lse.numel() == 0


# ---------------------------------------------------------------------------------------------
# attention_varlen
# ---------------------------------------------------------------------------------------------


def cu(lens, start=0):
    return torch.tensor([start] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hkv,d", [(4, 4, 64), (6, 2, 59)])
@pytest.mark.parametrize("dtype", LOW)
def test_varlen_vs_per_sequence(dtype, hq, hkv, d, causal, each_cpu_isa):
    # Empty and length-1 sequences, Sq > Sk and Sq < Sk within one batch, a sequence with keys
    # but no queries and one with queries but no keys; 2 padding rows before the first sequence
    # and 3 after the last: rows outside every sequence come back 0 / -inf.
    lens_q = [0, 1, 97, 5, 0, 33, 1, 4]
    lens_k = [4, 1, 60, 0, 7, 33, 1, 130]
    pad_front, pad_back = 2, 3
    Tq, Tk = pad_front + sum(lens_q) + pad_back, sum(lens_k)
    # q as a strided view (a slice of a wider buffer).
    q = rand(Tq, hq + 3, d, dtype=dtype)[:, 1 : hq + 1]
    k, v = rand(Tk, hkv, d, dtype=dtype), rand(Tk, hkv, d, dtype=dtype)
    cq, ck = cu(lens_q, pad_front), cu(lens_k)
    out, lse = attention_varlen(q, k, v, cq, ck, max(lens_q), max(lens_k), causal=causal, return_lse=True)
    assert out.shape == (Tq, hq, d) and lse.shape == (hq, Tq)
    assert (out[:pad_front] == 0).all() and (out[Tq - pad_back :] == 0).all()
    assert (lse[:, :pad_front] == NEG_INF).all() and (lse[:, Tq - pad_back :] == NEG_INF).all()
    cq, ck = cq.tolist(), ck.tolist()
    for b in range(len(lens_q)):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        qb, kb, vb = q[qs][None], k[ks][None], v[ks][None]
        ob, lb = out[qs][None], lse[:, qs][None]
        assert_fa_rule(ob, qb, kb, vb, causal=causal, lse=lb)
        # Same routine as attention on the one sequence: bit-identical.
        o1, l1 = attention(qb, kb, vb, causal=causal, return_lse=True)
        assert torch.equal(ob, o1) and torch.equal(lb, l1)


def test_varlen_scale_and_fp32():
    lens = [3, 50, 1]
    q, k, v = (rand(sum(lens), 2, 32, dtype=torch.float32) for _ in range(3))
    c = cu(lens)
    out = attention_varlen(q, k, v, c, c, 50, 50, softmax_scale=0.7, causal=True)
    c = c.tolist()
    for b in range(3):
        s = slice(c[b], c[b + 1])
        assert_fa_rule(out[s][None], q[s][None], k[s][None], v[s][None], scale=0.7, causal=True)


def test_varlen_zero_sequences():
    q, k, v = qkv(1, 4, 4, 2, 2, 16, torch.float16)
    z = torch.zeros(1, dtype=torch.int32)  # batch 0: every row is outside all sequences
    out, lse = attention_varlen(q[0], k[0], v[0], z, z, 0, 0, return_lse=True)
    assert (out == 0).all() and (lse == NEG_INF).all()


# ---------------------------------------------------------------------------------------------
# attention_decode
# ---------------------------------------------------------------------------------------------


def decode_inputs(lens, sq, smax, hq, hkv, d, dtype):
    B = len(lens)
    q = rand(B, sq, hq, d, dtype=dtype)
    k_cache, v_cache = rand(B, smax, hkv, d, dtype=dtype), rand(B, smax, hkv, d, dtype=dtype)
    # Rows past each sequence's length are garbage in a real cache: make them NaN, so reading
    # one shows up in the output.
    for b, n in enumerate(lens):
        k_cache[b, n:] = float("nan")
        v_cache[b, n:] = float("nan")
    return q, k_cache, v_cache, torch.tensor(lens, dtype=torch.int32)


def check_decode(out, lse, q, k_cache, v_cache, lens, causal):
    for b, n in enumerate(lens.tolist()):
        qb, kb, vb = q[b : b + 1], k_cache[b : b + 1, :n], v_cache[b : b + 1, :n]
        assert_fa_rule(out[b : b + 1], qb, kb, vb, causal=causal, lse=lse[b : b + 1])
        o1, l1 = attention(qb, kb, vb, causal=causal, return_lse=True)
        assert torch.equal(out[b : b + 1], o1) and torch.equal(lse[b : b + 1], l1)
        m = masked_rows(q.shape[1], n, causal)
        assert (out[b, :m] == 0).all() and (lse[b, :, :m] == NEG_INF).all()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("sq", [1, 3])
@pytest.mark.parametrize("d", [64, 59])
@pytest.mark.parametrize("dtype", LOW)
def test_decode_vs_reference(dtype, d, sq, causal, each_cpu_isa):
    # Lengths 0, 1 and 2 (< Sq: leading queries see nothing when causal), full cache (len=Smax).
    lens = [0, 1, 2, 37, 300, 129]
    q, kc, vc, cl = decode_inputs(lens, sq, 300, 8, 2, d, dtype)
    out, lse = attention_decode(q, kc, vc, cl, causal=causal, return_lse=True)
    assert torch.isfinite(out).all()
    check_decode(out, lse, q, kc, vc, cl, causal)


@pytest.mark.parametrize("sq", [1, 3])
def test_decode_length_sweep(sq, each_cpu_isa):
    # Cache lengths 1 .. a few hundred, every sequence different, MQA.
    lens = [1, 2, 3, 5, 16, 31, 64, 97, 128, 200, 257, 384, 399, 400]
    q, kc, vc, cl = decode_inputs(lens, sq, 400, 4, 1, 64, torch.bfloat16)
    out, lse = attention_decode(q, kc, vc, cl, return_lse=True)
    check_decode(out, lse, q, kc, vc, cl, True)


def test_decode_strided_cache():
    # k/v caches as views of one interleaved [B, Smax, 2, Hkv, D] buffer, q from a packed buffer.
    B, Smax, Hq, Hkv, D = 3, 70, 4, 2, 64
    kv = rand(B, Smax, 2, Hkv, D)
    kc, vc = kv[:, :, 0], kv[:, :, 1]
    q = rand(B, 2, Hq + 2, D)[:, :, :Hq]
    cl = torch.tensor([70, 0, 33], dtype=torch.int32)
    out, lse = attention_decode(q, kc, vc, cl, return_lse=True)
    ref_out, ref_lse = attention_decode(q.contiguous(), kc.contiguous(), vc.contiguous(), cl, return_lse=True)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    check_decode(out, lse, q, kc, vc, cl, True)


# ---------------------------------------------------------------------------------------------
# opcheck, torch.compile
# ---------------------------------------------------------------------------------------------


def test_opcheck_attention():
    q, k, v = qkv(2, 7, 9, 4, 2, 24, torch.float16)
    torch.library.opcheck(torch.ops.squash.attention.default, (q, k, v, None, True))
    torch.library.opcheck(torch.ops.squash.attention.default, (q.float(), k.float(), v.float(), 0.3, False))


def test_opcheck_attention_varlen():
    lens_q, lens_k = [3, 0, 1, 5], [2, 4, 1, 5]
    q = rand(sum(lens_q), 4, 16, dtype=torch.bfloat16)
    k, v = rand(sum(lens_k), 1, 16, dtype=torch.bfloat16), rand(sum(lens_k), 1, 16, dtype=torch.bfloat16)
    args = (q, k, v, cu(lens_q), cu(lens_k), 5, 5, None, True)
    torch.library.opcheck(torch.ops.squash.attention_varlen.default, args)


def test_opcheck_attention_decode():
    q, kc, vc, cl = decode_inputs([5, 0, 12], 2, 12, 4, 2, 16, torch.float16)
    torch.library.opcheck(torch.ops.squash.attention_decode.default, (q, kc, vc, cl, None, True))


class TinyAttention(nn.Module):
    """qkv projection -> squash attention (strided q/k/v views, GQA) -> out projection, plus a
    decode step against a cache."""

    def __init__(self, hidden=64, heads=4, kv_heads=2, head_dim=16):
        super().__init__()
        self.h, self.hkv, self.d = heads, kv_heads, head_dim
        self.qkv = nn.Linear(hidden, (heads + 2 * kv_heads) * head_dim)
        self.o = nn.Linear(heads * head_dim, hidden)

    def forward(self, x, k_cache, v_cache, cache_seqlens):
        B, S, _ = x.shape
        qkv = self.qkv(x).view(B, S, self.h + 2 * self.hkv, self.d)
        q, k, v = qkv.split([self.h, self.hkv, self.hkv], dim=2)
        out, lse = attention(q, k, v, causal=True, return_lse=True)
        dec = attention_decode(q[:, -1:], k_cache, v_cache, cache_seqlens)
        return self.o(out.reshape(B, S, -1)), lse, dec


def test_torch_compile_fullgraph():
    torch.manual_seed(0)
    mod = TinyAttention()
    x = torch.randn(2, 13, 64)
    kc, vc = torch.randn(2, 20, 2, 16), torch.randn(2, 20, 2, 16)
    cl = torch.tensor([20, 7], dtype=torch.int32)
    with torch.no_grad():
        eager = mod(x, kc, vc, cl)
        compiled = torch.compile(mod, fullgraph=True)(x, kc, vc, cl)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------


def _t(*shape, dtype=torch.float16):
    return torch.randn(*shape).to(dtype)


_Q, _K = (2, 5, 4, 8), (2, 6, 2, 8)

BAD_ATTENTION = [
    ((_t(*_Q, dtype=torch.float64), _t(*_K), _t(*_K)), r"squash::attention: q must be float16 or bfloat16 or float32, got float64"),
    ((_t(*_Q), _t(*_K, dtype=torch.bfloat16), _t(*_K)), r"k must have q's dtype float16, got bfloat16"),
    ((_t(*_Q), _t(*_K), _t(*_K, dtype=torch.float32)), r"v must have q's dtype float16, got float32"),
    ((_t(5, 4, 8), _t(*_K), _t(*_K)), r"q must be 4-D \[batch, seqlen_q, heads_q, head_dim\], got shape \[5, 4, 8\]"),
    ((_t(*_Q), _t(6, 2, 8), _t(*_K)), r"k must be 4-D"),
    ((_t(*_Q), _t(*_K), _t(2, 7, 2, 8)), r"v must have k's shape \[2, 6, 2, 8\], got \[2, 7, 2, 8\]"),
    ((_t(*_Q), _t(3, 6, 2, 8), _t(3, 6, 2, 8)), r"k.shape\[0\] must be 2 \(batch of q\)"),
    ((_t(*_Q), _t(2, 6, 2, 9), _t(2, 6, 2, 9)), r"k.shape\[3\] must be 8 \(head_dim of q\)"),
    ((_t(*_Q), _t(2, 6, 3, 8), _t(2, 6, 3, 8)), r"heads of q \(4\) must be a multiple of heads of k \(3\)"),
    ((_t(2, 5, 4, 0), _t(2, 6, 2, 0), _t(2, 6, 2, 0)), r"head_dim \(q.shape\[3\]\) must be in \[1, 256\], got 0"),
    ((_t(1, 5, 1, 257), _t(1, 6, 1, 257), _t(1, 6, 1, 257)), r"must be in \[1, 256\], got 257"),
    ((_t(2, 5, 0, 8), _t(*_K), _t(*_K)), r"q must have at least one head"),
    ((_t(*_Q), _t(2, 6, 0, 8), _t(2, 6, 0, 8)), r"k must have at least one head"),
    ((_t(2, 5, 4, 16)[..., ::2], _t(*_K), _t(*_K)), r"q must have a contiguous last dimension \(stride 1\)"),
]


@pytest.mark.parametrize("args,match", BAD_ATTENTION)
def test_attention_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        attention(*args)


def _varlen_args(**over):
    a = dict(q=_t(9, 4, 8), k=_t(7, 2, 8), v=_t(7, 2, 8), cu_seqlens_q=cu([4, 5]), cu_seqlens_k=cu([3, 4]),
             max_seqlen_q=5, max_seqlen_k=4)
    a.update(over)
    return a


BAD_VARLEN = [
    (dict(q=_t(1, 9, 4, 8)), r"squash::attention_varlen: q must be 3-D \[total_q, heads_q, head_dim\]"),
    (dict(v=_t(8, 2, 8)), r"v must have k's shape"),
    (dict(cu_seqlens_q=cu([4, 5]).long()), r"cu_seqlens_q must be int32, got int64"),
    (dict(cu_seqlens_k=cu([3, 4])[None]), r"cu_seqlens_k must be 1-D \[batch \+ 1\] like cu_seqlens_q"),
    (dict(cu_seqlens_q=torch.zeros(0, dtype=torch.int32)), r"cu_seqlens_q must have \[batch \+ 1\] >= 1 entries"),
    (dict(cu_seqlens_k=cu([3, 2, 2])), r"cu_seqlens_k.shape\[0\] must be 3"),
    (dict(cu_seqlens_q=cu([2, 2, 2, 3])[::2]), r"cu_seqlens_q must be contiguous"),
    (dict(max_seqlen_q=-1), r"max_seqlen_q must be >= 0, got -1"),
    (dict(cu_seqlens_q=torch.tensor([0, 5, 4], dtype=torch.int32)), r"cu_seqlens_q must be non-decreasing, got cu_seqlens_q\[2\]=4 < cu_seqlens_q\[1\]=5"),
    (dict(cu_seqlens_k=torch.tensor([-1, 3, 7], dtype=torch.int32)), r"cu_seqlens_k\[0\] must be >= 0, got -1"),
    (dict(cu_seqlens_q=cu([4, 6]), max_seqlen_q=6), r"cu_seqlens_q\[-1\]=10 must be <= q.shape\[0\]=9"),
    (dict(cu_seqlens_k=cu([3, 5]), max_seqlen_k=5), r"cu_seqlens_k\[-1\]=8 must be <= k.shape\[0\]=7"),
    (dict(max_seqlen_k=3), r"sequence 1 has length 4 \(from cu_seqlens_k\) > max_seqlen_k=3"),
]


@pytest.mark.parametrize("over,match", BAD_VARLEN)
def test_varlen_bad_inputs(over, match):
    with pytest.raises(ValueError, match=match):
        attention_varlen(**_varlen_args(**over))


BAD_DECODE = [
    (dict(q=_t(2, 1, 4, 8, dtype=torch.bfloat16)), r"squash::attention_decode: k_cache must have q's dtype bfloat16, got float16"),
    (dict(v_cache=_t(2, 17, 2, 8)), r"v_cache must have k_cache's shape \[2, 16, 2, 8\]"),
    (dict(k_cache=_t(16, 2, 8), v_cache=_t(16, 2, 8)), r"k_cache must be 4-D \[batch, max_seqlen, heads_kv, head_dim\]"),
    (dict(cache_seqlens=torch.tensor([3, 4, 5], dtype=torch.int32)), r"cache_seqlens.shape\[0\] must be 2 \(\[batch\]\)"),
    (dict(cache_seqlens=torch.tensor([3, 4])), r"cache_seqlens must be int32, got int64"),
    (dict(cache_seqlens=torch.tensor([3, 17], dtype=torch.int32)), r"cache_seqlens\[1\]=17 must be in \[0, 16\]"),
    (dict(cache_seqlens=torch.tensor([-1, 3], dtype=torch.int32)), r"cache_seqlens\[0\]=-1 must be in \[0, 16\]"),
]


@pytest.mark.parametrize("over,match", BAD_DECODE)
def test_decode_bad_inputs(over, match):
    a = dict(q=_t(2, 1, 4, 8), k_cache=_t(2, 16, 2, 8), v_cache=_t(2, 16, 2, 8),
             cache_seqlens=torch.tensor([3, 16], dtype=torch.int32))
    a.update(over)
    with pytest.raises(ValueError, match=match):
        attention_decode(**a)


# ---------------------------------------------------------------------------------------------
# CUDA vs the reference (skip here; run on the GPU machine)
# ---------------------------------------------------------------------------------------------


def need_cuda_kernel(op):
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"squash::{op}", "CUDA"):
        pytest.skip(f"squash::{op} has no CUDA kernel in this build yet")


def poison_cuda_allocator(nbytes):
    # Outputs come from the caching allocator: fill freed blocks with NaN first, so an output
    # element the kernel never writes reads NaN instead of a stale (possibly correct) value.
    torch.empty(max(nbytes, 1 << 20) // 4, device="cuda").fill_(float("nan"))
    torch.cuda.synchronize()


@pytest.fixture
def fp32_reference():
    # The fp32 reference must not silently use TF32.
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = prev


# Under compute-sanitizer (SQUASH_SANITIZE=1, ~100x slower) a few blocks per kernel suffice.
SANITIZE = bool(os.environ.get("SQUASH_SANITIZE"))
CUDA_SEQS = [1, 97, 257] if SANITIZE else [1, 97, 257, 1025, 4096]
CUDA_HEAD_DIMS = [64, 128, 256]
GQA = [(4, 4), (4, 2), (8, 2), (16, 2), (8, 1), (6, 1)]  # ratios 1, 2, 4, 8, MQA (also 6:1)


def run_cuda_attention(q, k, v, causal, scale=None):
    """squash attention on CUDA with poisoned allocator memory; checks the FA rule, lse and the
    rows that see no key; returns (out, lse)."""
    B, Sq, Hq, _ = q.shape
    poison_cuda_allocator(q.numel() * 2 + B * Hq * Sq * 4)
    out, lse = attention(q, k, v, softmax_scale=scale, causal=causal, return_lse=True)
    assert_fa_rule(out, q, k, v, scale=scale, causal=causal, lse=lse, ref_dtype=torch.float32)
    n = masked_rows(Sq, k.shape[1], causal)
    assert (out[:, :n] == 0).all() and (lse[:, :, :n] == NEG_INF).all()
    assert torch.isfinite(out).all() and torch.isfinite(lse[:, :, n:]).all()
    return out, lse


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen", CUDA_SEQS)
@pytest.mark.parametrize("d", CUDA_HEAD_DIMS)
@pytest.mark.parametrize("dtype", LOW)
def test_cuda_attention(dtype, d, seqlen, causal, fp32_reference):
    # Sq == Sk, Sq < Sk and Sq > Sk (causal: bottom-right aligned, leading rows see no key);
    # GQA 4:1. Lengths 97/257/1025 leave partial row and key tiles.
    need_cuda_kernel("attention")
    B, Hq, Hkv = (2, 8, 2) if seqlen <= 1025 else (1, 4, 1)
    for sq, sk in {(seqlen, seqlen), (seqlen // 3 + 1, seqlen), (seqlen, seqlen // 3 + 1)}:
        run_cuda_attention(*qkv(B, sq, sk, Hq, Hkv, d, dtype, "cuda"), causal)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hkv", GQA)
def test_cuda_attention_gqa(hq, hkv, causal, fp32_reference):
    need_cuda_kernel("attention")
    run_cuda_attention(*qkv(2, 97, 130, hq, hkv, 128, torch.bfloat16, "cuda"), causal)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW)
def test_cuda_attention_strided_and_scale(dtype, fp32_reference):
    # q, k, v as views of a packed qkv projection, k from a [B, H, S, D] buffer, a batch-broadcast
    # v (stride 0): bit-identical to contiguous inputs. Then explicit scales, a peaky one too.
    need_cuda_kernel("attention")
    B, S, Hq, Hkv, D = 3, 257, 8, 2, 128
    q = rand(B, S, Hq + 2 * Hkv, D, dtype=dtype, device="cuda")[:, :, :Hq]
    k = rand(B, Hkv, S, D, dtype=dtype, device="cuda").transpose(1, 2)
    v = rand(1, S, Hkv, D, dtype=dtype, device="cuda").expand(B, S, Hkv, D)
    for causal in (False, True):
        out, lse = run_cuda_attention(q, k, v, causal)
        out_c, lse_c = attention(q.contiguous(), k.contiguous(), v.contiguous(), causal=causal, return_lse=True)
        assert torch.equal(out, out_c) and torch.equal(lse, lse_c)
    for scale in (0.02, 1.0):
        run_cuda_attention(q, k, v, True, scale=scale)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", CUDA_HEAD_DIMS)
@pytest.mark.parametrize("dtype", LOW)
def test_cuda_varlen(dtype, d, causal, fp32_reference):
    # Empty and length-1 sequences, Sq > Sk and Sq < Sk, a sequence with keys but no queries and
    # one with queries but no keys; q a strided view; rows before the first sequence.
    need_cuda_kernel("attention_varlen")
    lens_q = [0, 1, 97, 5, 0, 300, 1, 64] + ([] if SANITIZE else [1025])
    lens_k = [3, 1, 97, 0, 9, 2000, 64, 1] + ([] if SANITIZE else [1025])
    q = rand(sum(lens_q) + 2, 10, d, dtype=dtype, device="cuda")[:, 1:9]
    k, v = (rand(sum(lens_k), 2, d, dtype=dtype, device="cuda") for _ in range(2))
    cq, ck = cu(lens_q, 2).cuda(), cu(lens_k).cuda()
    poison_cuda_allocator(q.numel() * 4)
    out, lse = attention_varlen(q, k, v, cq, ck, max(lens_q), max(lens_k), causal=causal, return_lse=True)
    cq, ck = cq.tolist(), ck.tolist()
    for b in range(len(lens_q)):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        ob, lb = out[qs][None], lse[:, qs][None]
        assert_fa_rule(ob, q[qs][None], k[ks][None], v[ks][None], causal=causal, lse=lb,
                       ref_dtype=torch.float32)
        n = masked_rows(lens_q[b], lens_k[b], causal)
        assert (ob[:, :n] == 0).all() and (lb[:, :, :n] == NEG_INF).all()
        # Same kernel on one sequence of the fixed-length layout: bit-identical.
        o1, l1 = attention(q[qs][None], k[ks][None], v[ks][None], causal=causal, return_lse=True)
        assert torch.equal(ob, o1) and torch.equal(lb, l1)


def _cuda_bad_attention():
    q, k = rand(2, 5, 4, 64, device="cuda"), rand(2, 6, 2, 64, device="cuda")
    odd = rand(2, 5, 4, 72, device="cuda")[..., 1:65]  # last dim contiguous, pointer misaligned
    return [
        ((q.float(), k.float(), k.float()), {}, r"squash::attention: on CUDA q must be float16 or bfloat16, got float32"),
        ((q[..., :59], k[..., :59], k[..., :59]), {}, r"on CUDA head_dim \(q.shape\[3\]\) must be 64, 128 or 256, got 59"),
        ((odd, k, k), {}, r"on CUDA q must start on a 16-byte boundary"),
        ((q, k, k), dict(softmax_scale=-0.5), r"softmax_scale must be a finite number > 0 \(or None for 1/sqrt\(head_dim\)\), got -0.5"),
    ]


@pytest.mark.gpu
def test_cuda_attention_bad_inputs():
    need_cuda_kernel("attention")
    for args, kw, match in _cuda_bad_attention():
        with pytest.raises(ValueError, match=match):
            attention(*args, **kw)
    q, k = rand(9, 4, 32, device="cuda"), rand(7, 2, 32, device="cuda")
    c = cu([4, 5]).cuda()
    with pytest.raises(ValueError, match=r"squash::attention_varlen: on CUDA head_dim \(q.shape\[2\]\) must be"):
        attention_varlen(q, k, k, c, cu([3, 4]).cuda(), 5, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("sq", [1, 4])
@pytest.mark.parametrize("lens", [[1, 7, 64, 0], [128, 1000, 4096, 3], [16384, 333], [65536]],
                         ids=["short", "mid", "16k", "64k"])
@pytest.mark.parametrize("dtype", LOW)
def test_cuda_decode(dtype, lens, sq, fp32_reference):
    need_cuda_kernel("attention_decode")
    smax = max(lens) + 5  # room past the longest sequence: must never be read
    q = rand(len(lens), sq, 32, 128, dtype=dtype, device="cuda")
    kc, vc = (rand(len(lens), smax, 8, 128, dtype=dtype, device="cuda") for _ in range(2))
    for b, n in enumerate(lens):
        kc[b, n:] = float("nan")
        vc[b, n:] = float("nan")
    cl = torch.tensor(lens, dtype=torch.int32, device="cuda")
    poison_cuda_allocator(q.numel() * 4)
    out, lse = attention_decode(q, kc, vc, cl, return_lse=True)
    assert torch.isfinite(out).all()
    for b, n in enumerate(lens):
        assert_fa_rule(out[b : b + 1], q[b : b + 1], kc[b : b + 1, :n], vc[b : b + 1, :n], causal=True,
                       lse=lse[b : b + 1], ref_dtype=torch.float32)
        m = masked_rows(sq, n, True)
        assert (out[b, :m] == 0).all() and (lse[b, :, :m] == NEG_INF).all()


@pytest.mark.gpu
def test_cuda_decode_bad_device():
    need_cuda_kernel("attention_decode")
    q = rand(2, 1, 4, 64, device="cuda")
    kc = rand(2, 16, 2, 64, device="cuda")
    with pytest.raises(ValueError, match=r"cache_seqlens must be on cuda:0 like q, got cpu"):
        attention_decode(q, kc, kc, torch.tensor([3, 16], dtype=torch.int32))
