"""The W8A8 path through a model: (migrated) norm -> fused norm + int8 quant -> W8A8 linears.

``quantize_w8a8(model, config, calibration=batches)``:

1. every norm site becomes a ``MigratedNorm`` (gamma-migrated unless ``migrate=False``);
2. static activations only: per-tensor scales from a min-max pass over ``calibration`` on the
   float model (``absmax / 127`` at each quantized linear's input);
3. the chosen block linears become ``NormFedW8A8Linear`` (int8 per-channel weights);
4. a norm whose W8A8 consumers share one activation mode emits their int8 input itself, with the
   fused ``*_norm_quant`` op: q, k, v are quantized once, from the float32 norm output.

Linears not fed by a norm (attention output, FFN down-projection) quantize their own input
(``quantize_activation_int8``), per token or with their calibrated scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..quant import W8A8Config, W8A8Linear
from .families import block_linears
from .norm import attached_activation
from .transform import DEFAULT_MAX_SHIFT, MigrationReport, convert_norms

LayerConfig = Callable[[str, nn.Linear], "W8A8Config | None"]


class NormFedW8A8Linear(W8A8Linear):
    """``W8A8Linear`` that uses the int8 activation a fused norm attached to its float input.

    Without an attachment it quantizes the input itself (the same computation, unfused).
    """

    def forward(self, x):
        if isinstance(x, torch.Tensor):
            pre = attached_activation(x)
            if pre is not None:
                x = pre
        return super().forward(x)


@dataclass
class W8A8Report:
    migration: MigrationReport
    # path -> "w8a8 static" / "w8a8 dynamic" / "float"
    linears: dict[str, str] = field(default_factory=dict)
    # norm path -> activation mode of its fused int8 output (None: float only)
    fused_norms: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        counts: dict[str, int] = {}
        for kind in self.linears.values():
            counts[kind] = counts.get(kind, 0) + 1
        fused = sum(mode is not None for mode in self.fused_norms.values())
        return (f"{self.migration}\nlinears: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                + f"; norms with a fused int8 output: {fused}/{len(self.fused_norms)}")


def _call(model: nn.Module, batch) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    else:
        model(batch)


@torch.no_grad()
def calibrate_input_absmax(model: nn.Module, paths: list[str], batches: Iterable) -> dict[str, float]:
    """Max |x| at the input of each module in ``paths`` over ``batches`` (float model).

    Minimal min-max calibration, kept private to this path until ``squash_ops.calibrate``
    (branch quant) lands. Padded positions count too: feed unpadded batches.
    """
    absmax = {p: 0.0 for p in paths}
    hooks = []
    for p in paths:
        def hook(_module, args, p=p):
            absmax[p] = max(absmax[p], float(args[0].detach().abs().max()))
        hooks.append(model.get_submodule(p).register_forward_pre_hook(hook))
    try:
        n = 0
        for batch in batches:
            _call(model, batch)
            n += 1
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("calibration: no batches")
    return absmax


def _as_layer_config(config: W8A8Config | LayerConfig) -> LayerConfig:
    if isinstance(config, W8A8Config):
        return lambda _path, _linear: config
    if callable(config):
        return config
    raise TypeError(f"config must be a W8A8Config or a callable (path, linear) -> W8A8Config | None, got {config!r}")


def quantize_w8a8(
    model: nn.Module,
    config: W8A8Config | LayerConfig = W8A8Config(),
    *,
    calibration: Iterable | None = None,
    migrate: bool = True,
    max_shift: float = DEFAULT_MAX_SHIFT,
) -> W8A8Report:
    """W8A8 of every linear inside the transformer blocks of a supported HF model, in place.

    Args:
        model: a float HF model (``families.SUPPORTED_MODEL_TYPES``), not yet migrated.
        config: one ``W8A8Config`` for all block linears, or ``config(path, linear)`` returning a
            ``W8A8Config`` or None (that linear stays float: a fallback for sensitive layers).
        calibration: batches (dicts of model kwargs, or input tensors) for static scales;
            required when any linear is static. Unpadded batches: pad positions count.
        migrate: gamma migration (``migrate_gamma``) before quantizing.
        max_shift: the migration's tiny-gamma guard (``transform.migration_factors``).

    Embeddings, pooler and heads stay float. Returns a report of what was done to each linear.
    """
    layer_config = _as_layer_config(config)
    chosen: dict[str, W8A8Config] = {}
    linears: dict[str, str] = {}
    for path in block_linears(model):
        cfg = layer_config(path, model.get_submodule(path))
        if cfg is not None and not isinstance(cfg, W8A8Config):
            raise TypeError(f"config({path!r}) must return a W8A8Config or None, got {cfg!r}")
        linears[path] = "float" if cfg is None else f"w8a8 {cfg.activation}"
        if cfg is not None:
            chosen[path] = cfg
    static = [p for p, c in chosen.items() if c.activation == "static"]
    if static:
        # Checked before the model is touched, so a bad call leaves it as it was.
        if calibration is None:
            raise ValueError(f"quantize_w8a8: {len(static)} linears use static activation scales; pass calibration batches")
        calibration = list(calibration)
        if not calibration:
            raise ValueError("quantize_w8a8: calibration has no batches")

    report = W8A8Report(convert_norms(model, max_shift if migrate else None), linears)
    absmax = calibrate_input_absmax(model, static, calibration) if static else {}
    for path, cfg in chosen.items():
        q = NormFedW8A8Linear.from_linear(model.get_submodule(path), cfg)
        if cfg.activation == "static":
            if absmax[path] == 0:
                raise ValueError(f"quantize_w8a8: calibration saw only zeros at the input of {path}")
            q.set_input_scale(absmax[path] / 127)
        model.set_submodule(path, q)

    for site in report.migration.sites:
        norm = model.get_submodule(site.norm)
        consumers = [model.get_submodule(p) for p in site.consumers if p in chosen]
        modes = {c.config.activation for c in consumers}
        # One int8 output serves every consumer only when they agree on the activation mode; a
        # mixed set (e.g. value projection dynamic, query/key static) quantizes per linear.
        mode = modes.pop() if len(modes) == 1 else None
        scale = None
        if mode == "static":
            scale = torch.stack([c.input_scale for c in consumers]).max()
            for c in consumers:
                c.set_input_scale(scale)
        norm.set_act_quant(mode, scale)
        report.fused_norms[site.norm] = mode
    return report


__all__ = ["NormFedW8A8Linear", "W8A8Report", "calibrate_input_absmax", "quantize_w8a8"]
