"""cpu_w8a8: one W8A8 linear layer on the CPU (float32 in and out, dynamic per-token int8
activations) at the encoder shapes of MiniLM and BERT-base, against float and torch's int8.

Impls per case (x float32 [M, K], weight [N, K], bias [N]):
  - torch_fp32: F.linear in float32 (MKL / oneDNN);
X
    activation quantization inside, int8 GEMM, float output), what quantize_dynamic installs;
  - int_mm: torch._int_mm on pre-quantized int8 inputs, then the scales in torch (squash's CPU path
    before this kernel);
  - squash: W8A8Linear's forward (quantize_activation_int8 + w8a8_gemm, scales and bias in the
    epilogue).
All impls include their activation quantization except int_mm. Weights are small enough to stay
in cache between calls, as they do in an encoder layer run over a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..harness import Context, log

BUDGET_WEIGHT = 20
SUITE = "cpu_w8a8"
# (N, K): MiniLM q/k/v/o, FFN in, FFN out; BERT-base the same three.
SHAPES = [(384, 384), (1536, 384), (384, 1536), (768, 768), (3072, 768), (768, 3072)]
MS = [16, 128, 512]


def run(ctx: Context) -> None:
    import squash_ops
    from squash_ops.quant import W8A8Config
    from squash_ops.quant.linear import W8A8Linear

    log(f"cpu_w8a8: squash CPU kernels on the {squash_ops.cpu.active_isa()} path, {torch.get_num_threads()} threads")
    shapes, ms = (SHAPES[:3], [128]) if ctx.quick else (SHAPES, MS)
    for N, K in shapes:
        lin = nn.Linear(K, N).eval()
        dyn = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)
        sq = W8A8Linear.from_linear(lin, W8A8Config(activation="dynamic")) if ctx.has_squash("w8a8_gemm") else None
        for M in ms:
            if ctx.out_of_time():
                return
            x = torch.randn(M, K)
            xq = torch.randint(-127, 128, (M, K), dtype=torch.int8)
            xs, wq, ws = torch.rand(M, 1) * 1e-2, torch.randint(-127, 128, (K, N), dtype=torch.int8), torch.rand(N) * 1e-2
            flops = 2 * M * N * K
            impls = [("torch_fp32", lambda: lambda i: F.linear(x, lin.weight, lin.bias), flops, None),
                     ("torch_dynamic_int8", lambda: lambda i: dyn(x), flops, None),
                     ("int_mm", lambda: lambda i: torch._int_mm(xq, wq).float() * xs * ws + lin.bias, flops, None)]
            if sq is not None:
                impls.append(("squash", lambda: lambda i: sq(x), flops, None))
            with torch.no_grad():
                ctx.measure_interleaved(SUITE, f"M={M} N={N} K={K} fp32", {"M": M, "N": N, "K": K, "dtype": "fp32"},
                                        impls)
