"""cpu_woq: W4A16 (g128) and W8A16 (per channel) linear layers on the CPU at decode-size M, vs
torch's float linear and torch's own weight-only CPU kernels, all impls of a case interleaved.

Shapes (N x K): the Llama-3.2-1B layers (2048x2048 q/o, 8192x2048 gate/up, 2048x8192 down) and
Llama-3-8B's (4096x4096, 14336x4096, 4096x14336). Activations bf16, M = 1, 4, 16, 64.
Impls per case:
  - torch_fp32: F.linear in float32 (x float32, weight float32);
  - torch_bf16: F.linear in bfloat16;
  - int4pack_cpu (W4A16 cases): aten._weight_int4pack_mm_for_cpu on the weight converted once by
    aten._convert_weight_to_int4pack_for_cpu, bf16 scales-and-zeros [K/g, N, 2];
  - int8pack (W8A16 cases): aten._weight_int8pack_mm(x, int8 [N, K], bf16 scales [N]);
  - squash: w4a16_gemm_cpu_prepacked / w8a16_gemm_cpu_prepacked on weights prepacked once (what
    replace_linear makes on the CPU); the ISA path is the detected one (squash_ops.cpu).
Weights are random codes (the speed does not depend on their values). Small weights would sit in
the 32 MiB L3 between calls, where a model streams them from memory: each impl rotates through
enough copies of its weights that >= 64 MiB are touched between two uses of one copy.
Goals (TARGETS.md): W4A16 M=1 >= 5x torch_fp32 and >= 2x int4pack_cpu; W8A16 M=1 >= 3x
torch_fp32; squash never below torch_fp32 up to M=64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..harness import Context, log

BUDGET_WEIGHT = 60
SUITE = "cpu_woq"
GROUP = 128
# (N, K): Llama-3.2-1B, then Llama-3-8B.
SHAPES = [(2048, 2048), (8192, 2048), (2048, 8192), (4096, 4096), (14336, 4096), (4096, 14336)]
MS = [1, 4, 16, 64]
COLD_BYTES = 64 * 2**20  # 2x the L3 of this machine (32 MiB)


def config(ctx: Context):
    if ctx.quick:
        return [(8192, 2048), (4096, 4096)], [1, 16]
    return SHAPES, MS


def copies(nbytes: int) -> int:
    return max(1, min(32, math.ceil(COLD_BYTES / nbytes)))


def run(ctx: Context) -> None:
    import squash_ops

    log(f"cpu_woq: squash CPU kernels on the {squash_ops.cpu.active_isa()} path "
        f"(detected {squash_ops.cpu.detected_isa()}), {torch.get_num_threads()} torch threads")
    shapes, ms = config(ctx)
    has4, has8 = ctx.has_squash("w4a16_gemm_cpu_prepacked"), ctx.has_squash("w8a16_gemm_cpu_prepacked")
    for N, K in shapes:
        if ctx.out_of_time():
            return
        run_shape(ctx, N, K, ms, has4, has8)


def _rot(ws):
    return lambda i: ws[i % len(ws)]


def run_shape(ctx: Context, N: int, K: int, ms: list[int], has4: bool, has8: bool) -> None:
    g, dt = GROUP, torch.bfloat16
    w32 = [torch.randn(N, K) * 0.02 for _ in range(copies(4 * N * K))]
    w16 = [w.to(dt) for w in w32[: copies(2 * N * K)]]
    n4, n8 = copies(N * K // 2), copies(N * K)
    codes = [torch.randint(0, 16, (N, K), dtype=torch.int32) for _ in range(n4)]
    scales4 = [torch.rand(N, K // g) * 1e-2 + 1e-3 for _ in range(n4)]
    # torch's int4 CPU kernel: int32 codes [N, K] 0..15 -> its packed layout; scales and zeros
    # bf16 [K/g, N, 2] (BUILD_NOTES.md).
    i4 = [(torch.ops.aten._convert_weight_to_int4pack_for_cpu(c, 1), torch.stack(
        [s.T.to(dt), torch.full_like(s.T, 8.0).to(dt)], -1).contiguous()) for c, s in zip(codes, scales4)]
    q8 = [torch.randint(-127, 128, (N, K), dtype=torch.int8) for _ in range(n8)]
    s8 = [torch.rand(N) * 1e-2 + 1e-3 for _ in range(n8)]
    pk4 = pk8 = None
    if has4:
        pk4 = [squash_ops_prepack4(c, s) for c, s in zip(codes, scales4)]
    if has8:
        pk8 = [torch.ops.squash.cpu_prepack_int8_weight(q, s) for q, s in zip(q8, s8)]
    del codes
    W32, W16, I4, PK4, PK8 = _rot(w32), _rot(w16), _rot(i4), _rot(pk4) if pk4 else None, _rot(pk8) if pk8 else None
    Q8 = _rot(list(zip(q8, [s.to(dt) for s in s8])))
    for M in ms:
        if ctx.out_of_time():
            return
        x = torch.randn(M, K, dtype=dt)
        xf = x.float()
        act = M * K * 2 + M * N * 2
        flops = 2 * M * N * K
        fp32 = ("torch_fp32", lambda: lambda i: F.linear(xf, W32(i)), flops, N * K * 4 + act * 2)
        bf16 = ("torch_bf16", lambda: lambda i: F.linear(x, W16(i)), flops, N * K * 2 + act)
        w4_bytes = N * K // 2 + N * (K // g) * 4 + act
        impls = [fp32, bf16,
                 ("int4pack_cpu", lambda: lambda i: torch.ops.aten._weight_int4pack_mm_for_cpu(x, I4(i)[0], g, I4(i)[1]),
                  flops, N * K // 2 + N * (K // g) * 4 + act)]
        if PK4:
            impls.append(("squash", lambda: lambda i: torch.ops.squash.w4a16_gemm_cpu_prepacked(
                x, *PK4(i), N, g), flops, w4_bytes))
        ctx.measure_interleaved(SUITE, f"w4a16 M={M} N={N} K={K} g={g} bf16",
                                {"M": M, "N": N, "K": K, "group": g, "dtype": "bf16"}, impls)
        impls = [fp32, bf16,
                 ("int8pack", lambda: lambda i: torch.ops.aten._weight_int8pack_mm(x, *Q8(i)), flops, N * K + N * 2 + act)]
        if PK8:
            impls.append(("squash", lambda: lambda i: torch.ops.squash.w8a16_gemm_cpu_prepacked(x, *PK8(i), N),
                          flops, N * K + N * 4 + act))
        ctx.measure_interleaved(SUITE, f"w8a16 M={M} N={N} K={K} bf16",
                                {"M": M, "N": N, "K": K, "group": -1, "dtype": "bf16"}, impls)


def squash_ops_prepack4(codes: torch.Tensor, scales: torch.Tensor):
    """int32 codes [N, K] 0..15 -> canonical bytes (element 2j in the low nibble) -> CPU layout,
    symmetric (zero point 8)."""
    c = codes.to(torch.uint8)
    q = c[:, 0::2] | (c[:, 1::2] << 4)
    packed, sp, _ = torch.ops.squash.cpu_prepack_int4_weight(q, scales, None, GROUP)
    return packed, sp, None
