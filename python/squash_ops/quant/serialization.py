"""Save a quantized model and rebuild it bit-exactly from a float skeleton.

A directory holds:

- ``squash_model.safetensors``: every parameter and buffer of the model (quantized layers in the
  canonical format of docs/FORMATS.md, the float rest as it was, non-persistent buffers included
  so a skeleton built on the meta device comes back complete). A tensor shared by several names
  (tied embeddings) is stored once.
- ``squash_config.json``: format name and version, the model class, and per quantized layer its
  scheme config, sizes, bias, compute dtype and optional buffers (a static scale, an input
  permutation); per norm its kind of module (``norms``: a float ``LayerNorm`` / ``*RMSNorm`` by
  class name, or a ``MigratedNorm`` with its kind, eps, width, which of weight / bias it holds and
  its fused int8 output: none, per token, or static with the scale of the named W8A8 consumer);
  the post-norm block outputs that scale their residual back (``residual_outputs``); the
  shared-tensor aliases; a SHA-256 of every stored tensor's bytes (``checksums``),
  so a flipped byte is caught at load; a save id that the safetensors metadata repeats, so files
  from two different saves are never mixed. Checkpoints written before checksums existed (no
  ``checksums`` key) still load, with a warning that their tensors cannot be verified.
- ``config.json`` when the model has a Hugging Face config, so the skeleton can be rebuilt from the
  directory alone (``AutoConfig.from_pretrained(directory)``).

Format version 2 added ``norms`` and ``residual_outputs`` (so a gamma-migrated W8A8 model from
``squash_ops.migration.quantize_w8a8`` round-trips); version 1 files, which have neither, load as
before.

``load_quantized(skeleton, directory)`` checks every entry of the config (types, sizes, schemes this
version can rebuild), swaps the skeleton's layers for empty quantized modules (on the meta device),
then assigns every tensor from the file after checking its name, shape, dtype and checksum against
what the model expects; any problem raises ``CheckpointError`` naming the file and the layer, and
leaves the skeleton as it was. The loaded tensors replace the skeleton's (so its dtype follows the
file).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .. import __version__
from .config import config_from_dict, config_to_dict
from .linear import MODULES, _QuantLinear, apply_prepack_choice, empty_quantized_linear

FORMAT = "squash_ops.quantized"
FORMAT_VERSION = 2
# Version 1 is version 2 without "norms" and "residual_outputs" (no migrated model could be saved).
READ_VERSIONS = (1, 2)
CONFIG_FILE = "squash_config.json"
TENSORS_FILE = "squash_model.safetensors"
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A quantized checkpoint that cannot be loaded into the given model (the message names the
    file and, where one is at fault, the layer)."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def checksum(t: torch.Tensor) -> str:
    """``"sha256:<hex>"`` of the tensor's bytes (C order), as stored in the safetensors file."""
    data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return "sha256:" + hashlib.sha256(data.numpy()).hexdigest()


def _layer_spec(module: _QuantLinear) -> dict:
    compute = getattr(module, "compute_dtype", None)
    return {
        "module": type(module).__name__,
        "config": config_to_dict(module.config),
        "in_features": module.in_features,
        "out_features": module.out_features,
        "bias": module.bias is not None,
        "compute_dtype": None if compute is None else _dtype_name(compute),
        "optional_buffers": sorted(n for n in module.optional_buffers() if getattr(module, n) is not None),
    }


def _is_float_norm(module: nn.Module) -> bool:
    # The norms gamma migration converts (migration.transform._norm_params) and nothing else.
    return isinstance(module, nn.LayerNorm) or (type(module).__name__.endswith("RMSNorm") and hasattr(module, "weight"))


def _norm_width(module: nn.Module) -> int | None:
    """The hidden size of a float norm or MigratedNorm (None: neither)."""
    from ..migration.norm import MigratedNorm

    if isinstance(module, MigratedNorm):
        return module.factor.numel()
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    return module.weight.shape[-1] if _is_float_norm(module) else None


def _norm_specs(model: nn.Module) -> tuple[dict, dict]:
    """(``norms``, ``residual_outputs``) entries of squash_config.json for ``model``."""
    # Imported here: squash_ops.migration imports squash_ops.quant.
    from ..migration.norm import MigratedNorm, ResidualScaledOutput

    path_of: dict[int, str] = {}
    for name, m in model.named_modules():
        path_of.setdefault(id(m), name)
    norms, residual = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, MigratedNorm):
            scale_from = None
            if m._scale_from:
                if id(m._scale_from[0]) not in path_of:
                    raise ValueError(f"save_quantized: {name} takes its static scale from a layer outside the model")
                scale_from = path_of[id(m._scale_from[0])]
            norms[name] = {"module": "MigratedNorm", "kind": m.kind, "eps": m.eps, "hidden": m.factor.numel(),
                           "weight": m.weight is not None, "bias": m.bias is not None,
                           "act_quant": m.act_quant, "scale_from": scale_from}
        elif _is_float_norm(m):
            norms[name] = {"module": type(m).__name__}
        elif isinstance(m, ResidualScaledOutput):
            residual[name] = {"module": "ResidualScaledOutput", "hidden": m.residual_scale.numel()}
    return norms, residual


def _all_tensors(model: nn.Module):
    """(qualified name, tensor) of every parameter and buffer (non-persistent ones too), under
    every name it is reachable by."""
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for store in (module._parameters, module._buffers):
            for attr, t in store.items():
                if t is not None:
                    yield f"{mod_name}.{attr}".lstrip("."), t


def _saved_tensors(model: nn.Module):
    """``_all_tensors`` with prepacked layers' weights in the canonical layout (unprepacked one
    layer at a time): checkpoints never hold a prepacked layout (docs/FORMATS.md)."""
    for mod_name, module in model.named_modules(remove_duplicate=False):
        buffers = module.canonical_buffers() if isinstance(module, _QuantLinear) else module._buffers
        for store in (module._parameters, buffers):
            for attr, t in store.items():
                if t is not None:
                    yield f"{mod_name}.{attr}".lstrip("."), t


def _atomic_write(path: Path, write) -> None:
    # A crash mid-save leaves the previous file (or none), never a truncated one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_quantized(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model`` (quantized by ``replace_linear``, calibrated or not) to ``directory``
    (created if needed; our two files are overwritten). Returns the directory. Prepacked layers
    are written in the canonical layout (the same bytes as the canonical model)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers = {name: _layer_spec(m) for name, m in model.named_modules() if isinstance(m, _QuantLinear)}
    norms, residual_outputs = _norm_specs(model)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[int, str] = {}
    storages: set[tuple] = set()
    alive: list[torch.Tensor] = []
    for name, t in _saved_tensors(model):
        if t.is_meta:
            raise ValueError(f"save_quantized: {name} is on the meta device; nothing to save")
        if id(t) in first_name:
            if first_name[id(t)] != name:
                aliases[name] = first_name[id(t)]
            continue
        first_name[id(t)] = name
        # Held until the end: a prepacked layer's canonical tensors are made on the fly, and a
        # freed one's id could come back for the next tensor and pass for a tie.
        alive.append(t)
        storage = (t.device, t.untyped_storage().data_ptr())
        # safetensors refuses two entries over one storage: distinct views of one storage are
        # stored as copies (rare; ties are the same tensor object and become aliases above).
        t = t.detach().to("cpu").contiguous()
        tensors[name] = t.clone() if storage in storages else t
        storages.add(storage)
    save_id = uuid.uuid4().hex
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "squash_ops_version": __version__,
        "save_id": save_id, "architecture": type(model).__name__, "tensors": TENSORS_FILE,
        "layers": layers, "norms": norms, "residual_outputs": residual_outputs, "aliases": aliases, "checksums": {n: checksum(t) for n, t in tensors.items()},
    }
    _atomic_write(directory / TENSORS_FILE, lambda p: save_file(
        tensors, p, metadata={"format": "pt", "squash_format_version": str(FORMAT_VERSION), "save_id": save_id}))
    _atomic_write(directory / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(header, indent=1) + "\n"))
    hf_config = getattr(model, "config", None)
    if hasattr(hf_config, "save_pretrained"):
        hf_config.save_pretrained(directory)
    return directory


def _read_header(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (was the model saved with save_quantized?)")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a squash_ops quantized-model config "
                              f"(format {header.get('format') if isinstance(header, dict) else None!r})")
    version = header.get("format_version")
    if type(version) is not int or version not in READ_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(
            f"{path} has format_version {version!r}; this squash_ops ({__version__}) reads "
            f"versions {', '.join(map(str, READ_VERSIONS))}" + ("; upgrade squash_ops" if newer else "")
        )
    header.setdefault("norms", {})
    header.setdefault("residual_outputs", {})
    for key, kind in (("layers", dict), ("norms", dict), ("residual_outputs", dict), ("aliases", dict),
                      ("architecture", str), ("save_id", str)):
        if not isinstance(header.get(key), kind):
            raise CheckpointError(f"{path}: '{key}' is missing or not a {kind.__name__}")
    for key in ("layers", "norms", "residual_outputs"):
        for name, spec in header[key].items():
            if not isinstance(spec, dict):
                raise CheckpointError(f"{path}: layer {name}: its entry must be an object, got {type(spec).__name__}")
    for key in ("aliases", "checksums"):
        entries = header.get(key, {})
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise CheckpointError(f"{path}: '{key}' must map tensor names to strings")
    if "checksums" not in header:
        warnings.warn(f"{path} records no tensor checksums (saved by an older squash_ops): its tensors are "
                      "loaded without verifying their bytes; save it again to add them", stacklevel=3)
    return header


# The largest in_features / out_features a layer entry may claim: the kernels index with int32.
_MAX_FEATURES = 2**31 - 1
_COMPUTE_DTYPES = ("float16", "bfloat16")


def _check_spec(spec: dict, name: str, where: Path) -> None:
    """Types and ranges of one layer entry of squash_config.json (a hand-edited or corrupt file
    must give a CheckpointError naming the layer, not a TypeError deep inside a constructor)."""
    def bad(msg):
        raise CheckpointError(f"{where}: layer {name}: {msg}")

    for key in ("module", "config", "in_features", "out_features", "bias"):
        if key not in spec:
            bad(f"the entry has no {key!r}")
    module, config = spec["module"], spec["config"]
    if not isinstance(config, dict):
        bad(f"config must be an object, got {type(config).__name__}")
    scheme = config.get("scheme")
    known = sorted(cls.__name__ for cls in MODULES.values())
    if not (isinstance(module, str) and module in known and isinstance(scheme, str) and scheme in MODULES):
        bad(f"it is a {module!r} layer (scheme {scheme!r}), which squash_ops {__version__} cannot rebuild (it "
            f"knows {', '.join(known)}); was it saved by a newer squash_ops? Upgrade to load it")
    for key in ("in_features", "out_features"):
        v = spec[key]
        if type(v) is not int or not 1 <= v <= _MAX_FEATURES:
            bad(f"{key} must be an integer in 1..{_MAX_FEATURES}, got {v!r}")
    if type(spec["bias"]) is not bool:
        bad(f"bias must be true or false, got {spec['bias']!r}")
    compute = spec.get("compute_dtype")
    if compute is not None and compute not in _COMPUTE_DTYPES:
        bad(f"compute_dtype must be null, {' or '.join(_COMPUTE_DTYPES)}, got {compute!r}")
    optional = spec.get("optional_buffers", [])
    if not isinstance(optional, list) or not all(isinstance(b, str) for b in optional):
        bad(f"optional_buffers must be a list of buffer names, got {optional!r}")


def _empty_layer(spec: dict, name: str, where: Path) -> _QuantLinear:
    _check_spec(spec, name, where)
    try:
        config = config_from_dict(spec["config"])
        compute = spec.get("compute_dtype")
        module = empty_quantized_linear(
            config, spec["in_features"], spec["out_features"], spec["bias"],
            None if compute is None else getattr(torch, compute), device="meta",
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: layer {name}: bad entry ({type(e).__name__}: {e})") from None
    if type(module).__name__ != spec.get("module"):
        raise CheckpointError(f"{where}: layer {name}: module {spec.get('module')!r} does not match "
                              f"scheme {config.name!r}")
    optional = module.optional_buffers()
    for buf in spec.get("optional_buffers", []):
        if buf not in optional:
            raise CheckpointError(f"{where}: layer {name}: unknown buffer {buf!r}")
        shape, dtype = optional[buf]
        setattr(module, buf, torch.empty(shape, dtype=dtype, device="meta"))
    return module


_ACT_QUANT = (None, "dynamic", "static")


def _empty_norm(spec: dict, current: nn.Module, name: str, where: Path) -> nn.Module | None:
    """The empty (meta) ``MigratedNorm`` a ``norms`` entry describes, or None for a float norm
    (the skeleton's own, after checking that it is the same class). Its fused int8 output is set
    once the layers are loaded (``_set_act_quant``)."""
    from ..migration.norm import MigratedNorm

    def bad(msg):
        raise CheckpointError(f"{where}: layer {name}: {msg}")

    width = _norm_width(current)
    if width is None:
        bad(f"is a {type(current).__name__} in the model, not a norm")
    module = spec.get("module")
    if module != "MigratedNorm":
        if module != type(current).__name__:
            bad(f"is a {module!r} in the checkpoint but a {type(current).__name__} in the model")
        return None
    for key in ("kind", "eps", "hidden", "weight", "bias", "act_quant", "scale_from"):
        if key not in spec:
            bad(f"the entry has no {key!r}")
    eps, hidden = spec["eps"], spec["hidden"]
    if type(hidden) is not int or hidden != width:
        bad(f"hidden is {hidden!r} in the checkpoint but {width} in the model")
    if type(eps) not in (int, float) or not 0 < eps < float("inf"):
        bad(f"eps must be a finite positive number, got {eps!r}")
    for key in ("weight", "bias"):
        if type(spec[key]) is not bool:
            bad(f"{key} must be true or false, got {spec[key]!r}")
    if spec["act_quant"] not in _ACT_QUANT:
        bad(f"act_quant must be null, 'dynamic' or 'static', got {spec['act_quant']!r}")
    scale_from = spec["scale_from"]
    if not (scale_from is None or isinstance(scale_from, str)) or (spec["act_quant"] == "static") != (scale_from is not None):
        bad(f"scale_from must name a W8A8 layer when act_quant is static and be null otherwise, "
            f"got {spec['scale_from']!r}")
    empty = lambda present: torch.empty(hidden, device="meta") if present else None  # noqa: E731
    try:
        return MigratedNorm(spec["kind"], eps, empty(spec["weight"]), empty(spec["bias"]), empty(True))
    except ValueError as e:
        bad(str(e))


def _empty_residual_output(spec: dict, current: nn.Module, name: str, where: Path) -> nn.Module:
    """The ``ResidualScaledOutput`` a ``residual_outputs`` entry describes, wrapped around the
    skeleton's block (its submodules, so their paths and entries stay as they are)."""
    from ..migration.norm import ResidualScaledOutput

    if spec.get("module") != "ResidualScaledOutput":
        raise CheckpointError(f"{where}: layer {name}: a {spec.get('module')!r} block output, which squash_ops "
                              f"{__version__} cannot rebuild (it knows ResidualScaledOutput); was it saved by a "
                              "newer squash_ops? Upgrade to load it")
    try:
        module = ResidualScaledOutput(current, torch.empty(0, device="meta"))
    except ValueError as e:
        raise CheckpointError(f"{where}: layer {name}: {e}") from None
    width = _norm_width(module.LayerNorm)
    if type(spec.get("hidden")) is not int or spec["hidden"] != width:
        raise CheckpointError(f"{where}: layer {name}: hidden is {spec.get('hidden')!r} in the checkpoint but "
                              f"{width} in the model")
    module.residual_scale = torch.empty(width, device="meta")
    return module


def _set_act_quant(model: nn.Module, header: dict, where: Path) -> None:
    """Give each loaded ``MigratedNorm`` its fused int8 output, static ones reading the scale of
    their consumer as ``fuse_norm_quant`` left them."""
    from .linear import W8A8Linear

    for name, spec in header["norms"].items():
        if spec["module"] != "MigratedNorm" or spec["act_quant"] is None:
            continue
        source = spec["scale_from"]
        consumer = model.get_submodule(source) if source in header["layers"] else None
        if source is not None and not (isinstance(consumer, W8A8Linear) and consumer.config.activation == "static"
                                       and consumer.input_scale is not None):
            raise CheckpointError(f"{where}: layer {name}: its static int8 output takes the scale of {source!r}, "
                                  "which is not a calibrated static W8A8 layer of the checkpoint")
        model.get_submodule(name).set_act_quant(spec["act_quant"], consumer)


def _swap_modules(model: nn.Module, header: dict, where: Path) -> dict[str, nn.Module]:
    """Checks every entry, then puts the module it describes at its paths: block outputs first,
    then the norms and layers inside them (their paths run through the new block output).
    Returns path -> the module that was there, in swap order (to undo the swap)."""
    paths: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), []).append(name)

    def current_at(name):
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(f"{where}: layer {name} is not in the model "
                                  f"({type(model).__name__}); was it built from the same config?") from None

    swaps: list[tuple[list[str], nn.Module]] = []
    for name, spec in header["residual_outputs"].items():
        current = current_at(name)
        swaps.append((paths[id(current)], _empty_residual_output(spec, current, name, where)))
    for name, spec in header["norms"].items():
        current = current_at(name)
        module = _empty_norm(spec, current, name, where)
        if module is not None:
            swaps.append((paths[id(current)], module))
    for name, spec in header["layers"].items():
        current = current_at(name)
        module = _empty_layer(spec, name, where)
        if not isinstance(current, (nn.Linear, _QuantLinear)):
            raise CheckpointError(f"{where}: layer {name} is a {type(current).__name__} in the "
                                  f"model, not a linear layer")
        if (current.in_features, current.out_features) != (module.in_features, module.out_features):
            raise CheckpointError(
                f"{where}: layer {name} is {module.in_features}->{module.out_features} in the "
                f"checkpoint but {current.in_features}->{current.out_features} in the model"
            )
        swaps.append((paths[id(current)], module))
    replaced = {}
    for layer_paths, module in swaps:
        for path in layer_paths:
            replaced[path] = model.get_submodule(path)
            model.set_submodule(path, module)
    return replaced


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    parent, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent)
    if attr in owner._parameters:
        old = owner._parameters[attr]
        requires_grad = old.requires_grad if tensor.is_floating_point() else False
        owner._parameters[attr] = tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad)
    else:
        owner._buffers[attr] = tensor


class TensorSource:
    """Named tensors to load, read lazily: an in-memory dict or safetensors files (one, or the
    shards of a directory). ``label`` names it in error messages."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, files=(), device="cpu", label=""):
        self.label = label
        self._dict = tensors or {}
        self._where: dict[str, object] = {}
        self._handles = []
        self.device = device
        for path in files:
            try:
                handle = safe_open(path, framework="pt", device=str(device))
            except SafetensorError as e:
                self.close()
                raise CheckpointError(f"{path} cannot be read (truncated or corrupt?): {e}") from None
            self._handles.append(handle)
            for name in handle.keys():
                self._where[name] = handle

    @classmethod
    def open(cls, checkpoint, device="cpu") -> "TensorSource":
        """A dict of tensors, a .safetensors file or a directory of .safetensors shards."""
        if isinstance(checkpoint, dict):
            return cls(checkpoint, label="the checkpoint dict")
        path = Path(checkpoint)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"{path}: no safetensors file found")
        return cls(files=files, device=device, label=str(path))

    def metadata(self) -> dict:
        return (self._handles[0].metadata() or {}) if self._handles else {}

    def names(self) -> list[str]:
        return list(self._dict) + list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._dict or name in self._where

    def meta(self, name: str) -> torch.Tensor:
        """A meta tensor of the stored shape and dtype (the data is not read)."""
        if name in self._dict:
            return self._dict[name].to("meta")
        sl = self._where[name].get_slice(name)
        if sl.get_dtype() not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{self.label}: {name} has unsupported dtype {sl.get_dtype()}")
        return torch.empty(sl.get_shape(), dtype=_SAFETENSORS_DTYPES[sl.get_dtype()], device="meta")

    def get(self, name: str) -> torch.Tensor:
        if name in self._dict:
            return self._dict[name].to(self.device)
        return self._where[name].get_tensor(name)

    def close(self) -> None:
        for h in self._handles:
            h.__exit__(None, None, None)
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_tensor(name: str, got: torch.Tensor, expected: torch.Tensor, where: str, layers, named) -> None:
    layer = name.rpartition(".")[0]
    what = f"layer {layer}: " if layer in named else ""
    if tuple(got.shape) != tuple(expected.shape):
        raise CheckpointError(f"{where}: {what}{name} has shape {list(got.shape)}, the model "
                              f"expects {list(expected.shape)}")
    # Float tensors take the checkpoint's dtype (a bf16 model loads into an fp32-built skeleton);
    # quantized tensors must be exactly the format's.
    if got.dtype != expected.dtype and not (got.is_floating_point() and expected.is_floating_point()
                                            and layer not in layers):
        raise CheckpointError(f"{where}: {what}{name} has dtype {_dtype_name(got.dtype)}, the "
                              f"model expects {_dtype_name(expected.dtype)}")


def _tensor_at(model: nn.Module, name: str) -> torch.Tensor:
    parent, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent)
    return owner._parameters[attr] if attr in owner._parameters else owner._buffers[attr]


def _is_nonpersistent(model: nn.Module, name: str) -> bool:
    parent, _, attr = name.rpartition(".")
    return attr in model.get_submodule(parent)._non_persistent_buffers_set


def fill_model(model: nn.Module, source: TensorSource, *, layers=(), aliases: dict[str, str] | None = None,
               filled=(), skip=(), keep_nonpersistent: bool = False, checksums: dict[str, str] | None = None,
               modules=()) -> None:
    """Assign every parameter and buffer of ``model`` from ``source`` after checking that the names,
    shapes and dtypes match (``layers``: quantized layer names, whose tensors must keep the exact
    dtype). A name not stored is taken from the stored name it is tied to, in the model (same
    tensor object) or by ``aliases`` (name -> stored name). Tensors of the modules in ``filled``
    are left as they are; stored names in ``skip`` are ignored. ``keep_nonpersistent``: the
    model's non-persistent buffers (which ordinary checkpoints never hold, e.g. rotary inv_freq)
    are kept from the model when not stored. ``checksums``: stored name -> ``checksum(tensor)``;
    every stored tensor must have one and match it. ``modules``: other module names the checkpoint
    describes (norms, block outputs), named in errors as ``layers`` are, their float tensors free
    to take the stored dtype. Nothing is assigned unless everything checks out."""
    aliases = aliases or {}
    named = set(layers) | set(modules)
    filled = tuple(f"{m}." for m in filled)
    expected = {n: t for n, t in _all_tensors(model) if not n.startswith(filled)}
    stored = [n for n in source.names() if n not in skip]
    ties: dict[int, list[str]] = {}
    for n, t in expected.items():
        ties.setdefault(id(t), []).append(n)
    where = source.label

    def listing(names):
        owners = sorted({n.rpartition(".")[0] for n in names if n.rpartition(".")[0] in named})
        return (f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                + (f" (layers {', '.join(owners)})" if owners else ""))

    unexpected = [n for n in stored if n not in expected]
    if unexpected:
        raise CheckpointError(f"{where} holds tensors the model does not have: {listing(unexpected)}")
    bad_aliases = [a for a, src in aliases.items() if a not in expected or src not in source]
    if bad_aliases:
        raise CheckpointError(f"{where} has broken aliases: {listing(bad_aliases)}")
    stored_set = set(stored)
    tied_to = {}
    for n, t in expected.items():
        if n not in stored_set:
            src = aliases.get(n) or next((o for o in ties[id(t)] if o in stored_set), None)
            tied_to[n] = src
    kept = [n for n, src in tied_to.items() if src is None and keep_nonpersistent and _is_nonpersistent(model, n)]
    missing = [n for n, src in tied_to.items() if src is None and n not in kept]
    if missing:
        raise CheckpointError(f"{where} misses tensors the model needs: {listing(missing)}")
    on_meta = [n for n in kept if expected[n].is_meta]
    if on_meta:
        raise CheckpointError(
            f"{where}: the model's non-persistent buffers {listing(on_meta)} are on the meta device and no "
            "checkpoint holds them: build the skeleton on a real device so its constructor computes them"
        )
    for n in kept:
        del tied_to[n]
    for name in stored:
        _check_tensor(name, source.meta(name), expected[name], where, layers, named)
    loaded = {name: source.get(name) for name in stored}
    if checksums is not None:
        for name, t in loaded.items():
            layer = name.rpartition(".")[0]
            what = f"layer {layer}: " if layer in named else ""
            if name not in checksums:
                raise CheckpointError(f"{where}: {what}{name} has no checksum in the config")
            if checksum(t) != checksums[name]:
                raise CheckpointError(f"{where}: {what}{name} does not match its checksum: the file is corrupt "
                                      "(bytes changed since it was saved)")
    for name, t in loaded.items():
        _assign(model, name, t)
    for name, src in tied_to.items():
        _assign(model, name, _tensor_at(model, src))
    for name in kept:
        _assign(model, name, expected[name].to(source.device))


def _default_device(model: nn.Module, device):
    if device is not None:
        return device
    first = next(iter(_all_tensors(model)), (None, None))[1]
    return "cpu" if first is None or first.is_meta else first.device


def load_quantized(model: nn.Module, directory: str | os.PathLike, *, device=None,
                   prepack: bool | None = None) -> nn.Module:
    """Rebuild the quantized model saved by ``save_quantized`` into ``model``, a float skeleton of
    the same architecture and config (its weights are not used: it may live on the meta device).

    Tensors land on ``device`` (default: the skeleton's device, or CPU for a meta skeleton).
    ``prepack`` as in ``replace_linear``: ``None`` (default) puts the W8A16 / W4A16 layers in the
    prepacked layout where that is faster (the device has the prepacked kernel built), ``True``
    wherever the layout fits, ``False`` never; the weights stay bit-exact either way
    (``unprepack()`` gives the file's tensors back). Returns ``model`` in eval mode, bit-exact
    with the saved one. Raises ``FileNotFoundError`` for
    a missing file and ``CheckpointError`` (a ``ValueError``) for a corrupt or mismatched one,
    naming the file and the layer.
    """
    directory = Path(directory)
    config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
    # All or nothing: on any failure the skeleton gets its modules and tensors back.
    tensors_before = list(_all_tensors(model))
    swapped: dict[str, nn.Module] = {}
    try:
        header = _read_header(config_path)
        if header["architecture"] != type(model).__name__:
            raise CheckpointError(f"{config_path} was saved from a {header['architecture']}, "
                                  f"not a {type(model).__name__}")
        if not tensors_path.is_file():
            raise FileNotFoundError(f"{tensors_path} not found")
        with TensorSource(files=[tensors_path], device=_default_device(model, device), label=str(tensors_path)) as src:
            save_id = src.metadata().get("save_id")
            if save_id != header["save_id"]:
                raise CheckpointError(f"{tensors_path} and {config_path} come from different saves "
                                      f"(save id {save_id!r} vs {header['save_id']!r})")
            swapped = _swap_modules(model, header, config_path)
            fill_model(model, src, layers=header["layers"], aliases=header["aliases"],
                       checksums=header.get("checksums"),
                       modules=[*header["norms"], *header["residual_outputs"]])
        for name in header["layers"]:
            try:
                model.get_submodule(name).validate()
            except ValueError as e:
                raise CheckpointError(f"{tensors_path}: layer {name}: {e}") from None
        _set_act_quant(model, header, config_path)
        for name in header["layers"]:
            apply_prepack_choice(model.get_submodule(name), prepack)
    except BaseException as e:
        for path, module in swapped.items():
            model.set_submodule(path, module)
        for name, t in tensors_before:
            _assign(model, name, t)
        if isinstance(e, (CheckpointError, FileNotFoundError)):
            raise type(e)(f"load_quantized: {e}") from None
        raise
    # An inference checkpoint, like from_pretrained: a freshly built skeleton is in training mode
    # (dropout on).
    return model.eval()
