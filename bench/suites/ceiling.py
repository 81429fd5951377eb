"""Ceilings measured in every run: device copy bandwidth and dense bf16 / int8 GEMM throughput."""

import torch

from ..harness import Context, rand

BUDGET_WEIGHT = 4
SUITE = "ceiling"


def run(ctx: Context) -> None:
    copy_bytes = 8 * 2**20 if ctx.tiny else 2**30  # 1 GiB: far beyond L2, no rotation needed
    n = 256 if ctx.tiny else 8192

    src = torch.empty(copy_bytes // 4, dtype=torch.float32, device=ctx.device)
    if not ctx.dry_run:
        src.uniform_()
    dst = torch.empty_like(src)
    # Bytes read + written (TARGETS.md).
    ctx.measure(SUITE, f"copy {copy_bytes // 2**20} MiB", "copy", {}, lambda: lambda i: dst.copy_(src),
                nbytes=2 * copy_bytes)
    del src, dst

    a, b = rand(ctx, (n, n), torch.bfloat16), rand(ctx, (n, n), torch.bfloat16)
    ctx.measure(SUITE, f"bf16 {n}^3", "bf16_gemm", {"M": n, "N": n, "K": n, "dtype": "bf16"},
                lambda: lambda i: torch.matmul(a, b), flops=2 * n**3, nbytes=3 * 2 * n * n)
    del a, b

    # torch._int_mm wants the second operand column-major (cuBLASLt's int8 "TN" layout).
    qa, qw = rand(ctx, (n, n), torch.int8), rand(ctx, (n, n), torch.int8)
    ctx.measure(SUITE, f"int8 {n}^3", "int8_gemm", {"M": n, "N": n, "K": n, "dtype": "int8"},
                lambda: lambda i: torch._int_mm(qa, qw.t()), flops=2 * n**3, nbytes=2 * n * n + 4 * n * n)
    del qa, qw
    ctx.free()
