"""cpu_decode: greedy decode of a Llama-3.2-1B-shaped model (random weights) on the CPU, batch 1:
torch_fp32 and torch_bf16 (the float model, eager) vs squash W4A16 g128, same decode loop.

Model: transformers' LlamaForCausalLM with Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 query
/ 8 KV heads, intermediate 8192, vocab 128256, lm_head tied to the embedding: 1.24 B parameters),
random weights, no download. It is built once in float32 (impl torch_fp32), then cast to bf16
(torch_bf16), then every linear becomes a W4A16Linear g128 through ``replace_linear`` on the bf16
model (compute dtype bf16), prepacked in the CPU layout as ``replace_linear`` does on the CPU
(impl squash). The tied lm_head is quantized too (named in ``overrides``; the embedding table
stays bf16 for the lookup): at batch 1 it is 0.26 B of the 1.24 B parameters, read every token.
Attention is transformers' SDPA in every impl.

Decode loop (squash_ops.hf.GreedyDecoder, eager): a PROMPT-token prefill into a StaticCache
(not timed), then one timed call = STEPS greedy tokens from the rewound cache; tokens/s =
STEPS / median_us * 1e6. gbps counts the linear weights read per token in each impl's format.
Goal (TARGETS.md): squash >= 4x the tokens/s of torch_fp32.
"""

from __future__ import annotations

import torch

from ..harness import Context, Timer, log

BUDGET_WEIGHT = 40
SUITE = "cpu_decode"
GROUP = 128
PROMPT = 16


def llama32_1b_config():
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=8192,
                       rope_theta=500000.0, tie_word_embeddings=True)


def linear_params(cfg) -> int:
    h, i, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_key_value_heads * cfg.head_dim
    return cfg.num_hidden_layers * (2 * h * h + 2 * h * kv + 3 * h * i) + h * cfg.vocab_size


def make_call(model, cfg, steps: int):
    from squash_ops.hf import GreedyDecoder

    prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT))
    dec = GreedyDecoder(model, prompt, steps + 1)
    dec.generate()
    if not bool(torch.isfinite(dec.logits).all()):
        raise RuntimeError("non-finite logits after a decode run")
    return lambda i: dec.generate()


def run(ctx: Context) -> None:
    from transformers import LlamaForCausalLM

    from squash_ops.quant import W4A16Config, replace_linear

    steps = 8 if ctx.quick else 16
    cfg = llama32_1b_config()
    params = {"batch": 1, "hidden": cfg.hidden_size, "heads_q": cfg.num_attention_heads,
              "heads_kv": cfg.num_key_value_heads, "head_dim": cfg.head_dim, "seqlen_k": PROMPT + steps,
              "tokens": steps, "group": GROUP, "dtype": "bf16"}
    case = f"Llama-3.2-1B B=1 prompt={PROMPT} decode={steps} w4a16-g{GROUP} eager"
    n_lin = linear_params(cfg)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    model.set_attn_implementation("sdpa")
    # A call is a whole generation (seconds): the harness's CPU timer then runs a warm-up call, a
    # probe call and records the median of 2 timed calls ("reps 2" in the log).
    timer, ctx.timer = ctx.timer, Timer("cpu")
    try:
        def measure(impl, nbytes_per_token):
            rec = ctx.measure(SUITE, case, impl, params, lambda: make_call(model, cfg, steps),
                              nbytes=nbytes_per_token * steps)
            if rec:
                log(f"cpu_decode {impl}: {steps / rec['median_us'] * 1e6:.2f} tokens/s")

        measure("torch_fp32", 4 * n_lin)
        model.to(torch.bfloat16)
        measure("torch_bf16", 2 * n_lin)
        if not ctx.has_squash("w4a16_gemm_cpu_prepacked"):
            ctx.skip("squash", case, "squash_ops has no w4a16_gemm_cpu_prepacked kernel here")
            return
        report = replace_linear(model, W4A16Config(group_size=GROUP), overrides={"lm_head": W4A16Config(GROUP)})
        log(f"cpu_decode: replace_linear quantized {len(report.replaced)} linears (lm_head included), "
            f"skipped {len(report.skipped)}")
        measure("squash", n_lin // 2 + (n_lin // GROUP) * 4)
    finally:
        ctx.timer = timer
        del model
