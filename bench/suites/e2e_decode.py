"""End-to-end greedy decode of a Llama-3-8B-shaped model (random weights), batch 1: the W4A16 g128
model with squash attention vs the bf16 model with SDPA, same run, same decode loop.

Model: transformers' LlamaForCausalLM with Llama-3-8B's shape (hidden 4096, 32 layers, 32 query /
8 KV heads, head_dim 128, intermediate 14336, vocab 128256, untied lm_head: 8.03 B parameters),
random weights initialized directly on the GPU in bf16 (16 GB; no CPU or fp32 copy). It runs
first as is (impl ``cublas``: its F.linear layers are cuBLAS bf16, attention is SDPA). Then
every nn.Linear, lm_head included (as torchao's int4 weight-only numbers count it), is replaced in
place by a W4A16Linear whose packed int4 weights and g128 scales are drawn at random on the GPU
(quantizing random weights would only cost time: the speed does not depend on the values), then
put in the prepacked layout as ``replace_linear`` does on CUDA (``w4a16_gemm_prepacked``: the
small-M tensor-core kernel for decode, dequantize + cuBLAS for the prefill's larger M), and
attention switches to ``set_attn_implementation("squash")`` (impl ``squash``). On the CPU the
layers take the CPU prepacked layout (``w4a16_gemm_cpu_prepacked``), as ``replace_linear`` does
there (the CPU benchmark of decode is the cpu_decode suite).

Decode loop (squash_ops.hf.GreedyDecoder): a PROMPT-token prefill into a StaticCache, then one
forward per token whose argmax is fed back on the device. On CUDA one step is captured in a CUDA
graph and replayed per token (case "... cudagraph"); with ``E2E_COMPILE=1`` in the environment the
step is also compiled with torch.compile(fullgraph=True) before the capture (case
"... compile+cudagraph"; compiling both 8B models takes minutes, so it is off by default). On the
CPU (smoke test, tiny shape) the steps run eagerly (case "... eager").

One timed call = ``DECODE_STEPS`` tokens from the rewound cache (the prefill is not timed):
median_us is that call, tokens/s = DECODE_STEPS / median_us * 1e6. gbps counts what a step must
read: the linear weights in each impl's format (bf16, or int4 + fp32 scales) plus the K/V cache
at that step's length (the same logical bytes for both impls). Goal (TARGETS.md): squash >= 2.8x
the tokens/s of cublas.
"""

from __future__ import annotations

import os

import torch

from ..harness import Context, Timer

BUDGET_WEIGHT = 20
SUITE = "e2e_decode"
GROUP = 128


def llama3_8b_config():
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                       tie_word_embeddings=False)


def tiny_config():
    """Same structure at smoke-test size (GQA 2:1, head_dim 32; K multiples of 128 for g128)."""
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False)


def config(ctx: Context):
    """(model config, prompt length, decode steps timed per call)."""
    if ctx.tiny:
        return tiny_config(), 4, 4
    return llama3_8b_config(), 16, 32 if ctx.quick else 128


def modes(ctx: Context) -> list[str]:
    if ctx.device == "cpu":
        return ["eager"]
    return ["cudagraph"] + (["compile+cudagraph"] if os.environ.get("E2E_COMPILE") == "1" else [])


def linear_shapes(cfg) -> list[tuple[int, int]]:
    """(K, N) of every nn.Linear of the model, lm_head included."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * d
    layer = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o gate up down
    return layer * cfg.num_hidden_layers + [(h, cfg.vocab_size)]


def bytes_per_call(cfg, impl: str, prompt_len: int, steps: int) -> int:
    """Weights read per step in the impl's format, plus K/V at each step's length."""
    if impl == "squash":
        weights = sum(n * k // 2 + n * (k // GROUP) * 4 for k, n in linear_shapes(cfg))
    else:
        weights = sum(2 * n * k for k, n in linear_shapes(cfg))
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    kv = sum(kv_per_token * (prompt_len + 1 + t) for t in range(steps))
    return steps * weights + kv


class _Model:
    """The one model of the run: built in bf16 on first use, turned into the squash model once."""

    def __init__(self, ctx: Context, cfg):
        self.ctx, self.cfg = ctx, cfg
        self.model = None
        self.impl = None

    def get(self, impl: str):
        if self.model is None:
            self.model = build_bf16(self.cfg, self.ctx.device)
            self.impl = "cublas"
        if impl == "squash" and self.impl != "squash":
            to_squash(self.model)
            self.impl = "squash"
        if impl != self.impl:
            raise RuntimeError(f"e2e_decode: the model is already the {self.impl} model; measure cublas first")
        return self.model


def build_bf16(cfg, device):
    """The bf16 model with random weights, created on `device` directly (no CPU/fp32 copy)."""
    from transformers import LlamaForCausalLM
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.eval().requires_grad_(False)
    model.set_attn_implementation("sdpa")
    return model


def to_squash(model) -> None:
    """Every nn.Linear -> W4A16Linear g128 with random int4 weights and scales (made on the
    weights' device; the bf16 weights are freed), and squash attention."""
    import squash_ops.hf  # noqa: F401  (registers "squash" with transformers)
    from squash_ops.quant import W4A16Config, W4A16Linear

    # Parents only: a list of every module would keep each replaced bf16 layer alive to the end.
    parents = [m for m in model.modules() if any(isinstance(c, torch.nn.Linear) for c in m.children())]
    for parent in parents:
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            w = child.weight
            q = W4A16Linear(child.in_features, child.out_features, bias=child.bias is not None,
                            config=W4A16Config(group_size=GROUP), compute_dtype=w.dtype, device=w.device)
            q.qweight.random_(0, 256)
            # int4 values -8..7 have std ~4.6: scales ~0.02/4.6 keep the weights' std at the
            # model's init std (0.02), so activations stay in range through 32 layers.
            q.scales.uniform_(0.003, 0.0057)
            # As replace_linear / load_quantized do: the prepacked layout of the device (CUDA:
            # the small-M tensor-core kernel), converted layer by layer so only one canonical
            # copy exists.
            if q.prepack_pays():
                q.prepack()
            setattr(parent, name, q)
    model.set_attn_implementation("squash")


def make_call(ctx: Context, model, cfg, prompt_len: int, steps: int, mode: str):
    """The timed call of one impl and mode: `steps` greedy tokens from the rewound cache."""
    from squash_ops.hf import GreedyDecoder

    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_len), device=ctx.device)
    dec = GreedyDecoder(model, prompt, steps + 1, compile=mode.startswith("compile"))
    if mode.endswith("cudagraph"):
        dec.capture()
    dec.generate()
    if not bool(torch.isfinite(dec.logits).all()):  # one sync, before timing
        raise RuntimeError("non-finite logits after a decode run")
    return lambda i: dec.generate()


def run(ctx: Context) -> None:
    cfg, prompt_len, steps = config(ctx)
    shape = "Llama-3-8B" if not ctx.tiny else "tiny-llama"
    squash = ctx.has_squash("w4a16_gemm_prepacked") and ctx.has_squash("attention_decode")
    params = {"batch": 1, "hidden": cfg.hidden_size, "heads_q": cfg.num_attention_heads,
              "heads_kv": cfg.num_key_value_heads, "head_dim": cfg.hidden_size // cfg.num_attention_heads,
              "seqlen_k": prompt_len + steps, "tokens": steps, "group": GROUP, "dtype": "bf16"}
    model = _Model(ctx, cfg)
    # A call is a whole generation (seconds for bf16 at 8B): time 3 back-to-back calls after the
    # warm-up instead of the harness's single-call rule for calls over 0.25 s.
    timer, ctx.timer = ctx.timer, Timer(ctx.device, min_reps=3, max_reps=5, long_call_s=float("inf"))
    try:
        if ctx.dry_run:
            ctx.note_compile(10.0)  # building the 8B model and capturing the graphs
        for impl in ("cublas", "squash"):
            for mode in modes(ctx):
                case = f"{shape} B=1 prompt={prompt_len} decode={steps} w4a16-g{GROUP} bf16 {mode}"
                if impl == "squash" and not squash:
                    ctx.skip(impl, case, "squash_ops has no w4a16_gemm/attention_decode kernel for this device")
                    continue
                ctx.measure(SUITE, case, impl, params,
                            lambda impl=impl, mode=mode: make_call(ctx, model.get(impl), cfg, prompt_len, steps, mode),
                            nbytes=bytes_per_call(cfg, impl, prompt_len, steps))
    finally:
        ctx.timer = timer
        del model
        ctx.free()
