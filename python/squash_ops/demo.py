"""The README's main job (for now): every op family once, on a Llama-like layer, with its error
against a float64 reference and its time. Runs on the CPU references anywhere and on the CUDA
kernels where they exist.

    python -m squash_ops.demo [--device cpu|cuda] [--hidden 1024] [--tokens 16]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import squash_ops


def _time_ms(fn, device: torch.device, reps: int = 5) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if squash_ops.cuda_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    dev = torch.device(args.device)
    dtype = torch.bfloat16
    K = N = args.hidden
    rows = []

    def run(name: str, op: str, fn_dev, ref: torch.Tensor, weight_bytes: int | None = None):
        device = dev if (dev.type == "cpu" or squash_ops.has_cuda_kernel(op)) else cpu
        out = fn_dev(device)
        rows.append((name, device.type, _rel_err(out, ref), _time_ms(lambda: fn_dev(device), device), weight_bytes))

    w = torch.randn(N, K) / K**0.5
    x = torch.randn(args.tokens, K).to(dtype)

    # Weight-only GEMM: the reference is fp64 dequantize-then-matmul of the same weights.
    qw4, s4, z4 = squash_ops.quantize_int4_weight(w, group_size=128, symmetric=False)
    w4 = squash_ops.dequantize_int4_weight(qw4, s4, z4, group_size=128)
    run("w4a16_gemm g128", "w4a16_gemm",
        lambda d: squash_ops.w4a16_gemm(x.to(d), qw4.to(d), s4.to(d), zeros=z4.to(d), group_size=128),
        x.double() @ w4.double().T, qw4.numel() + 4 * s4.numel() + z4.numel())
    qw8, s8 = squash_ops.quantize_int8_weight(w)
    w8 = squash_ops.dequantize_int8_weight(qw8, s8)
    run("w8a16_gemm", "w8a16_gemm",
        lambda d: squash_ops.w8a16_gemm(x.to(d), qw8.to(d), s8.to(d)),
        x.double() @ w8.double().T, qw8.numel() + 4 * s8.numel())

    # Norms: LayerNorm with a residual, and its gamma-migrated int8 form feeding W8A8.
    res = torch.randn(args.tokens, K).to(dtype)
    gamma, beta = 1 + 0.1 * torch.randn(K), 0.1 * torch.randn(K)
    h = (x.float() + res.float()).to(dtype)
    ln_ref = F.layer_norm(h.double(), (K,), gamma.double(), beta.double(), 1e-5)
    run("add_layer_norm", "add_layer_norm",
        lambda d: squash_ops.layer_norm(x.to(d), gamma.to(d), beta.to(d), 1e-5, residual=res.to(d))[0],
        ln_ref)
    # Gamma migration: W' = W * gamma (per input column), the norm keeps beta/gamma only.
    qwm, swm = squash_ops.quantize_int8_weight(w * gamma)
    wm = squash_ops.dequantize_int8_weight(qwm, swm)

    def w8a8_path(d):
        q, qs = squash_ops.layer_norm_quant(h.to(d), None, (beta / gamma).to(d), 1e-5)
        return squash_ops.w8a8_gemm(q, qs, qwm.to(d), swm.to(d), out_dtype=dtype)

    run("layer_norm_quant -> w8a8_gemm", "w8a8_gemm", w8a8_path, ln_ref @ w.double().T)
    del wm

    # Attention: causal GQA prefill and one decode step against a cache.
    B, S, Hq, Hkv, D = 2, 128, 8, 2, 64
    q = torch.randn(B, S, Hq, D).to(dtype)
    k = torch.randn(B, S, Hkv, D).to(dtype)
    v = torch.randn(B, S, Hkv, D).to(dtype)
    kr, vr = (t.double().repeat_interleave(Hq // Hkv, dim=2).transpose(1, 2) for t in (k, v))
    attn_ref = F.scaled_dot_product_attention(q.double().transpose(1, 2), kr, vr, is_causal=True).transpose(1, 2)
    run("attention causal GQA", "attention",
        lambda d: squash_ops.attention(q.to(d), k.to(d), v.to(d), causal=True), attn_ref)
    lens = torch.full((B,), S, dtype=torch.int32)
    run("attention_decode (last token)", "attention_decode",
        lambda d: squash_ops.attention_decode(q[:, -1:].to(d), k.to(d), v.to(d), lens.to(d)),
        attn_ref[:, -1:])

    print(f"squash_ops demo: hidden {K}, {args.tokens} tokens, {dtype}, torch {torch.__version__}")
    print(f"{'op':34} {'device':6} {'rel err vs fp64':>16} {'time ms':>9} {'weight bytes vs bf16':>21}")
    for name, device, err, ms, wbytes in rows:
        ratio = f"{wbytes / (2 * N * K):.3f}x" if wbytes else ""
        print(f"{name:34} {device:6} {err:16.2e} {ms:9.3f} {ratio:>21}")


if __name__ == "__main__":
    main()
