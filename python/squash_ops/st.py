"""sentence-transformers: quantize a ``SentenceTransformer`` in place, save it, load it back.

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("path/to/all-MiniLM-L6-v2", local_files_only=True)
    squash_ops.st.quantize_sentence_transformer(model, squash_ops.W8A8Config())
    model.encode(["a sentence"])                   # tokenizer, pooling, normalization as before
    model.save("minilm-w8a8")                      # squash's checkpoint inside ST's layout
    squash_ops.st.load_sentence_transformer("minilm-w8a8")     # back, bit-exact
    # the accurate all-int8 recipe (migration, smoothing, FFN-down rotation), calibrated on sentences:
    squash_ops.st.quantize_w8a8_sentence_transformer(model, sentences)

A SentenceTransformer is a pipeline of modules; the Hugging Face model sits in its
``Transformer`` module, and only its linears are quantized (pooling and normalization hold no
weights). Saving needs one change: ST saves that module with ``save_pretrained``, which would write
the quantized buffers as if they were float weights. ``encoder_of`` therefore turns the module into
a ``SquashTransformer`` (a subclass, the same object otherwise), whose ``save`` writes squash's
checkpoint (``save_quantized``) and whose loading rebuilds it (``load_quantized`` on a skeleton
built from the saved config). ST records the module's class in ``modules.json``;
sentence-transformers 6 imports a class outside its own package only with ``trust_remote_code=True``,
which ``load_sentence_transformer`` passes after checking that ``modules.json`` names no class but
ST's and ``SquashTransformer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

try:
    from sentence_transformers.base.modules.transformer import TRANSFORMER_TASK_TO_AUTO_MODEL, Transformer
except ImportError as e:  # only this module needs it; the rest of squash_ops works without it
    raise ImportError("squash_ops.st needs sentence-transformers: pip install -c constraints.txt "
                      "sentence-transformers (the version pinned in constraints.txt)") from e

from .quant.config import QuantConfig
from .quant.replace import FilterFn, ReplaceReport, replace_linear
from .quant.serialization import load_quantized, save_quantized


class SquashTransformer(Transformer):
    """ST's ``Transformer`` module whose model is saved and loaded in squash's checkpoint format."""

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        save_quantized(self.model, output_path)  # squash's two files + the HF config.json
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)

    def _load_model(self, model_name_or_path, transformer_task, config, backend, is_peft_model, **model_kwargs):
        # model_kwargs are from_pretrained's (dtype, attention implementation, ...): the weights and
        # their dtypes come from squash's file instead, so those that would change them are refused.
        if backend != "torch":
            raise ValueError(f"{model_name_or_path}: a squash_ops checkpoint runs on the torch backend, not {backend!r}")
        if is_peft_model:
            raise ValueError(f"{model_name_or_path}: a squash_ops checkpoint cannot carry a PEFT adapter")
        wrong = sorted(k for k in model_kwargs if k in ("dtype", "torch_dtype", "device_map", "quantization_config"))
        if wrong:
            raise ValueError(f"{model_name_or_path}: model_kwargs {wrong} cannot apply to a squash_ops checkpoint "
                             f"(its tensors load as saved)")
        auto_model = TRANSFORMER_TASK_TO_AUTO_MODEL.get(transformer_task)
        if auto_model is None:
            raise ValueError(f"{model_name_or_path}: transformer_task {transformer_task!r} is not supported for a "
                             f"squash_ops checkpoint")
        with torch.device("meta"):  # the skeleton's weights are never used: skip initializing them
            skeleton = auto_model.from_config(config)
        return load_quantized(skeleton, model_name_or_path)


def transformer_module(model: nn.Module) -> Transformer:
    """The ``Transformer`` module of a SentenceTransformer (or any ST model: CrossEncoder, ...)."""
    if isinstance(model, Transformer):
        return model
    found = [m for m in model.children()] if isinstance(model, nn.Sequential) else []
    found = [m for m in found if isinstance(m, Transformer)]
    if len(found) != 1:
        kinds = ", ".join(type(m).__name__ for m in model.children()) or "none"
        raise ValueError(f"expected a SentenceTransformer holding one sentence_transformers Transformer module, got a "
                         f"{type(model).__name__} with {len(found)} (its modules: {kinds})")
    module = found[0]
    if module.backend != "torch":
        raise ValueError(f"the Transformer module runs on the {module.backend!r} backend; squash_ops quantizes torch "
                         f"models: load the SentenceTransformer with backend='torch'")
    return module


def encoder_of(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside ``model`` (a SentenceTransformer), to quantize by any squash
    path (``replace_linear``, ``migration.quantize_w8a8``, ...). Its module becomes a
    ``SquashTransformer`` so that ``model.save(directory)`` writes squash's checkpoint."""
    module = transformer_module(model)
    _make_savable(module)
    return module.model


def _make_savable(module: Transformer) -> None:
    # A class swap, not a wrapper: ST's pipeline, its module names and every attribute stay as they were.
    module.__class__ = SquashTransformer


def quantize_sentence_transformer(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None,
                                  **kwargs) -> ReplaceReport:
    """``replace_linear`` on the Hugging Face model of a SentenceTransformer, in place (keyword
    arguments as there; layer names as in that model: ``encoder.layer.0.attention.self.query``).
    ``model.encode`` keeps working and ``model.save`` / ``load_sentence_transformer`` round-trip it
    bit-exactly."""
    module = transformer_module(model)
    report = replace_linear(module.model, config, filter_fn, **kwargs)
    _make_savable(module)  # after: a refused call leaves the model as it was
    return report


def quantize_w8a8_sentence_transformer(model: nn.Module, calibration_sentences: list[str], *,
                                       rotate_ffn_down: int = 16, batch_size: int = 8):
    """The accurate all-int8 recipe of ``squash quantize --migrate --smooth folded
    --rotate-ffn-down 16`` on a SentenceTransformer's encoder, in place: every block linear W8A8
    with per-token activations, gamma migration and smoothing (searched on
    ``calibration_sentences``, tokenized by the model's own tokenizer in padded batches of
    ``batch_size``) folded into the norms and value projections, the FFN down-projection inputs
    rotated in ``rotate_ffn_down``-blocks (0: none). Returns ``quantize_w8a8``'s report; ``encode``,
    ``save`` and ``load_sentence_transformer`` work as after ``quantize_sentence_transformer``."""
    from .migration import ffn_down_paths, quantize_w8a8
    from .quant.config import W8A8Config

    if not calibration_sentences:
        raise ValueError("quantize_w8a8_sentence_transformer: calibration_sentences is empty (the "
                         "smoothing factors are searched on them; a few dozen real sentences suffice)")
    module = transformer_module(model)
    tok = model.tokenizer
    calibration = [dict(tok(calibration_sentences[i:i + batch_size], padding=True, return_tensors="pt"))
                   for i in range(0, len(calibration_sentences), batch_size)]
    rotated = set(ffn_down_paths(module.model)) if rotate_ffn_down else set()
    report = quantize_w8a8(module.model,
                           lambda path, _linear: W8A8Config("dynamic", rotation=rotate_ffn_down if path in rotated else 0),
                           calibration=calibration, smooth=True, runtime_smoothing=False)
    _make_savable(module)  # after: a refused call leaves the model as it was
    return report


def load_sentence_transformer(directory, **kwargs) -> nn.Module:
    """The SentenceTransformer that ``model.save(directory)`` wrote after quantizing, from local
    files only. ``kwargs`` go to ``SentenceTransformer`` (``device=``, ...)."""
    from sentence_transformers import SentenceTransformer

    path = Path(directory) / "modules.json"
    try:
        modules = json.loads(path.read_text())
        types = [m["type"] for m in modules]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"load_sentence_transformer: {path} is not a SentenceTransformer's modules.json "
                         f"({type(e).__name__}: {e})") from None
    ours = f"{SquashTransformer.__module__}.{SquashTransformer.__name__}"
    # trust_remote_code below would import any class modules.json names: allow ST's and ours only.
    foreign = [t for t in types if t != ours and not str(t).startswith("sentence_transformers.")]
    if foreign:
        raise ValueError(f"load_sentence_transformer: {path} names module classes outside sentence_transformers "
                         f"and squash_ops: {foreign}; load it with SentenceTransformer(..., trust_remote_code=True) "
                         f"if you trust them")
    if ours not in types:
        raise ValueError(f"load_sentence_transformer: {path} holds no {ours} module: not a model quantized by "
                         f"squash_ops (load a float one with SentenceTransformer)")
    return SentenceTransformer(str(directory), trust_remote_code=True, local_files_only=True, **kwargs)
