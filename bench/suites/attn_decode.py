"""Attention decode: one query token against a KV cache, GQA 32 q heads / 8 KV heads, hd 128.

squash::attention_decode reads the cache in the FlashAttention layout [B, Smax, Hkv, D]; SDPA
gets [B, H, S, D] transposed views with enable_gqa=True. A backend that rejects enable_gqa is
timed with K/V repeated to 32 heads beforehand (outside the timed region); such records carry
" [kv repeated]" in the case and still count the GQA bytes (effective bandwidth of the same
work). SDPA runs non-causal: with one query at the end of the cache, bottom-right causal (squash)
and "sees every key" are the same, while SDPA's is_causal is top-left aligned.
gbps = K + V cache bytes + q + out.
"""

from __future__ import annotations

import torch

from ..harness import Context, rand, rotating
from .attn_fwd import BACKENDS, CUDA_ONLY, sdpa

BUDGET_WEIGHT = 14
SUITE = "attn_decode"
HQ, HKV, D = 32, 8, 128
MAX_BYTES = 40 * 2**30  # keep every case's tensors under 40 GB (80 GB cards, peers' scratch)


def config(ctx: Context):
    if ctx.tiny:
        return [1, 2], [256]
    if ctx.quick:
        return [1, 16], [8192, 65536]
    return [1, 4, 16, 64], [1024, 4096, 16384, 65536]


def run(ctx: Context) -> None:
    batches, seqs = config(ctx)
    squash = ctx.has_squash("attention_decode")
    dt, es = torch.bfloat16, 2
    for S in seqs:
        for B in batches:
            if ctx.out_of_time():
                return
            kv_bytes = 2 * B * S * HKV * D * es
            if kv_bytes > MAX_BYTES:
                ctx.skip("*", f"B={B} Skv={S}", "KV cache over the 40 GB cap")
                continue
            case = f"B={B} Skv={S} Hq={HQ} Hkv={HKV} D={D} bf16"
            params = {"batch": B, "seqlen_q": 1, "seqlen_k": S, "heads_q": HQ, "heads_kv": HKV, "head_dim": D,
                      "dtype": "bf16"}
            nbytes = kv_bytes + 2 * B * HQ * D * es
            flops = 4 * B * HQ * S * D
            sets = rotating(ctx, lambda: (rand(ctx, (B, 1, HQ, D), dt), rand(ctx, (B, S, HKV, D), dt),
                                          rand(ctx, (B, S, HKV, D), dt)), kv_bytes)
            for impl, backend in BACKENDS.items():
                if ctx.device == "cpu" and impl in CUDA_ONLY:
                    ctx.skip(impl, case, "needs CUDA")
                    continue
                measure_sdpa(ctx, case, impl, backend, params, sets, nbytes, flops, kv_bytes)
            if squash:
                op = torch.ops.squash.attention_decode
                seqlens = torch.full((B,), S, dtype=torch.int32, device=ctx.device)
                ctx.measure(SUITE, case, "squash", params,
                            lambda: lambda i: op(*sets[i % len(sets)], seqlens, None, True),
                            flops=flops, nbytes=nbytes)
            del sets
            ctx.free()


def measure_sdpa(ctx, case, impl, backend, params, sets, nbytes, flops, kv_bytes):
    reason = None
    if not ctx.dry_run:
        try:  # does this backend take GQA natively?
            q, k, v = sets[0]
            sdpa(backend, q, k, v, False, enable_gqa=True)
            if ctx.device == "cuda":
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
    if reason is None:
        ctx.measure(SUITE, case, impl, params,
                    lambda: lambda i: sdpa(backend, *sets[i % len(sets)], False, enable_gqa=True),
                    flops=flops, nbytes=nbytes)
        return
    rep_case = case + " [kv repeated]"
    if kv_bytes * (HQ // HKV) * len(sets) > MAX_BYTES:
        ctx.skip(impl, rep_case, f"rejects enable_gqa ({reason}); repeated K/V would exceed 40 GB")
        return
    print(f"NOTE {impl} {case}: rejects enable_gqa ({reason}); timing with K/V repeated to {HQ} heads", flush=True)

    def setup():
        rep = [(q, k.repeat_interleave(HQ // HKV, dim=2), v.repeat_interleave(HQ // HKV, dim=2)) for q, k, v in sets]
        return lambda i: sdpa(backend, *rep[i % len(rep)], False)
    ctx.measure(SUITE, rep_case, impl, params, setup, flops=flops, nbytes=nbytes)
