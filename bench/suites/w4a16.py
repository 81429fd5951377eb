"""W4A16: int4 weight-only GEMM, group 128, vs cuBLAS (dense fp16/bf16) and torch's tinygemm.

squash: the prepacked path (weights prepacked once, outside the timing, as a model loads them);
squash:canonical: the canonical-layout op at a few M, for comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..harness import Context, dtype_name, rand, rotating
from ._common import CANONICAL_MS, LLAMA_SHAPES, TINY_SHAPES, SlowGuard, SquashImpls, run_weight_only, try_prepare

BUDGET_WEIGHT = 30
SUITE = "w4a16"
GROUP = 128
# torchao's choice for _convert_weight_to_int4pack (16-byte loads); needs K % 128 == 0.
INNER_K_TILES = 8


def config(ctx: Context):
    if ctx.tiny:
        return TINY_SHAPES, [1, 3, 32], ["bf16", "fp16"]
    if ctx.quick:
        return [(4096, 4096), (4096, 14336), (28672, 8192)], [1, 16, 128, 1024], ["bf16"]
    return LLAMA_SHAPES, [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096], ["bf16", "fp16"]


def run(ctx: Context) -> None:
    run_weight_only(ctx, "w4a16_gemm", run_shape, config)


def run_shape(ctx: Context, dt: torch.dtype, K: int, N: int, ms: list[int], squash: SquashImpls) -> None:
    es, g, dn = dt.itemsize, GROUP, dtype_name(dt)
    dense = rotating(ctx, lambda: rand(ctx, (N, K), dt), N * K * es)
    w_bytes = N * K // 2
    sq = pk = None
    if squash.prepacked or squash.canonical:
        # canonical format: qweight uint8 [N, K/2], scales f32 [N, K/g], symmetric (zeros None)
        sq = rotating(ctx, lambda: (rand(ctx, (N, K // 2), torch.uint8),
                                    torch.rand(N, K // g, device=ctx.device) * 1e-2 + 1e-3), w_bytes)
    if squash.prepacked:  # prepacked once per copy (load time), outside the timed calls
        pk, pk_err = try_prepare(lambda: [torch.ops.squash.prepack_int4_weight(q, s, None, g)[:2] for q, s in sq])
        if not squash.canonical:
            sq = None
    # tinygemm: weight packed by _convert_weight_to_int4pack (uint8 [N, K/2] in), scales and
    # zeros together as [K/g, N, 2] in the activation dtype.
    if ctx.device == "cuda":
        tg, tg_err = try_prepare(lambda: rotating(ctx, lambda: (
            torch.ops.aten._convert_weight_to_int4pack(rand(ctx, (N, K // 2), torch.uint8), INNER_K_TILES),
            torch.rand(K // g, N, 2, device=ctx.device, dtype=dt) * 1e-2 + 1e-3), w_bytes))
    elif ctx.dry_run:
        tg, tg_err = [None], None
    else:
        tg, tg_err = None, "needs CUDA (torch's tinygemm kernel)"
    guard = SlowGuard(ctx)
    for M in ms:
        case = f"M={M} N={N} K={K} g={g} {dn}"
        params = {"M": M, "N": N, "K": K, "group": g, "dtype": dn}
        x = rand(ctx, (M, K), dt)
        act = M * K * es + M * N * es
        flops = 2 * M * N * K

        guard.measure(
            SUITE, case, "cublas", params, lambda: lambda i: F.linear(x, dense[i % len(dense)]),
            flops=flops, nbytes=N * K * es + act)
        if tg_err:
            ctx.skip("tinygemm", case, tg_err)
        else:
            guard.measure(
                SUITE, case, "tinygemm", params,
                lambda: lambda i: torch.ops.aten._weight_int4pack_mm(x, tg[i % len(tg)][0], g, tg[i % len(tg)][1]),
                flops=flops, nbytes=w_bytes + (K // g) * N * 2 * es + act)
        nbytes = w_bytes + N * (K // g) * 4 + act
        if squash.prepacked:
            if pk_err:
                ctx.skip("squash", case, pk_err)
            else:
                op = torch.ops.squash.w4a16_gemm_prepacked
                guard.measure(SUITE, case, "squash", params,
                              lambda: lambda i: op(x, pk[i % len(pk)][0], pk[i % len(pk)][1], None, K, g, None),
                              flops=flops, nbytes=nbytes)
        if squash.canonical and M in CANONICAL_MS:
            op_c = torch.ops.squash.w4a16_gemm
            guard.measure(SUITE, case, "squash:canonical", params,
                          lambda: lambda i: op_c(x, sq[i % len(sq)][0], sq[i % len(sq)][1], None, g, None),
                          flops=flops, nbytes=nbytes)
