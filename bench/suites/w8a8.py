"""W8A8: int8 x int8 GEMM with per-token and per-channel scales vs cuBLAS bf16 and torch._int_mm.

squash is the default dispatch (CUTLASS, config from w8a8_heuristics.h); the C++ benchmark
bench/cpp/w8a8_bench.cu sweeps every config. M = 1 and 16 show the decode end, where the int8
weights halve the bytes cuBLAS bf16 streams (torch._int_mm needs M > 16: skipped there); the goal
(>= 1.7x cublas bf16) is at M >= 2048.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..harness import Context, rand, rotating
from ._common import LLAMA_SHAPES, TINY_SHAPES

BUDGET_WEIGHT = 12
SUITE = "w8a8"


def config(ctx: Context):
    if ctx.tiny:
        return TINY_SHAPES, [32, 48]
    if ctx.quick:
        return [(4096, 4096), (4096, 14336), (28672, 8192)], [4096]
    return LLAMA_SHAPES, [1, 16, 128, 2048, 4096, 8192]


def int_mm_dequant(xq, xs, wq, ws):
    """The peer: torch._int_mm (int32 out), then the dequant math in torch, bf16 out."""
    acc = torch._int_mm(xq, wq.t())
    return (acc.float() * xs[:, None] * ws[None, :]).to(torch.bfloat16)


def run(ctx: Context) -> None:
    shapes, ms = config(ctx)
    squash = ctx.has_squash("w8a8_gemm")
    for K, N in shapes:
        if ctx.out_of_time():
            return
        dense = rotating(ctx, lambda: rand(ctx, (N, K), torch.bfloat16), N * K * 2)
        i8 = rotating(ctx, lambda: (rand(ctx, (N, K), torch.int8),
                                    torch.rand(N, device=ctx.device) * 1e-2 + 1e-3), N * K)
        for M in ms:
            case = f"M={M} N={N} K={K} bf16"
            params = {"M": M, "N": N, "K": K, "dtype": "bf16"}
            x = rand(ctx, (M, K), torch.bfloat16)
            xq = rand(ctx, (M, K), torch.int8)
            xs = torch.rand(M, device=ctx.device) * 1e-2 + 1e-3
            flops = 2 * M * N * K
            q_bytes = M * K + N * K + 4 * M + 4 * N + 2 * M * N
            ctx.measure(SUITE, case, "cublas", params, lambda: lambda i: F.linear(x, dense[i % len(dense)]),
                        flops=flops, nbytes=2 * (M * K + N * K + M * N))
            ctx.measure(SUITE, case, "int_mm", params,
                        lambda: lambda i: int_mm_dequant(xq, xs, *i8[i % len(i8)]), flops=flops, nbytes=q_bytes)
            if squash:
                op = torch.ops.squash.w8a8_gemm
                ctx.measure(SUITE, case, "squash", params,
                            lambda: lambda i: op(xq, xs, i8[i % len(i8)][0], i8[i % len(i8)][1], None,
                                                 torch.bfloat16),
                            flops=flops, nbytes=q_bytes)
        del dense, i8
        ctx.free()
