"""Import GPTQ and AWQ int4 checkpoints into the canonical format (docs/FORMATS.md), exactly.

Both store, per linear layer with ``K`` inputs and ``N`` outputs, 4-bit values packed eight to an
int32 (value ``j`` of a word in bits ``4j..4j+3``), fp16 ``scales`` per group of input channels
and packed zero points; a weight dequantizes to ``W[k, n] = (q[k, n] - z[g(k), n]) * s[g(k), n]``
(note the ``[K, N]`` orientation, the transpose of ``nn.Linear.weight``).

GPTQ (AutoGPTQ / Hugging Face "gptq" checkpoints):
  qweight int32 [K/8, N], packed along K (word ``i`` of column n holds k = 8i..8i+7);
  qzeros  int32 [K/g, N/8], packed along N; the v1 format ("gptq", AutoGPTQ) stores ``z - 1``,
          GPTQModel's "gptq_v2" stores ``z``;
  scales  fp16  [K/g, N];
  g_idx   int32 [K]: the group of each input channel, ``k // g`` unless the checkpoint was made with
          act-order (desc_act), where channels were quantized in a permuted order and each group
          is a set of g channels scattered over K.
AWQ (AutoAWQ "GEMM" checkpoints):
  qweight int32 [K, N/8], packed along N with the interleaved order (0, 2, 4, 6, 1, 3, 5, 7):
          nibble ``j`` of word ``c`` holds column ``8c + AWQ_ORDER[j]``;
  qzeros  int32 [K/g, N/8], same interleave, ``z`` stored as is; scales fp16 [K/g, N].

Conversion is exact: values, zeros and scales (fp16 -> fp32) are moved, never requantized. An
act-order layer becomes a ``W4A16Linear`` whose packed columns are the input channels sorted by
group, with ``input_perm`` telling the forward pass which activation channel each column takes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from .. import ops
from .config import W4A16Config
from .linear import W4A16Linear, _QuantLinear, apply_prepack_choice
from .serialization import CheckpointError, TensorSource, _default_device, fill_model

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_GROUP_SIZES = (32, 64, 128)
_GPTQ_FORMATS = {"gptq": 1, "gptq_v2": 0}  # what to add to a stored zero point


def _unpack_int32(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """int32 words [A, B] -> their 4-bit values (int16), nibble j of a word at position
    8 * word + j along ``dim`` (0: [8A, B], 1: [A, 8B])."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    # Arithmetic shifts sign-extend the top nibble; the mask takes it back to 0..15.
    v = ((packed.unsqueeze(-1) >> shifts) & 15).to(torch.int16)  # [A, B, 8]
    a, b = packed.shape
    return v.reshape(a, 8 * b) if dim == 1 else v.permute(0, 2, 1).reshape(8 * a, b)


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise CheckpointError(f"{name}: {msg}")


def _group_config(k: int, n_groups: int, name: str) -> W4A16Config:
    _check(n_groups >= 1 and k % n_groups == 0, name, f"{n_groups} scale groups do not divide in_features {k}")
    g = k // n_groups
    if n_groups == 1:
        return W4A16Config(-1)
    _check(g in _GROUP_SIZES, name, f"group size {g} is not supported (32, 64, 128 or per-channel)")
    return W4A16Config(g)


def _build(q_nk: torch.Tensor, z_ng: torch.Tensor, scales_ng: torch.Tensor, config: W4A16Config,
           bias, perm, compute_dtype, name: str) -> W4A16Linear:
    """The module from unpacked values q [N, K] (0..15), zeros [N, G] and scales [N, G]."""
    _check(bool((z_ng >= 0).all() and (z_ng <= 15).all()), name,
           f"zero points must be 0..15 (found {int(z_ng.min())}..{int(z_ng.max())}); a GPTQ v1 zero of 0 is "
           "stored as 15 by the 'z - 1' convention and reads back as 16, which no 4-bit zero can hold")
    _check(bool(torch.isfinite(scales_ng).all()), name, "scales hold inf or NaN")
    symmetric = bool((z_ng == 8).all())
    config = W4A16Config(config.group_size, symmetric)
    n, k = q_nk.shape
    if compute_dtype is None:
        compute_dtype = scales_ng.dtype if scales_ng.dtype in (torch.float16, torch.bfloat16) else torch.float16
    m = W4A16Linear(k, n, bias is not None, config, compute_dtype, device=q_nk.device)
    m.qweight.copy_(ops.pack_int4(q_nk.to(torch.uint8).contiguous()))
    m.scales.copy_(scales_ng.float())
    if not symmetric:
        m.zeros.copy_(z_ng.to(torch.uint8))
    if bias is not None:
        _check(tuple(bias.shape) == (n,), name, f"bias must be [{n}], got {list(bias.shape)}")
        m.bias.copy_(bias)
    m.set_input_permutation(perm)
    return m


def gptq_linear(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor | None = None,
    bias: torch.Tensor | None = None, *, format: str = "gptq", compute_dtype: torch.dtype | None = None,
    name: str = "gptq layer",
) -> W4A16Linear:
    """A ``W4A16Linear`` holding exactly the weights of one 4-bit GPTQ layer (layouts above).

    ``format``: "gptq" (v1, zeros stored minus one; AutoGPTQ and most Hub checkpoints) or
    "gptq_v2". ``g_idx=None`` means no act-order. ``compute_dtype`` defaults to the scales' dtype.
    """
    _check(format in _GPTQ_FORMATS, name, f"format must be 'gptq' or 'gptq_v2', got {format!r}")
    _check(qweight.dtype == torch.int32 and qweight.dim() == 2, name,
           f"qweight must be int32 [K/8, N], got {qweight.dtype} {list(qweight.shape)}")
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    if g_idx is not None:
        _check(g_idx.dim() == 1 and g_idx.numel() == k, name,
               f"g_idx has {g_idx.numel()} entries but qweight packs K={k} input channels (only 4-bit "
               "checkpoints are supported)")
    _check(scales.dim() == 2 and scales.shape[1] == n, name, f"scales must be [K/g, {n}], got {list(scales.shape)}")
    n_groups = scales.shape[0]
    _check(tuple(qzeros.shape) == (n_groups, n // 8) and n % 8 == 0 and qzeros.dtype == torch.int32, name,
           f"qzeros must be int32 [{n_groups}, {n // 8}], got {qzeros.dtype} {list(qzeros.shape)}")
    config = _group_config(k, n_groups, name)
    g = k // n_groups

    q_kn = _unpack_int32(qweight, 0)  # [K, N]
    z_gn = _unpack_int32(qzeros, 1) + _GPTQ_FORMATS[format]  # [G, N]
    perm = act_order_permutation(g_idx, k, n_groups, name)
    if perm is not None:
        q_kn = q_kn[perm]  # packed column i <- input channel perm[i]; groups now contiguous
    return _build(q_kn.T, z_gn.T, scales.T, config, bias, perm, compute_dtype, name)


def act_order_permutation(g_idx: torch.Tensor | None, k: int, n_groups: int, name: str) -> torch.Tensor | None:
    """The input permutation that makes an act-order layer's groups contiguous (``input_perm``):
    the channels sorted by group, stably. None without ``g_idx`` or when it is the plain ``k // g``."""
    if g_idx is None:
        return None
    g = k // n_groups
    g_idx = g_idx.to(torch.int64)
    _check(bool((g_idx >= 0).all() and (g_idx < n_groups).all()), name, f"g_idx values must be in 0..{n_groups - 1}")
    perm = torch.sort(g_idx, stable=True).indices
    _check(torch.equal(g_idx[perm], torch.arange(k, device=g_idx.device) // g), name,
           f"g_idx does not put exactly {g} input channels in each of the {n_groups} groups")
    return None if torch.equal(perm, torch.arange(k, device=perm.device)) else perm


def _awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    """AWQ words [A, N/8] -> values [A, N]: column 8c + AWQ_ORDER[j] sits in nibble j of word c."""
    v = _unpack_int32(packed, 1).reshape(packed.shape[0], -1, 8)
    out = torch.empty_like(v)
    out[..., list(AWQ_ORDER)] = v
    return out.reshape(packed.shape[0], -1)


def awq_linear(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
    *, compute_dtype: torch.dtype | None = None, name: str = "awq layer",
) -> W4A16Linear:
    """A ``W4A16Linear`` holding exactly the weights of one AutoAWQ GEMM-format layer (above)."""
    _check(qweight.dtype == torch.int32 and qweight.dim() == 2, name,
           f"qweight must be int32 [K, N/8] (AWQ GEMM layout), got {qweight.dtype} {list(qweight.shape)}")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    _check(scales.dim() == 2 and scales.shape[1] == n, name,
           f"scales must be [K/g, {n}], got {list(scales.shape)} (a GEMV-layout checkpoint is not supported)")
    n_groups = scales.shape[0]
    _check(tuple(qzeros.shape) == (n_groups, n // 8) and qzeros.dtype == torch.int32, name,
           f"qzeros must be int32 [{n_groups}, {n // 8}], got {qzeros.dtype} {list(qzeros.shape)}")
    config = _group_config(k, n_groups, name)
    q_kn = _awq_unpack(qweight)
    z_gn = _awq_unpack(qzeros)
    return _build(q_kn.T, z_gn.T, scales.T, config, bias, None, compute_dtype, name)


def linear_names(model: nn.Module) -> list[str]:
    """Every nn.Linear / quantized linear of ``model``, in model order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, _QuantLinear))]


def import_layers(model, checkpoint, device, convert, keys, caller, prepack, marker="qweight") -> nn.Module:
    """Every linear of ``model`` with a ``<name>.<marker>`` tensor in ``checkpoint`` becomes
    ``convert(name=<label for messages>, layer=<name>, **{key: tensor or None for key in keys})``;
    the rest of the checkpoint fills the float rest. All or nothing; errors prefixed by ``caller``."""
    try:
        return _import_into(model, checkpoint, device, convert, keys, prepack, marker)
    except (CheckpointError, FileNotFoundError) as e:
        raise type(e)(f"{caller}: {e}") from None


def _import_into(model, checkpoint, device, convert, keys, prepack, marker) -> nn.Module:
    device = _default_device(model, device)
    with TensorSource.open(checkpoint, device) as source:
        layers = [n for n in linear_names(model) if f"{n}.{marker}" in source]
        if not layers:
            raise CheckpointError(f"{source.label}: no '<layer>.{marker}' tensor matches a linear layer of "
                                  f"{type(model).__name__}")
        consumed = set()
        converted = {}
        for name in layers:
            current = model.get_submodule(name)
            tensors = {key: source.get(f"{name}.{key}") if f"{name}.{key}" in source else None for key in keys}
            consumed.update(f"{name}.{key}" for key in keys)
            module = convert(name=f"{source.label}: layer {name}", layer=name, **tensors)
            _check((module.in_features, module.out_features) == (current.in_features, current.out_features),
                   f"{source.label}: layer {name}",
                   f"{module.in_features}->{module.out_features} in the checkpoint but "
                   f"{current.in_features}->{current.out_features} in the model")
            converted[name] = module
        # Keys HF itself ignores when loading this architecture (e.g. stale rotary inv_freq).
        ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
        skip = consumed | {n for n in source.names() if any(p.search(n) for p in ignored)}
        # The float rest first: fill_model checks everything before assigning anything, so a bad
        # checkpoint leaves the model as it was.
        fill_model(model, source, layers=layers, filled=layers, skip=skip, keep_nonpersistent=True)
        for name, module in converted.items():
            apply_prepack_choice(module, prepack)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, module)
    return model.eval()


def import_gptq(model: nn.Module, checkpoint: Mapping[str, torch.Tensor] | str | os.PathLike, *,
                format: str = "gptq", compute_dtype: torch.dtype | None = None, device=None,
                prepack: bool | None = None) -> nn.Module:
    """Load a 4-bit GPTQ checkpoint into ``model``, a float skeleton of its architecture (meta
    device fine): every linear with a ``<name>.qweight`` becomes a ``W4A16Linear``, every other
    tensor (embeddings, norms, float layers) is loaded as stored. ``checkpoint``: a dict of tensors,
    a .safetensors file or a directory of shards. ``format``: "gptq" (v1) or "gptq_v2" (from the
    checkpoint's quantize_config ``checkpoint_format``). ``prepack`` as in ``replace_linear``
    (default: the prepacked layout of the device where its kernel is built). Returns ``model`` in eval mode;
    ``save_quantized`` then writes it in squash_ops' format."""
    def convert(name, layer, qweight, qzeros, scales, g_idx, bias):
        return gptq_linear(qweight, qzeros, scales, g_idx, bias, format=format, compute_dtype=compute_dtype, name=name)
    return import_layers(model, checkpoint, device, convert, ("qweight", "qzeros", "scales", "g_idx", "bias"), "import_gptq",
                   prepack)


def import_awq(model: nn.Module, checkpoint: Mapping[str, torch.Tensor] | str | os.PathLike, *,
               compute_dtype: torch.dtype | None = None, device=None, prepack: bool | None = None) -> nn.Module:
    """Like ``import_gptq`` for an AutoAWQ GEMM-format checkpoint."""
    def convert(name, layer, qweight, qzeros, scales, bias):
        return awq_linear(qweight, qzeros, scales, bias, compute_dtype=compute_dtype, name=name)
    return import_layers(model, checkpoint, device, convert, ("qweight", "qzeros", "scales", "bias"), "import_awq", prepack)
