"""cpu_minilm: all-MiniLM-L6-v2 sentence embeddings on the CPU, squash W8A8 vs float and the int8
peers, with the accuracy of each (embedding cosine vs torch float32, in the log).

Sentences: the first 100 real sentences of squash_ops/eval/data/sentences.txt, in file order
(batches padded to their longest sentence, as a service receives them); batch 32 (4 batches) and
batch 1 (the first 24 sentences one by one). One call embeds the whole set (mean pooling over the
attention mask, L2 normalised). Impls:
  - torch_fp32: the HF model, eager float32 (attention: SDPA);
  - torch_dynamic_int8: torch.ao.quantization.quantize_dynamic on its nn.Linear (fbgemm);
  - ort_fp32 / ort_int8: ONNX Runtime on the exported float model / after onnxruntime's
    quantize_dynamic (QInt8 weights), intra_op_num_threads = torch's thread count;
  - squash: the configuration that meets the accuracy goal (squash_ops.eval.minilm's recommended
    one: every block linear W8A8 with per-token activations, gamma migration and smoothing folded
    into the norms and value projections, the FFN down-projection inputs rotated in 16-blocks,
    fused norm -> int8, calibrated on eval/data/calibration.txt) run by PackedEncoder (real
    tokens only, attention through attention_varlen) with compile="aot": its layers exported
    with a dynamic token count and compiled ahead of time by AOTInductor (hf/aot.py; 10-15 s,
    when the suite builds it), so no Python runs per layer;
  - squash:eager: the same without compile;
  - squash:packed_fp32: the float model under PackedEncoder, eager (how much of squash's speed is
    the packing alone);
  - squash:w8a8_padded: the squash W8A8 model on padded batches, eager (the int8 path alone);
  - compiled: torch.compile(dynamic=True) (inductor) of the float model (SDPA), padded batches.
The peers run the padded batches, as they do by default.
"""

from __future__ import annotations

import copy
import os
import tempfile

import torch
from torch import nn

from ..harness import Context, log

BUDGET_WEIGHT = 40
SUITE = "cpu_minilm"
SENTENCES = 100
BATCH1_SENTENCES = 24


def run(ctx: Context) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from squash_ops.eval.minilm import RECOMMENDED, VARIANTS, load_minilm, read_sentences
        tok, model = load_minilm()
    except Exception as e:  # noqa: BLE001  (no MiniLM wheel: the suite has nothing to measure)
        ctx.skip("all", "cpu_minilm", f"{type(e).__name__}: {e}")
        return
    sentences = read_sentences()[:SENTENCES]
    impls = build_impls(ctx, tok, model, RECOMMENDED, VARIANTS)
    for batch in (32, 1):
        if ctx.out_of_time():
            return
        run_case(ctx, tok, sentences if batch > 1 else sentences[:BATCH1_SENTENCES], batch, impls)


def build_impls(ctx: Context, tok, model: nn.Module, recommended: str, variants) -> dict:
    """impl -> a function (list of HF batch dicts) -> embeddings [n, 384]; what fails to build is
    logged as a SKIP (e.g. ONNX Runtime not installed)."""
    impls = {"torch_fp32": _hf(model), "compiled": _hf(torch.compile(copy.deepcopy(model), dynamic=True))}
    try:
        dyn = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        impls["torch_dynamic_int8"] = _hf(dyn)
    except Exception as e:  # noqa: BLE001
        ctx.skip("torch_dynamic_int8", SUITE, f"{type(e).__name__}: {e}")
    try:
        impls.update(_ort(model))
    except Exception as e:  # noqa: BLE001
        ctx.skip("ort_fp32/ort_int8", SUITE, f"{type(e).__name__}: {e}")
    model.eval()  # the ONNX export can leave the module in training mode (dropout on)
    if ctx.has_squash("w8a8_gemm"):
        from squash_ops.hf.packed import PackedEncoder

        from squash_ops.eval.minilm import calibration_batches, read_sentences

        w8a8 = copy.deepcopy(model)
        calib = calibration_batches(tok, read_sentences("calibration.txt"))
        {v.name: v for v in variants}[recommended].quantize(w8a8, calib)
        impls["squash:w8a8_padded"] = _hf(w8a8)
        impls["squash"] = _hf(PackedEncoder(copy.deepcopy(w8a8), compile="aot"))
        impls["squash:eager"] = _hf(PackedEncoder(copy.deepcopy(w8a8)))
        impls["squash:packed_fp32"] = _hf(PackedEncoder(copy.deepcopy(model)))
    return impls


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1), dim=-1)


def _hf(model: nn.Module):
    def embed(batches):
        return torch.cat([_pool(model(**b).last_hidden_state.float(), b["attention_mask"]) for b in batches])
    return embed


class _Wrapper(nn.Module):
    # BertModel's positional arguments collide with use_cache: export through named inputs.
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def _ort(model: nn.Module) -> dict:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = tempfile.mkdtemp(prefix="squash_minilm_onnx_")
    fp32_path, int8_path = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    axes = {n: {0: "batch", 1: "seq"} for n in names} | {"hidden": {0: "batch", 1: "seq"}}
    torch.onnx.export(_Wrapper(model), dummy, fp32_path, input_names=names, output_names=["hidden"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8)
    out = {}
    for impl, path in (("ort_fp32", fp32_path), ("ort_int8", int8_path)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def embed(batches, sess=sess):
            outs = []
            for b in batches:
                feed = {n: b[n].numpy() for n in names}
                outs.append(_pool(torch.from_numpy(sess.run(None, feed)[0]), b["attention_mask"]))
            return torch.cat(outs)
        out[impl] = embed
    return out


def run_case(ctx: Context, tok, sentences: list[str], batch: int, impls: dict) -> None:
    batches = [dict(tok(sentences[i:i + batch], padding=True, return_tensors="pt"))
               for i in range(0, len(sentences), batch)]
    for b in batches:
        b.setdefault("token_type_ids", torch.zeros_like(b["input_ids"]))
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    case = f"{len(sentences)} sentences batch={batch}"
    params = {"batch": batch, "tokens": tokens, "dtype": "fp32"}
    with torch.inference_mode():
        ref = impls["torch_fp32"](batches)
        log(f"cpu_minilm {case}: {tokens} real tokens in {padded} padded slots; embedding cosine vs torch_fp32 "
            f"(mean / min) per impl:")
        for impl, embed in impls.items():
            cos = (embed(batches) * ref).sum(-1)
            log(f"  {impl:<20} {cos.mean().item():.5f} / {cos.min().item():.5f}")
        ctx.measure_interleaved(SUITE, case, params,
                                [(impl, (lambda e=embed: lambda i: e(batches)), None, None)
                                 for impl, embed in impls.items()], rounds=5, batch_s=0.0)
