"""Attention forward (prefill): squash::attention vs F.scaled_dot_product_attention per backend.

Tensors are in the FlashAttention layout [B, S, H, D] (squash's); SDPA gets [B, H, S, D]
transposed views of the same storage. 16k tokens per case (batch x seq), 32 heads, hq = hkv.
tflops = 4*B*H*Sq*Sk*D, halved for causal (FlashAttention's convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..harness import Context, dtype_name, rand
from ._common import DTYPES

BUDGET_WEIGHT = 20
SUITE = "attn_fwd"
BACKENDS = {
    "sdpa_flash": SDPBackend.FLASH_ATTENTION,
    "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
}
CUDA_ONLY = {"sdpa_cudnn", "sdpa_efficient"}  # the CPU has a flash SDPA kernel, not these


def config(ctx: Context):
    if ctx.tiny:
        return 128, 4, [64], [64], [False, True], ["bf16"]
    if ctx.quick:
        return 16384, 32, [2048, 8192], [128], [False, True], ["bf16"]
    return 16384, 32, [512, 1024, 2048, 4096, 8192, 16384], [128, 64], [False, True], ["bf16", "fp16"]


def sdpa(backend, q, k, v, causal, **kw):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              is_causal=causal, **kw)


def run(ctx: Context) -> None:
    tokens, heads, seqs, dims, causals, dtypes = config(ctx)
    squash = ctx.has_squash("attention")
    for dn in dtypes:
        dt = DTYPES[dn]
        for D in dims:
            for S in seqs:
                if ctx.out_of_time():
                    return
                B = max(1, tokens // S)
                q, k, v = (rand(ctx, (B, S, heads, D), dt) for _ in range(3))
                for causal in causals:
                    case = f"B={B} S={S} H={heads} D={D} {'causal' if causal else 'full'} {dn}"
                    params = {"batch": B, "seqlen_q": S, "seqlen_k": S, "heads_q": heads, "heads_kv": heads,
                              "head_dim": D, "causal": causal, "dtype": dn}
                    flops = 4 * B * heads * S * S * D // (2 if causal else 1)
                    for impl, backend in BACKENDS.items():
                        if ctx.device == "cpu" and impl in CUDA_ONLY:
                            ctx.skip(impl, case, "needs CUDA")
                            continue
                        ctx.measure(SUITE, case, impl, params,
                                    lambda: lambda i: sdpa(backend, q, k, v, causal), flops=flops)
                    if squash:
                        op = torch.ops.squash.attention
                        ctx.measure(SUITE, case, "squash", params, lambda: lambda i: op(q, k, v, None, causal),
                                    flops=flops)
                del q, k, v
                ctx.free()
