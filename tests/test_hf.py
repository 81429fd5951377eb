"""transformers integration: ``set_attn_implementation("squash")`` vs SDPA on tiny models built
from configs (Llama with GQA, OPT, BERT): padded and unpadded batches, generate() with dynamic
and static caches, the routing to the three ops, what is refused (and the SDPA fallback), the
greedy decoder, torch.compile(fullgraph=True) of a W4A16-quantized tiny Llama and (gpu) its
CUDA-graph capture and replay.

Tolerances (fp32 on CPU): SDPA and the ops do the same fp32 math in a different order, so
logits differ by rounding only (measured: max 4e-6 at logit scale ~6, i.e. 7e-7 relative); the
bound 2e-5 x scale leaves 30x margin, while a wrong mask, scale, causal alignment or GQA head mapping
moves logits by 1e-2 or more.
"""

import copy
import logging

import pytest
import torch
from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, OPTConfig, OPTForCausalLM)
from transformers.masking_utils import bidirectional_mask_function, causal_mask_function, sdpa_mask

import squash_ops
import squash_ops.hf
from squash_ops.hf import GreedyDecoder, LengthsMask, PaddedMask
from squash_ops.hf.decode import cache_kwarg

from helpers import rel_mean_err

VOCAB = 300
# Awkward sizes: head_dim 16 with a GQA group of 3 (Llama), 4 heads of 16 (OPT, BERT); init 0.1 so
# attention is far from uniform and greedy tokens vary (with 0.02 a tiny model repeats one token;
# OPT needs 0.2).
LLAMA = dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, vocab_size=VOCAB, initializer_range=0.1, pad_token_id=0)
OPT = dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB,
           max_position_embeddings=64, word_embed_proj_dim=64, init_std=0.2, pad_token_id=1)
BERT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB,
            initializer_range=0.1)


def build(name):
    torch.manual_seed(0)
    if name == "llama":
        return LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    if name == "opt":
        return OPTForCausalLM(OPTConfig(**OPT)).eval()
    return BertModel(BertConfig(**BERT)).eval()


@pytest.fixture(scope="module")
def models():
    return {name: build(name) for name in ("llama", "opt", "bert")}


def batch(pad_lens, seq, side, pad_id):
    """Random ids [B, seq] with pad_lens[b] padding tokens on the left or right."""
    ids = torch.randint(3, VOCAB, (len(pad_lens), seq))
    mask = torch.ones_like(ids)
    for b, n in enumerate(pad_lens):
        if side == "left":
            mask[b, :n] = 0
        else:
            mask[b, seq - n:] = 0
    ids[mask == 0] = pad_id
    return ids, mask


def forward(model, impl, ids, mask=None, **kw):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, **kw)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def assert_close_to_sdpa(got, ref, rows=None):
    if rows is not None:  # padded rows are not compared: no unpadded position reads them
        got, ref = got[rows], ref[rows]
    assert torch.isfinite(got).all()
    err, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    assert err <= 2e-5 * max(scale, 1.0), (err, scale)


# ---------------------------------------------------------------------------------------------
# forward and generate vs SDPA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama", "opt", "bert"])
@pytest.mark.parametrize("pad_lens, side", [
    ([0, 0, 0], None),            # unpadded
    ([4, 0, 1], "left"),
    ([0, 3, 12], "right"),        # one sequence with a single real token
])
def test_forward_matches_sdpa(models, name, pad_lens, side):
    model = models[name]
    pad_id = model.config.pad_token_id or 0
    ids, mask = batch(pad_lens, 13, side or "left", pad_id)
    ref = forward(model, "sdpa", ids, mask)
    got = forward(model, "squash", ids, mask)
    assert_close_to_sdpa(got, ref, mask.bool())


def test_forward_without_mask_matches_sdpa(models):
    ids = torch.randint(3, VOCAB, (2, 11))
    for name in ("llama", "opt", "bert"):
        assert_close_to_sdpa(forward(models[name], "squash", ids), forward(models[name], "sdpa", ids))


def test_padding_changes_the_result(models):
    """The comparisons above can fail: without its mask (what transformers passes a custom
    attention implementation when no mask builder is registered) the padded batch differs."""
    ids, mask = batch([4, 0, 1], 13, "left", 0)
    ref = forward(models["llama"], "sdpa", ids, mask)
    unmasked = forward(models["llama"], "squash", ids)
    rows = mask.bool()
    rows[1] = False  # the unpadded sequence is the same either way
    assert (unmasked[rows] - ref[rows]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["llama", "opt"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_generate_matches_sdpa(models, name, cache):
    """Greedy generate() on a left-padded batch: same tokens, and per-step logits within rounding."""
    model = models[name]
    pad_id = model.config.pad_token_id
    ids, mask = batch([3, 0, 5], 9, "left", pad_id)
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=pad_id,
              return_dict_in_generate=True, output_logits=True)
    if cache == "static":
        kw["cache_implementation"] = "static"
    outs = {}
    for impl in ("sdpa", "squash"):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            outs[impl] = model.generate(ids, **kw)
    ref, got = outs["sdpa"], outs["squash"]
    assert torch.equal(got.sequences, ref.sequences)
    assert len(set(ref.sequences[:, 9:].flatten().tolist())) > 5  # not one repeated token
    for g, r in zip(got.logits, ref.logits):
        assert_close_to_sdpa(g, r)


# ---------------------------------------------------------------------------------------------
# routing: which op serves which call
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def op_calls(monkeypatch):
    calls = []
    for op in ("attention", "attention_varlen", "attention_decode"):
        real = getattr(squash_ops.ops, op)

        def spy(*args, _real=real, _op=op, **kw):
            calls.append((_op, kw["causal"], tuple(args[0].shape)))
            return _real(*args, **kw)
        monkeypatch.setattr(squash_ops.ops, op, spy)
    return calls


def test_routing(models, op_calls):
    llama, bert = models["llama"], models["bert"]
    ids = torch.randint(3, VOCAB, (2, 13))
    forward(llama, "squash", ids)  # prefill without padding: the dense op, causal, per layer
    assert op_calls == [("attention", True, (2, 13, 6, 16))] * 2
    op_calls.clear()
    # Decode step on a DynamicCache: 1 query row x GQA group 3 <= 8 rows -> the decode kernel.
    llama.set_attn_implementation("squash")
    with torch.no_grad():
        out = llama(ids, use_cache=True)
        op_calls.clear()
        llama(ids[:, :1], **{cache_kwarg(llama): out[cache_kwarg(llama)]})
    assert op_calls == [("attention_decode", True, (2, 1, 6, 16))] * 2
    op_calls.clear()
    # Left padding: packed tokens; causal queries packed too (2 x 13 slots).
    ids, mask = batch([4, 0], 13, "left", 0)
    forward(llama, "squash", ids, mask)
    assert op_calls == [("attention_varlen", True, (26, 6, 16))] * 2
    op_calls.clear()
    # An all-ones mask is dropped (eager): the dense op again.
    forward(llama, "squash", ids, torch.ones_like(mask))
    assert [c[0] for c in op_calls] == ["attention"] * 2
    op_calls.clear()
    # BERT: non-causal; padded keys packed, queries dense.
    forward(bert, "squash", ids, mask)
    assert op_calls == [("attention_varlen", False, (26, 4, 16))] * 2


def test_routing_static_cache(models, op_calls):
    """A StaticCache hands every layer its whole buffer: attention_decode with the filled length."""
    llama = models["llama"]
    llama.set_attn_implementation("squash")
    with torch.no_grad():
        GreedyDecoder(llama, torch.randint(3, VOCAB, (2, 5)), 3).generate()
    assert {c[0] for c in op_calls} == {"attention_decode"}
    assert [c[2][1] for c in op_calls] == [5, 5, 1, 1, 1, 1]  # prefill, then 2 steps x 2 layers


# ---------------------------------------------------------------------------------------------
# the mask objects: their dense form equals transformers' SDPA mask (the fallback relies on it)
# ---------------------------------------------------------------------------------------------


def squash_mask(**kw):
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    return ALL_MASK_ATTENTION_FUNCTIONS["squash"](**kw)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("q_length, q_offset, kv_length, static", [
    (7, 0, 7, False),    # prefill
    (1, 9, 10, False),   # decode, DynamicCache
    (3, 6, 16, True),    # chunk into a StaticCache of 16
    (2, 5, 9, False),    # more keys than past + new with an int offset: lengths built on the host side
])
def test_mask_dense_form_matches_sdpa_mask(causal, q_length, q_offset, kv_length, static):
    # Keys that exist: past + new tokens; bidirectional attention without a cache sees all kv_length.
    B, filled = 3, (q_offset + q_length if causal or static else kv_length)
    pad = torch.ones(B, filled, dtype=torch.bool)
    pad[0, :2] = False  # left padding
    pad[2, 4] = False   # a hole
    fn = causal_mask_function if causal else bidirectional_mask_function
    offset = torch.tensor(q_offset) if static else q_offset
    for attention_mask in (pad, None):
        kw = dict(batch_size=B, q_length=q_length, kv_length=kv_length, q_offset=offset, kv_offset=0,
                  mask_function=fn, attention_mask=attention_mask)
        ours = squash_mask(**kw)
        if ours is None:  # only when every key is valid and there is no padding
            assert attention_mask is None and not static and kv_length == filled
            continue
        assert isinstance(ours, PaddedMask if attention_mask is not None else LengthsMask)
        dense = ours.dense(q_length, kv_length)
        ref = sdpa_mask(**kw, allow_is_causal_skip=False).expand_as(dense)
        # Keys past the filled length of a static cache are stale: never attended here (SDPA's
        # bidirectional mask without padding would read them).
        assert torch.equal(dense[..., :filled], ref[..., :filled])
        assert not dense[..., filled:].any()


def test_mask_passes_through_a_prebuilt_one():
    m = LengthsMask(True, torch.tensor([4, 4], dtype=torch.int32))
    assert squash_mask(batch_size=2, q_length=1, kv_length=8, attention_mask=m) is m


# ---------------------------------------------------------------------------------------------
# what the ops cannot express: a clear error, or SDPA when registered with fallback="sdpa"
# ---------------------------------------------------------------------------------------------


def mistral(sliding_window):
    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, sliding_window=sliding_window, initializer_range=0.1)).eval()


def test_refuses_sliding_window():
    model = mistral(4)
    with pytest.raises(NotImplementedError, match="sliding window.*fallback='sdpa'"):
        forward(model, "squash", torch.randint(3, VOCAB, (2, 9)))


def test_refuses_packed_sequences(models):
    """Packed sequences (position ids restarting in a row): the error also names the torch.compile
    case, where transformers assumes packing whenever there is neither a mask nor a cache."""
    ids, positions = torch.randint(3, VOCAB, (1, 7)), torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    with pytest.raises(NotImplementedError, match="packed sequences.*neither an attention_mask nor a cache"):
        forward(models["llama"], "squash", ids, position_ids=positions, use_cache=False)


def test_refuses_dense_user_mask(models):
    ids = torch.randint(3, VOCAB, (2, 6))
    mask4d = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    with pytest.raises(NotImplementedError, match="dense attention mask"):
        forward(models["llama"], "squash", ids, mask4d)


def test_refuses_dropout_in_training():
    model = LlamaForCausalLM(LlamaConfig(**LLAMA, attention_dropout=0.1)).train()
    model.set_attn_implementation("squash")
    with pytest.raises(NotImplementedError, match=r"attention dropout \(0.1, training mode\)"):
        model(torch.randint(3, VOCAB, (1, 5)))


def test_register_rejects_unknown_fallback():
    with pytest.raises(ValueError, match="fallback must be one of"):
        squash_ops.hf.register("squash_x", fallback="eager")


def test_sdpa_fallback(models, caplog):
    name = squash_ops.hf.register("squash_or_sdpa", fallback="sdpa")
    model = mistral(4)
    ids = torch.randint(3, VOCAB, (2, 9))
    with caplog.at_level(logging.WARNING, logger="squash_ops.hf.attention"):
        got = forward(model, name, ids)
        forward(model, name, ids)
    assert_close_to_sdpa(got, forward(model, "sdpa", ids))
    warnings = [r for r in caplog.records if "using SDPA there" in r.getMessage()]
    assert len(warnings) == 2  # one per distinct reason (the mask pattern, then the window), once each
    # A call refused after the mask was built as a SquashMask: SDPA gets its dense form.
    ids, mask = batch([3, 0, 1], 8, "left", 0)
    models["llama"].set_attn_implementation(name)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="squash_ops.hf.attention"):
        got = models["llama"](ids, attention_mask=mask, output_attentions=True).logits
    assert "output_attentions=True" in caplog.records[-1].getMessage()
    assert_close_to_sdpa(got, forward(models["llama"], "sdpa", ids, mask), mask.bool())


# ---------------------------------------------------------------------------------------------
# greedy decoder, torch.compile and CUDA graphs of a W4A16-quantized tiny Llama
# ---------------------------------------------------------------------------------------------


def quantized_llama(config=LLAMA, group_size=32, dtype=torch.float32):
    """Tiny Llama with every nn.Linear (lm_head included) replaced by W4A16Linear."""
    model = build("llama") if config is LLAMA else LlamaForCausalLM(LlamaConfig(**config)).eval()
    model.to(dtype)
    report = squash_ops.replace_linear(model, squash_ops.W4A16Config(group_size=group_size))
    assert not report.skipped and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    model.set_attn_implementation("squash")
    return model


def test_greedy_decoder_matches_generate(models):
    llama = models["llama"]
    prompt = torch.randint(3, VOCAB, (2, 6))
    for impl in ("sdpa", "squash"):
        llama.set_attn_implementation(impl)
        with torch.no_grad():
            ref = llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=9,
                                 do_sample=False, pad_token_id=0)[:, 6:]
            dec = GreedyDecoder(llama, prompt, 9)
            first = dec.generate().clone()
            again = dec.generate()  # rewinding reproduces the run
        assert torch.equal(first, ref) and torch.equal(again, ref)


def test_greedy_decoder_rejects_bad_prompt(models):
    with pytest.raises(ValueError, match=r"prompt must be \[batch, length > 0\]"):
        GreedyDecoder(models["llama"], torch.zeros(4, dtype=torch.long), 3)


@pytest.fixture(scope="module")
def qllama():
    return quantized_llama()


# aot_eager: dynamo (graph breaks, fullgraph) + AOT autograd with the ops' fake kernels; inductor's
# C++ codegen of this model took 60 s on the 2-core CPU machine (aot_eager 4.5 s), and the ops'
# inductor path is covered per op in test_attention.py / test_gemm.py.
def compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


def test_compile_fullgraph_padded_forward(qllama):
    ids, mask = batch([3, 0], 9, "left", 0)
    with torch.no_grad():
        eager = qllama(ids, attention_mask=mask).logits
        got = compiled(lambda i, m: qllama(i, attention_mask=m).logits)(ids, mask)
    torch.testing.assert_close(got[mask.bool()], eager[mask.bool()], rtol=0, atol=0)


def test_compile_fullgraph_forward_with_cache(qllama):
    ids = torch.randint(3, VOCAB, (2, 7))
    with torch.no_grad():
        eager = qllama(ids, use_cache=True).logits
        explain = torch._dynamo.explain(lambda i: qllama(i, use_cache=True).logits)(ids)
        got = compiled(lambda i: qllama(i, use_cache=True).logits)(ids)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons
    torch.testing.assert_close(got, eager, rtol=0, atol=0)


def test_compile_fullgraph_static_cache_decode(qllama):
    """The decode step the end-to-end benchmark captures: compiled whole, same tokens as eager."""
    prompt = torch.randint(3, VOCAB, (1, 5))
    with torch.no_grad():
        eager = GreedyDecoder(qllama, prompt, 6).generate()
        torch._dynamo.reset()
        dec = GreedyDecoder(qllama, prompt, 6)
        dec._run = compiled(dec._step)
        got = dec.generate()
    assert torch.equal(got, eager)


def test_compile_dynamic_w8a8_bert_compiles_once_for_every_length():
    """A W8A8 BERT (migrated norms emitting int8, FFN-down rotation) on squash attention under
    torch.compile(dynamic=True): one graph serves every sequence length past the decode-size
    routing (_dense: up to 8 query rows per KV head go to attention_decode, a second graph), with
    the ops' exact results. attention_varlen's max_seqlen_q/k are SymInts: with plain ints dynamo
    specialized each length, recompiling per sentence until its limit and then running eager."""
    from squash_ops.migration import quantize_w8a8
    from squash_ops.quant import W8A8Config

    torch.manual_seed(0)
    model = build("bert")
    quantize_w8a8(model, lambda path, lin: W8A8Config("dynamic", rotation=16 if path.endswith("output.dense")
                                                      and "attention" not in path else 0))
    model.set_attn_implementation("squash")
    torch._dynamo.reset()
    # With the tokenizer's all-ones mask, as a service calls it: the padded path (attention_varlen).
    run = torch.compile(lambda i, m: model(i, attention_mask=m).last_hidden_state, dynamic=True, backend="aot_eager")
    with torch.no_grad():
        for n, seq in enumerate((9, 13, 30)):
            ids = torch.randint(3, VOCAB, (1, seq))
            mask = torch.ones_like(ids)
            with torch.compiler.set_stance("default" if n == 0 else "fail_on_recompile"):
                got = run(ids, mask)
            torch.testing.assert_close(got, model(ids, attention_mask=mask).last_hidden_state, rtol=0, atol=0)


@pytest.mark.gpu
def test_cuda_graph_decode_replay():
    """W4A16 + squash attention on CUDA (bf16), one decode step captured and replayed: the replayed
    tokens and logits equal eager steps on the same kernels (poisoned buffers must be rewritten),
    and the logits match the CPU reference ops on the same token sequence."""
    torch.manual_seed(0)
    # head_dim 64 (the CUDA decode kernel takes 64/128/256), K multiples of 128 for g128.
    cfg = dict(LLAMA, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    cpu_model = quantized_llama(cfg, group_size=128, dtype=torch.bfloat16)
    model = copy.deepcopy(cpu_model).to("cuda")
    P, T = 11, 17
    prompt = torch.randint(3, VOCAB, (2, P), device="cuda")
    with torch.no_grad():
        eager = GreedyDecoder(model, prompt, T)
        eager_tokens = eager.generate().clone()
        eager_logits = eager.logits.clone()
        dec = GreedyDecoder(model, prompt, T)
        dec.capture()
        for _ in range(2):  # a second run replays from the rewound cache
            dec.tokens.fill_(-1)
            dec.logits.fill_(float("nan"))
            dec.tokens[:, :1] = dec.first
            tokens = dec.generate()
            torch.cuda.synchronize()
            assert torch.equal(tokens, eager_tokens)
            torch.testing.assert_close(dec.logits, eager_logits, rtol=0, atol=0)
        # The CUDA kernels vs the CPU reference ops: a full forward over prompt + generated tokens.
        # Bound (FlashAttention's rule at model level): two bf16 implementations may differ by at
        # most what bf16 itself costs, i.e. the same model's bf16-vs-fp32 gap (on CPU: 2.3e-2, while
        # the CPU decode path vs the CPU full forward differ by 3e-3; a wrong kernel gives ~1).
        seq = torch.cat([prompt, eager_tokens[:, :-1]], 1).cpu()
        ref = cpu_model(seq).logits[:, -1].float()
        ref32 = copy.deepcopy(cpu_model).float()(seq).logits[:, -1]
    got = eager_logits.float().cpu()
    assert rel_mean_err(got, ref) <= rel_mean_err(ref, ref32)
