"""W8A16: int8 per-channel weight-only GEMM vs cuBLAS (dense) and torch's _weight_int8pack_mm.

squash: the prepacked path (prepacked outside the timing); squash:canonical: the canonical op at
a few M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..harness import Context, dtype_name, rand, rotating
from ._common import CANONICAL_MS, SlowGuard, SquashImpls, run_weight_only, try_prepare
from .w4a16 import config

BUDGET_WEIGHT = 25
SUITE = "w8a16"


def run(ctx: Context) -> None:
    run_weight_only(ctx, "w8a16_gemm", run_shape, config)


def run_shape(ctx: Context, dt: torch.dtype, K: int, N: int, ms: list[int], squash: SquashImpls) -> None:
    es, dn = dt.itemsize, dtype_name(dt)
    dense = rotating(ctx, lambda: rand(ctx, (N, K), dt), N * K * es)
    # int8pack takes scales in the activation dtype; squash's canonical scales are f32 [N].
    i8 = rotating(ctx, lambda: (rand(ctx, (N, K), torch.int8),
                                torch.rand(N, device=ctx.device, dtype=dt) * 1e-2 + 1e-3), N * K)
    sq = [(q, s.float()) for q, s in i8]
    if squash.prepacked:  # prepacked once per copy (load time), outside the timed calls
        pk, pk_err = try_prepare(lambda: [torch.ops.squash.prepack_int8_weight(q, s) for q, s in sq])
    guard = SlowGuard(ctx)
    for M in ms:
        case = f"M={M} N={N} K={K} {dn}"
        params = {"M": M, "N": N, "K": K, "dtype": dn}
        x = rand(ctx, (M, K), dt)
        act = M * K * es + M * N * es
        flops = 2 * M * N * K

        guard.measure(
            SUITE, case, "cublas", params, lambda: lambda i: F.linear(x, dense[i % len(dense)]),
            flops=flops, nbytes=N * K * es + act)
        guard.measure(
            SUITE, case, "int8pack", params,
            lambda: lambda i: torch.ops.aten._weight_int8pack_mm(x, i8[i % len(i8)][0], i8[i % len(i8)][1]),
            flops=flops, nbytes=N * K + N * es + act)
        nbytes = N * K + N * 4 + act
        if squash.prepacked:
            if pk_err:
                ctx.skip("squash", case, pk_err)
            else:
                op = torch.ops.squash.w8a16_gemm_prepacked
                guard.measure(SUITE, case, "squash", params,
                              lambda: lambda i: op(x, pk[i % len(pk)][0], pk[i % len(pk)][1], K, None),
                              flops=flops, nbytes=nbytes)
        if squash.canonical and M in CANONICAL_MS:
            op_c = torch.ops.squash.w8a16_gemm
            guard.measure(SUITE, case, "squash:canonical", params,
                          lambda: lambda i: op_c(x, sq[i % len(sq)][0], sq[i % len(sq)][1], None),
                          flops=flops, nbytes=nbytes)
