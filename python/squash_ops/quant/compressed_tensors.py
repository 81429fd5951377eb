"""compressed-tensors in and out: the format of llmcompressor's checkpoints, served by vLLM and SGLang.

A compressed-tensors directory is a Hugging Face model directory whose ``config.json`` carries a
``quantization_config`` (``quant_method: "compressed-tensors"``): ``config_groups`` of schemes, each
with ``targets`` (a module class name such as ``Linear``, an exact module name, or ``re:<regex>``
matched from the start of the name), an ``ignore`` list in the same syntax, and a ``format`` per
group or for the whole model. The layouts read and written here (from compressed-tensors 0.20.1's
``pack_quantized`` and ``naive_quantized`` compressors):

- ``pack-quantized`` (W4A16, W8A16), per layer: ``weight_packed`` int32 ``[N, ceil(K*b/32)]``, the
  signed values ``q`` (``-2^(b-1) .. 2^(b-1)-1``) stored as ``q + 2^(b-1)`` and packed densely
  along K, element ``i`` of a word in bits ``b*i .. b*i+b-1``; ``weight_scale`` ``[N, K/g]`` (group)
  or ``[N, 1]`` (channel) in the model's dtype; ``weight_shape`` int64 ``[N, K]``; asymmetric:
  ``weight_zero_point``, the signed zero points packed the same way along N (int32
  ``[ceil(N*b/32), G]``). ``W = (q - zp) * scale``. Older checkpoints of GPTQ's group act-order
  carry ``weight_g_idx`` int32 ``[K]`` (the group of each input channel; removed from
  compressed-tensors in 0.20, still read here).
- ``int-quantized`` (W8A8): ``weight`` int8 ``[N, K]``, ``weight_scale`` ``[N, 1]``; activations
  quantized per token at run time (``input_activations``: 8-bit int, symmetric, strategy
  ``token``, dynamic).

Squash's int4 values are stored unsigned (``q + 8``) with unsigned zero points (``zp + 8``), so the
conversion moves bits and never requantizes: import and export are exact. Scales are float32 in
squash; an export writes them in ``dtype`` (float32 by default, refused where a 16-bit ``dtype``
would round one). Activations: squash's W8A8 dynamic mode is per-token symmetric int8 like the
format's; static activation scales are not exported (refused).

Gamma migration and channel smoothing have a place only where they fold (smoothing at a value
projection is already in the two linears' weights): a ``MigratedNorm`` feeding only linears (pre-norm
LLaMA / OPT) is written as the plain norm whose weight and bias are ``gamma / m`` and ``beta / m``
(the linears already hold ``W * m``); a post-norm BERT block scales its residual by ``m``
(``ResidualScaledOutput``), which no standard module can express, so it is refused; so are the
run-time input transforms of a W8A8 layer (``input_mul`` of FFN-down smoothing, a Hadamard
``rotation``).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from .. import ops
from ..migration.norm import MigratedNorm, ResidualScaledOutput
from .config import W4A16Config, W8A8Config, W8A16Config
from .importers import _build, _check, _group_config, act_order_permutation, import_layers, linear_names
from .linear import W4A16Linear, W8A8Linear, W8A16Linear, _QuantLinear
from .serialization import CheckpointError

PACKED, INT = "pack-quantized", "int-quantized"
_KEYS = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "weight", "bias")


# ----------------------------------------------------------------------------------------------
# Bit packing (b = 4 or 8: a value never straddles two int32 words)


def pack_int32(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned values ``u`` [R, C] (0 .. 2^bits - 1) -> int32 [R, ceil(C*bits/32)], element ``i``
    of each word in bits ``bits*i ..``; the last word zero-padded."""
    per_word = 32 // bits
    rows, cols = u.shape
    padded = torch.zeros(rows, math.ceil(cols / per_word) * per_word, dtype=torch.int64, device=u.device)
    padded[:, :cols] = u.to(torch.int64)
    shifts = torch.arange(0, 32, bits, dtype=torch.int64, device=u.device)
    words = (padded.view(rows, -1, per_word) << shifts).sum(-1)  # < 2^32: the sum of disjoint bit fields
    return (words - ((words >> 31) << 32)).to(torch.int32)  # two's complement of the top bit


def unpack_int32(words: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """``pack_int32``'s inverse: int32 [R, W] -> unsigned values (int16) [R, cols]."""
    shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=words.device)
    # Arithmetic shifts sign-extend the top field; the mask takes it back.
    u = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return u.reshape(words.shape[0], -1)[:, :cols].to(torch.int16)


# ----------------------------------------------------------------------------------------------
# The quantization_config


def _matches(name: str, module: nn.Module, target: str) -> bool:
    """compressed-tensors' rule: ``re:`` regex from the start of the name, else the exact name or a
    class name in the module's MRO."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name or any(cls.__name__ == target for cls in type(module).__mro__)


def read_quantization_config(directory: str | os.PathLike) -> dict:
    """The ``quantization_config`` of ``directory/config.json``, checked to be compressed-tensors'."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found (a compressed-tensors checkpoint is a Hugging Face model "
                                f"directory)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(qc, dict) or qc.get("quant_method") != "compressed-tensors":
        raise CheckpointError(f"{path}: no quantization_config with quant_method 'compressed-tensors'")
    if not isinstance(qc.get("config_groups"), dict) or not qc["config_groups"]:
        raise CheckpointError(f"{path}: quantization_config has no config_groups")
    if qc.get("quantization_status", "compressed") != "compressed":
        raise CheckpointError(f"{path}: quantization_status is {qc.get('quantization_status')!r}: only compressed "
                              f"checkpoints hold the packed weights")
    return qc


def _scheme_of(name: str, module: nn.Module, qc: dict) -> dict | None:
    """The config group (with its format) that quantizes layer ``name``, None when none does."""
    if any(_matches(name, module, t) for t in qc.get("ignore") or []):
        return None
    for group in qc["config_groups"].values():
        if any(_matches(name, module, t) for t in group.get("targets") or []):
            return {**group, "format": group.get("format") or qc.get("format")}
    return None


# ----------------------------------------------------------------------------------------------
# Import


def _convert(scheme: dict, compute_dtype, name: str, weight_packed, weight_scale, weight_zero_point,
             weight_shape, weight_g_idx, weight, bias) -> _QuantLinear:
    w = scheme.get("weights") or {}
    acts = scheme.get("input_activations")
    fmt = scheme["format"]
    _check(w.get("type", "int") == "int", name, f"weights of type {w.get('type')!r}: only int is supported")
    _check(weight_scale.is_floating_point(), name, f"weight_scale must be a float tensor, got {weight_scale.dtype}")
    scales = weight_scale.float()  # bf16 / fp16 -> float32 is exact
    _check(bool(torch.isfinite(scales).all()), name, "weight_scale holds inf or NaN")
    bits, symmetric, strategy = w.get("num_bits"), w.get("symmetric", True), w.get("strategy")
    if fmt == INT:
        _check(bits == 8 and symmetric and strategy == "channel", name,
               f"int-quantized weights must be 8-bit symmetric per channel (got num_bits={bits}, symmetric={symmetric}, "
               f"strategy={strategy!r})")
        _check(isinstance(acts, dict) and acts.get("num_bits") == 8 and acts.get("symmetric", True)
               and acts.get("strategy") == "token" and acts.get("dynamic") is True, name,
               f"int-quantized activations must be 8-bit symmetric dynamic per token, got {acts}: static or per-tensor "
               f"activation scales are not imported")
        _check(weight is not None and weight.dtype == torch.int8 and weight.dim() == 2, name,
               f"weight must be int8 [N, K], got {None if weight is None else (weight.dtype, list(weight.shape))}")
        n, k = weight.shape
        _check(tuple(scales.shape) in ((n, 1), (n,)), name, f"weight_scale must be [{n}, 1], got {list(scales.shape)}")
        m = W8A8Linear(k, n, bias is not None, W8A8Config("dynamic"), device=weight.device)
        m.qweight.copy_(weight)
        m.scales.copy_(scales.reshape(n))
        if bias is not None:
            m.bias.copy_(bias)
        return m
    _check(fmt == PACKED, name, f"format {fmt!r} is not supported (pack-quantized and int-quantized are)")
    _check(acts is None, name, f"pack-quantized layers with input_activations {acts} are not supported (A16 only)")
    _check(bits in (4, 8), name, f"num_bits {bits} is not supported (4 and 8 are)")
    _check(weight_packed is not None and weight_packed.dtype == torch.int32 and weight_packed.dim() == 2, name,
           "weight_packed must be int32 [N, ceil(K*bits/32)]")
    _check(weight_shape is not None and weight_shape.numel() == 2, name, "weight_shape [N, K] is missing")
    n, k = (int(v) for v in weight_shape.tolist())
    _check(tuple(weight_packed.shape) == (n, math.ceil(k * bits / 32)), name,
           f"weight_packed is {list(weight_packed.shape)}, expected [{n}, {math.ceil(k * bits / 32)}] for weight_shape "
           f"[{n}, {k}]")
    _check(scales.dim() == 2 and scales.shape[0] == n, name, f"weight_scale must be [{n}, G], got {list(scales.shape)}")
    n_groups = scales.shape[1]
    _check((strategy == "channel" and n_groups == 1) or (strategy == "group" and w.get("group_size") == k // n_groups),
           name, f"strategy {strategy!r} (group_size {w.get('group_size')}) does not fit {n_groups} scale groups over "
           f"{k} inputs (group and channel are supported)")
    u = unpack_int32(weight_packed, bits, k)
    if bits == 8:
        _check(symmetric and n_groups == 1 and weight_g_idx is None, name,
               "8-bit pack-quantized weights must be symmetric per channel (squash's int8 weights have no zero point "
               "and no groups)")
        m = W8A16Linear(k, n, bias is not None, compute_dtype, device=u.device)
        m.qweight.copy_((u - 128).to(torch.int8))
        m.scales.copy_(scales.reshape(n))
        if bias is not None:
            m.bias.copy_(bias)
        return m
    config = _group_config(k, n_groups, name)
    if symmetric:
        zeros = torch.full((n, n_groups), 8, dtype=torch.int16, device=u.device)
    else:
        _check(weight_zero_point is not None and weight_zero_point.dtype == torch.int32
               and tuple(weight_zero_point.shape) == (math.ceil(n / 8), n_groups), name,
               f"asymmetric: weight_zero_point must be int32 [{math.ceil(n / 8)}, {n_groups}]")
        zeros = unpack_int32(weight_zero_point.T.contiguous(), 4, n).T  # packed along N
    perm = act_order_permutation(weight_g_idx, k, n_groups, name)
    if perm is not None:
        u = u[:, perm]  # packed column i <- input channel perm[i]; groups now contiguous
    return _build(u, zeros, scales, config, bias, perm, compute_dtype, name)


def import_compressed_tensors(model: nn.Module, directory: str | os.PathLike, *,
                              compute_dtype: torch.dtype | None = None, device=None,
                              prepack: bool | None = None) -> nn.Module:
    """Load a compressed-tensors checkpoint (``directory``: config.json + safetensors) into
    ``model``, a float skeleton of its architecture (meta device fine): every linear that the
    quantization_config quantizes becomes squash's module (W4A16 / W8A16 from ``pack-quantized``,
    W8A8 dynamic from ``int-quantized``) with exactly the stored weights; every other tensor is
    loaded as stored. ``compute_dtype`` (weight-only layers): default the skeleton's dtype when
    float16 / bfloat16, else bfloat16. Returns ``model`` in eval mode."""
    try:
        qc = read_quantization_config(directory)
    except (CheckpointError, FileNotFoundError) as e:
        raise type(e)(f"import_compressed_tensors: {e}") from None
    if compute_dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        compute_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    schemes = {name: _scheme_of(name, model.get_submodule(name), qc) for name in linear_names(model)}

    def convert(name, layer, **tensors):
        scheme = schemes.get(layer)
        _check(scheme is not None, name, "holds quantized tensors but no config group of config.json targets it")
        return _convert(scheme, compute_dtype, name, **tensors)

    return import_layers(model, directory, device, convert, _KEYS, "import_compressed_tensors", prepack,
                         marker="weight_scale")


# ----------------------------------------------------------------------------------------------
# Export


def _scheme_dict(config) -> dict:
    """Our scheme as a compressed-tensors config group (without targets)."""
    if isinstance(config, W8A8Config):
        return {"format": INT, "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                                            "dynamic": False},
                "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                      "dynamic": True},
                "output_activations": None}
    if isinstance(config, W8A16Config):
        weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
    else:
        weights = {"num_bits": 4, "type": "int", "symmetric": config.symmetric, "dynamic": False,
                   **({"strategy": "channel"} if config.group_size == -1 else
                      {"strategy": "group", "group_size": config.group_size})}
    return {"format": PACKED, "weights": weights, "input_activations": None, "output_activations": None}


def _as_dtype(t: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    out = t.to(dtype)
    if not torch.equal(out.to(t.dtype), t):
        raise ValueError(f"export_compressed_tensors: {what} is not representable in {dtype}; the export would "
                         f"dequantize to other weights: export with dtype=torch.float32")
    return out


def _layer_tensors(name: str, m: _QuantLinear, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    buf = {k: v.detach().cpu() for k, v in m.canonical_buffers().items() if v is not None}
    n, k = m.out_features, m.in_features
    out = {}
    if isinstance(m, W8A8Linear):
        if m.config.activation != "dynamic":
            raise ValueError(f"export_compressed_tensors: {name} is W8A8 with static activation scales; the export "
                             f"writes per-token dynamic W8A8 only: quantize with W8A8Config('dynamic')")
        # Run-time input transforms: their weights hold W * s or W @ H, so without the transform the
        # layer would compute something else, and the format has no place for one.
        if m.input_mul is not None:
            raise ValueError(f"export_compressed_tensors: {name} multiplies its input per channel at run time "
                             f"(smoothing of the FFN down-projection), which compressed-tensors has no place for: "
                             f"smooth only where it folds (quantize_w8a8(..., runtime_smoothing=False), "
                             f"squash quantize --smooth folded)")
        if m.config.rotation:
            raise ValueError(f"export_compressed_tensors: {name} rotates its input by {m.config.rotation}-blocks of a "
                             f"Hadamard matrix at run time, which compressed-tensors has no place for: quantize "
                             f"without rotation (--rotate-ffn-down)")
        out["weight"] = buf["qweight"]
        out["weight_scale"] = _as_dtype(buf["scales"].reshape(n, 1), dtype, f"{name}.scales")
    elif isinstance(m, W8A16Linear):
        out["weight_packed"] = pack_int32(buf["qweight"].to(torch.int16) + 128, 8)
        out["weight_scale"] = _as_dtype(buf["scales"].reshape(n, 1), dtype, f"{name}.scales")
        out["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    else:
        if "input_perm" in buf:
            raise ValueError(f"export_compressed_tensors: {name} is an act-order (g_idx) layer; compressed-tensors "
                             f"0.20 removed group act-order, so no current loader would read it")
        out["weight_packed"] = pack_int32(ops.unpack_int4(buf["qweight"]), 4)
        out["weight_scale"] = _as_dtype(buf["scales"], dtype, f"{name}.scales")
        out["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
        if "zeros" in buf:  # unsigned zero point u = zp + 8: stored as is, packed along N
            out["weight_zero_point"] = pack_int32(buf["zeros"].T.contiguous(), 4).T.contiguous()
    if "bias" in buf:
        out["bias"] = buf["bias"].to(dtype)
    return {f"{name}.{key}": t.contiguous() for key, t in out.items()}


def _float_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The module's own parameters and persistent buffers (what save_pretrained writes)."""
    if isinstance(module, MigratedNorm):  # folded: a plain norm holding gamma / m and beta / m
        # weight None: gamma / m is all ones (the HF norm still has its weight parameter).
        weight = torch.ones_like(module.factor) if module.weight is None else module.weight
        own = [("weight", weight), ("bias", module.bias)]
    else:
        skip = module._non_persistent_buffers_set
        own = [*module._parameters.items(), *((k, v) for k, v in module._buffers.items() if k not in skip)]
    return [(k, v) for k, v in own if v is not None]


def export_compressed_tensors(model: nn.Module, directory: str | os.PathLike, *,
                              dtype: torch.dtype = torch.float32) -> Path:
    """Write a squash-quantized Hugging Face model as a compressed-tensors checkpoint that
    transformers (``CompressedTensorsConfig``), vLLM and SGLang load: config.json with its
    quantization_config, model.safetensors. ``dtype``: of the scales and the float tensors
    (float32 keeps squash's float32 scales exact; a 16-bit dtype is refused where it would round a
    scale). Migrated norms are folded (module doc); static W8A8, act-order layers and post-norm
    residual scaling are refused, naming the layer. Returns the directory."""
    from safetensors.torch import save_file

    hf_config = getattr(model, "config", None)
    if not hasattr(hf_config, "to_dict"):
        raise ValueError(f"export_compressed_tensors: {type(model).__name__} has no Hugging Face config; export the "
                         f"transformers model (for a SentenceTransformer: squash_ops.st.encoder_of(model))")
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}  # held: a freed tensor's id could come back and pass for a tie
    groups: dict[str, tuple[dict, list[str]]] = {}
    floats: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, ResidualScaledOutput):
            raise ValueError(f"export_compressed_tensors: {name} scales its residual by the migration factor (post-norm "
                             f"gamma migration), which compressed-tensors has no place for: quantize without "
                             f"migration (squash quantize without --migrate)")
        if isinstance(module, _QuantLinear):
            scheme = _scheme_dict(module.config)
            groups.setdefault(json.dumps(scheme, sort_keys=True), (scheme, []))[1].append(name)
            tensors.update(_layer_tensors(name, module, dtype))
            continue
        if isinstance(module, nn.Linear):
            floats.append(name)
        for key, t in _float_tensors(module):
            if id(t) not in seen:  # a tied tensor is written once, under its first name
                seen[id(t)] = t
                t = t.detach().cpu()
                tensors[f"{name}.{key}".lstrip(".")] = (t.to(dtype) if t.is_floating_point() else t).contiguous()
    if not groups:
        raise ValueError("export_compressed_tensors: the model has no quantized layer (run replace_linear first)")
    one = len(groups) == 1
    config_groups = {f"group_{i}": {**scheme, "targets": ["Linear"] if one else names}
                     for i, (scheme, names) in enumerate(groups.values())}
    formats = {g["format"] for g in config_groups.values()}
    quantization_config = {
        "quant_method": "compressed-tensors", "quantization_status": "compressed",
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "config_groups": config_groups, "ignore": floats, "kv_cache_scheme": None, "sparsity_config": {},
        "transform_config": {},
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config.to_dict()
    config["dtype"] = str(dtype).removeprefix("torch.")
    config.pop("torch_dtype", None)
    config["quantization_config"] = quantization_config
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
