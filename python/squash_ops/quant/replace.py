"""``replace_linear``: swap a model's ``nn.Linear`` layers for quantized modules, in place.

Each layer is packed once (``quantize_linear``) and its float module dropped as soon as its
replacement is in place, so peak memory is the float model plus one quantized layer. Layers that
cannot take a scheme are left in float and listed with the reason in the returned
``ReplaceReport``; nothing is replaced when a request is invalid (every check runs before the
first swap).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .config import QuantConfig, W4A16Config, W8A8Config, W8A16Config
from .linear import _QuantLinear, apply_prepack_choice, quantize_linear

_CONFIG_TYPES = (W8A16Config, W4A16Config, W8A8Config)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

FilterFn = Callable[[str, nn.Module], bool]


def scheme_label(config: QuantConfig) -> str:
    """A short human-readable name of a scheme: ``w8a16``, ``w4a16 g128 sym``, ``w8a8 static``."""
    if isinstance(config, W4A16Config):
        group = "per-channel" if config.group_size == -1 else f"g{config.group_size}"
        return f"w4a16 {group} {'sym' if config.symmetric else 'asym'}"
    if isinstance(config, W8A8Config):
        return f"w8a8 {config.activation}" + (f" rot{config.rotation}" if config.rotation else "")
    return config.name


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _ratio(before: int, after: int) -> str:
    return f" ({before / after:.2f}x smaller)" if after and before != after else ""


@dataclass
class ReplaceReport:
    """What ``replace_linear`` did.

    ``replaced``: layer name -> the scheme's config (``replace_linear(fresh, cfg,
    overrides=report.replaced)`` repeats the same choice on another copy of the model).
    ``skipped``: layer name -> why it stayed as it was. Names are in model order.
    ``weight_bytes_*``: the replaced layers' weight matrices (float) vs their quantized tensors
    (qweight, scales, zeros); biases are not counted. ``model_bytes_*``: every parameter and
    buffer of the model, shared tensors counted once (so a tied embedding is counted once).
    """

    replaced: dict[str, QuantConfig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    model_bytes_before: int = 0
    model_bytes_after: int = 0

    def _rows(self) -> list[tuple[str, str, str]]:
        rows = [(name, scheme_label(cfg), "") for name, cfg in self.replaced.items()]
        rows += [(name, "unchanged", reason) for name, reason in self.skipped.items()]
        return rows

    def summary(self) -> str:
        return (
            f"{len(self.replaced)} linear layers quantized, {len(self.skipped)} left as they were; "
            f"quantized weights {_human_bytes(self.weight_bytes_before)} -> "
            f"{_human_bytes(self.weight_bytes_after)}{_ratio(self.weight_bytes_before, self.weight_bytes_after)}, "
            f"model {_human_bytes(self.model_bytes_before)} -> {_human_bytes(self.model_bytes_after)}"
            f"{_ratio(self.model_bytes_before, self.model_bytes_after)}"
        )

    def __str__(self) -> str:
        rows = self._rows()
        lines = [self.summary()]
        if rows:
            w_name = max(len(r[0]) for r in rows)
            w_scheme = max(len(r[1]) for r in rows)
            lines += [f"  {n:<{w_name}}  {s:<{w_scheme}}  {why}".rstrip() for n, s, why in rows]
        return "\n".join(lines)

    def table(self):
        """A ``rich.table.Table`` of every layer (quantized ones first), totals in the caption."""
        from rich.table import Table

        table = Table(title="replace_linear", caption=self.summary())
        table.add_column("layer", overflow="fold")
        table.add_column("scheme", no_wrap=True)
        table.add_column("why skipped", overflow="fold")
        for name, scheme, why in self._rows():
            table.add_row(name, f"[dim]{scheme}[/dim]" if why else scheme, why)
        return table

    def __rich__(self):
        return self.table()


def _check_config(config, what: str) -> None:
    if not isinstance(config, _CONFIG_TYPES):
        raise TypeError(
            f"replace_linear: {what} must be a W8A16Config, W4A16Config or W8A8Config, got {config!r}"
        )


def _model_bytes(model: nn.Module) -> int:
    # parameters()/buffers() yield each tensor object once, so tied weights count once.
    return sum(t.nbytes for t in model.parameters()) + sum(t.nbytes for t in model.buffers())


def _quantized_weight_bytes(module: _QuantLinear) -> int:
    return sum(t.nbytes for name, t in module.named_buffers(recurse=False) if name != "bias")


def _linear_paths(model: nn.Module) -> dict[int, list[str]]:
    """id(module) -> every path of each nn.Linear / quantized linear, in model order (a module
    registered under two names is one layer, swapped at both places)."""
    paths: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, (nn.Linear, _QuantLinear)):
            paths.setdefault(id(module), []).append(name)
    return paths


def _parameter_owners(model: nn.Module) -> dict[int, dict[int, str]]:
    """id(parameter) -> {id(module): qualified name} of every module holding it (ties show as more
    than one module)."""
    owners: dict[int, dict[int, str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), {}).setdefault(id(module), f"{mod_name}.{p_name}".lstrip("."))
    return owners


def _why_not(model: nn.Module, name: str, linear: nn.Linear, config: QuantConfig,
             owners: dict[int, dict[int, str]], forced: bool) -> str | None:
    """Why ``linear`` cannot take ``config`` (None when it can)."""
    k = linear.in_features
    if linear.weight.dtype not in _FLOAT_DTYPES:
        return f"weight dtype {linear.weight.dtype} (float32, float16 or bfloat16 expected)"
    if isinstance(config, W4A16Config):
        if k % 2:
            return f"in_features {k} is odd (int4 packs two input channels per byte)"
        if config.group_size != -1 and k % config.group_size:
            return f"in_features {k} is not a multiple of group_size {config.group_size}"
    parent = model.get_submodule(name.rpartition(".")[0])
    if isinstance(parent, nn.MultiheadAttention):
        return "inside nn.MultiheadAttention, which reads out_proj.weight directly"
    if parametrize.is_parametrized(linear):
        return "parametrized weight (e.g. weight_norm); the parametrization would be lost"
    if linear._forward_hooks or linear._forward_pre_hooks or hasattr(linear, "_hf_hook"):
        return "has forward hooks (e.g. accelerate offloading) that a replacement would lose"
    if not forced:
        for p_name, p in (("weight", linear.weight), ("bias", linear.bias)):
            others = [n for m, n in owners.get(id(p), {}).items() if m != id(linear)] if p is not None else []
            if others:
                # e.g. an lm_head tied to the input embeddings: quantizing it would untie the two and
                # keep the float matrix alive anyway (the embedding still needs it).
                return (f"{p_name} tied to {', '.join(others)}; quantizing would untie them and free "
                        f"nothing (name it in overrides to quantize it anyway)")
    return None


def _nonfinite(t: torch.Tensor) -> str | None:
    """None for an all-finite tensor, else what is wrong with it (count and first position)."""
    bad = ~torch.isfinite(t.detach())
    count = int(bad.sum())
    if not count:
        return None
    first = tuple(int(i) for i in bad.nonzero()[0])
    return (f"holds {count} non-finite value{'s' if count > 1 else ''} (first: {float(t.detach()[first])} at "
            f"{list(first)})")


def _unknown_names_error(unknown: list[str], known: list[str]) -> ValueError:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(f"replace_linear: overrides name no linear layer of the model: {', '.join(hints)}")


@dataclass(frozen=True)
class PlannedLayer:
    """One layer ``replace_linear`` would quantize: its name, every path it is registered under
    (a module reachable by two names is one layer, swapped at both), and the scheme it would get."""

    name: str
    paths: tuple[str, ...]
    config: QuantConfig


@dataclass
class ReplacementPlan:
    """What ``replace_linear`` would do, computed without touching the model.

    ``layers``: the layers it would quantize, in model order. ``skipped``: layer name -> why it
    would stay as it is (the reasons ``ReplaceReport.skipped`` gives). The plan holds names only:
    a module reference kept past planning would keep its float weight alive.
    """

    layers: list[PlannedLayer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def __str__(self) -> str:
        lines = [f"{len(self.layers)} linear layers to quantize, {len(self.skipped)} left as they are"]
        lines += [f"  {layer.name}  {scheme_label(layer.config)}" for layer in self.layers]
        lines += [f"  {name}  unchanged  {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _plan(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None,
          overrides: dict[str, QuantConfig | None]) -> ReplacementPlan:
    paths = _linear_paths(model)
    known = [p for names in paths.values() for p in names]
    unknown = [name for name in overrides if name not in set(known)]
    if unknown:
        raise _unknown_names_error(unknown, known)
    owners = _parameter_owners(model)
    plan = ReplacementPlan()
    for names in paths.values():
        name = names[0]
        module = model.get_submodule(name)
        named = [n for n in names if n in overrides]
        if named:
            cfg = overrides[named[0]]
            if cfg is None:
                plan.skipped[name] = "kept in float by overrides"
                continue
        elif filter_fn is not None and not filter_fn(name, module):
            plan.skipped[name] = "excluded by filter_fn"
            continue
        else:
            cfg = config
        if isinstance(module, _QuantLinear):
            if module.config != cfg:
                raise ValueError(
                    f"replace_linear: {name} is already quantized as {scheme_label(module.config)}; its float "
                    f"weight is gone, so it cannot become {scheme_label(cfg)}: start from the float model"
                )
            plan.skipped[name] = f"already quantized ({scheme_label(cfg)})"
            continue
        if module.weight.is_meta:
            raise ValueError(
                f"replace_linear: {name} has its weight on the meta device; load the weights first "
                f"(or rebuild a saved quantized model with squash_ops.load_quantized)"
            )
        why = _why_not(model, name, module, cfg, owners, forced=bool(named))
        if why is not None:
            plan.skipped[name] = why
            continue
        bad = _nonfinite(module.weight)
        if bad is not None:
            raise ValueError(
                f"replace_linear: {name}.weight {bad}; its quantized form would be garbage: fix the weight, or "
                f"keep the layer in float with overrides={{{name!r}: None}}"
            )
        plan.layers.append(PlannedLayer(name, tuple(names), cfg))
    return plan


def plan_replacement(
    model: nn.Module,
    config: QuantConfig,
    filter_fn: FilterFn | None = None,
    *,
    overrides: Mapping[str, QuantConfig | None] | None = None,
) -> ReplacementPlan:
    """What ``replace_linear(model, config, filter_fn, overrides=overrides)`` would quantize and
    what it would skip (with why), without touching ``model``. Runs every check of
    ``replace_linear`` and raises what it raises, so a plan that comes back is one it would carry out."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"replace_linear: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.Linear, _QuantLinear)):
        raise ValueError("replace_linear: model is itself a linear layer; use squash_ops.quant.quantize_linear")
    _check_config(config, "config")
    overrides = dict(overrides or {})
    for name, cfg in overrides.items():
        if cfg is not None:
            _check_config(cfg, f"overrides[{name!r}]")
    return _plan(model, config, filter_fn, overrides)


def replace_linear(
    model: nn.Module,
    config: QuantConfig,
    filter_fn: FilterFn | None = None,
    *,
    overrides: Mapping[str, QuantConfig | None] | None = None,
    compute_dtype: torch.dtype | None = None,
    prepack: bool | None = None,
) -> ReplaceReport:
    """Replace every ``nn.Linear`` of ``model`` (in place) by the quantized module of ``config``.

    - ``filter_fn(name, module) -> bool`` picks the layers (``name`` as in ``named_modules``);
      layers it rejects stay as they are.
    - ``overrides``: layer name -> config, or ``None`` to keep that layer in float. An override
      wins over ``config`` and ``filter_fn``; e.g. ``overrides={"model.layers.0.mlp.down_proj":
      None}`` quantizes all but that layer. Naming a layer whose weight is tied (an ``lm_head``
      sharing the embedding matrix) quantizes it although it is skipped by default. Unknown names
      raise (with the closest layer name as a hint).
    - ``compute_dtype``: activation dtype of the weight-only schemes (default: the weight's dtype
      when float16/bfloat16, else bfloat16).
    - ``prepack``: put the W8A16 / W4A16 layers in the prepacked layout (``module.prepack()``)
      of the layer's device as each is made. ``None`` (default): where it is faster, i.e. where
      this build has the prepacked kernel: on CUDA the small-M tensor-core path (what decode
      needs; the canonical op has none), on the CPU the AVX2 / scalar kernels that dequantize in
      registers (the canonical CPU op dequantizes the whole weight per call). ``True``: every
      layer the layout can hold (CUDA: N and K multiples of 8; CPU: any); ``False``: none. Layers the layout cannot hold stay canonical and work as
      before (``squash_ops.prepack(model)`` reports them). Checkpoints are canonical either way.

    Skipped with a reason: in_features that the scheme cannot group (int4: odd, or not a multiple
    of group_size), tied weights or biases, layers inside ``nn.MultiheadAttention``, parametrized
    or hooked layers, non-float weights, layers rejected by ``filter_fn`` or kept by ``overrides``.

    Calling it again is harmless: layers already quantized with the scheme requested for them are
    skipped as "already quantized". Asking for a different scheme on an already quantized layer
    raises (its float weight is gone; reload the float model instead).

    A weight holding inf or NaN raises (naming the layer): its quantized form would be garbage.
    Every check runs before the first layer is replaced, so a refused call leaves the model as it was.

    Returns the ``ReplaceReport``. ``plan_replacement`` (same arguments) says what it would do
    without doing it.
    """
    plan = plan_replacement(model, config, filter_fn, overrides=overrides)
    report = ReplaceReport(skipped=dict(plan.skipped), model_bytes_before=_model_bytes(model))
    for layer in plan.layers:
        names, cfg = layer.paths, layer.config
        linear = model.get_submodule(names[0])
        quantized = quantize_linear(linear, cfg, compute_dtype)
        apply_prepack_choice(quantized, prepack)
        report.weight_bytes_before += linear.weight.nbytes
        report.weight_bytes_after += _quantized_weight_bytes(quantized)
        for name in names:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, quantized)
        report.replaced[names[0]] = cfg
        del linear, quantized
    report.model_bytes_after = _model_bytes(model)
    return report
