"""The e2e_decode benchmark suite's CPU-side logic: the Llama-3-8B shape, the bytes it counts, the
W4A16 conversion, and a smoke run of the suite end to end (tiny shape, CPU ops) in the results
format. The GPU numbers come from bench/gpu_check.sh on the lent machine."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run  # noqa: E402
from bench.harness import Context, validate_results  # noqa: E402
from bench.suites import e2e_decode  # noqa: E402
from squash_ops.quant import W4A16Linear  # noqa: E402


@pytest.fixture(scope="module")
def meta_8b():
    from transformers import LlamaForCausalLM
    with torch.device("meta"):
        return LlamaForCausalLM(e2e_decode.llama3_8b_config())


def test_llama3_8b_shape(meta_8b):
    assert sum(p.numel() for p in meta_8b.parameters()) == 8_030_261_248  # Llama-3-8B's count
    linears = [m for m in meta_8b.modules() if isinstance(m, torch.nn.Linear)]
    assert sorted((m.in_features, m.out_features) for m in linears) == sorted(e2e_decode.linear_shapes(meta_8b.config))


def test_bytes_per_call(meta_8b):
    cfg = meta_8b.config
    linear_params = sum(k * n for k, n in e2e_decode.linear_shapes(cfg))
    kv_token = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 kv heads, head_dim 128, bf16
    for impl, weight_bytes in (("cublas", 2 * linear_params), ("squash", linear_params // 2 + linear_params // 128 * 4)):
        one = e2e_decode.bytes_per_call(cfg, impl, 16, 1)
        assert one == weight_bytes + kv_token * 17  # the first step attends prompt + 1 keys
        assert e2e_decode.bytes_per_call(cfg, impl, 16, 2) == 2 * weight_bytes + kv_token * (17 + 18)
    ratio = e2e_decode.bytes_per_call(cfg, "cublas", 16, 1) / e2e_decode.bytes_per_call(cfg, "squash", 16, 1)
    assert 3.7 < ratio < 3.8  # int4 + fp32 g128 scales: 4.25 bits per weight vs 16


def test_to_squash_replaces_every_linear():
    cfg = e2e_decode.tiny_config()
    model = e2e_decode.build_bf16(cfg, "cpu")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    e2e_decode.to_squash(model)
    quantized = [m for m in model.modules() if isinstance(m, W4A16Linear)]
    assert len(quantized) == n_linear and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert model.config._attn_implementation == "squash"
    for m in quantized:  # random, not the zeros W4A16Linear starts with (prepacked: its canonical tensors)
        assert m.prepacked == m.prepack_pays()
        canonical = m.canonical_buffers()
        assert canonical["qweight"].float().std() > 50 and (canonical["scales"] > 0).all()
    ctx = Context(device="cpu")
    with torch.inference_mode():
        call = e2e_decode.make_call(ctx, model, cfg, 3, 5, "eager")
        tokens = call(0)
    assert tokens.shape == (1, 6) and ((0 <= tokens) & (tokens < cfg.vocab_size)).all()


def test_modes(monkeypatch):
    monkeypatch.delenv("E2E_COMPILE", raising=False)
    assert e2e_decode.modes(Context(device="cpu")) == ["eager"]
    assert e2e_decode.modes(Context(device="cuda")) == ["cudagraph"]
    monkeypatch.setenv("E2E_COMPILE", "1")
    assert e2e_decode.modes(Context(device="cuda")) == ["cudagraph", "compile+cudagraph"]


def test_cpu_smoke_run(tmp_path, capsys):
    out = tmp_path / "bench_cpu.json"
    rc = run.main(["--device", "cpu", "--suites", "e2e_decode", "--out", str(out)])
    log = capsys.readouterr().out
    assert rc == 0, log
    obj = json.loads(out.read_text())
    assert validate_results(obj) == []
    records = obj["records"]
    assert {r["impl"] for r in records} == {"cublas", "squash"}
    assert len({r["case"] for r in records}) == 1 and records[0]["case"].endswith(" eager")
    assert records[0]["params"]["tokens"] == 4 and all(r["gbps"] for r in records)
    assert "e2e_decode  squash vs cublas" in log
