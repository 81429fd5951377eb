"""The W8A8 path through a model: (migrated) norm -> fused norm + int8 quant -> W8A8 linears.

``quantize_w8a8(model, config, calibration=batches)`` chains four steps, each usable alone:

0. with ``smooth=True``: ``search_smoothing`` on the calibration batches, then the value sites'
   factors folded (``fold_value_smoothing``);
1. ``convert_norms`` / ``migrate_gamma``: every norm site becomes a ``MigratedNorm`` (gamma folded
   into its consumers unless ``migrate=False``; the norm sites' smoothing factors with it);
2. ``replace_linear``: the chosen block linears become ``W8A8Linear`` (int8 per-channel weights);
   smoothed FFN down-projections are packed with their factor (``input_mul`` at run time);
3. ``calibrate``: static per-tensor activation scales (static layers only);
4. ``fuse_norm_quant``: a norm whose W8A8 consumers share one activation mode emits their int8
   input itself, with the fused ``*_norm_quant`` op: q, k, v are quantized once.

Linears no norm feeds (attention output, FFN down-projection) quantize their own input
(``quantize_activation_int8``), per token or with their calibrated scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..quant import CalibrationStats, ReplaceReport, W8A8Config, W8A8Linear, calibrate, replace_linear
from ..quant.calibrate import check_method
from ..quant.qat import QATConfig, QATReport, reference_outputs
from ..quant.ranges import check_search, tune_static_scales
from ..quant.replace import plan_replacement
from .families import block_linears, norm_sites, value_sites
from .norm import MigratedNorm
from .smoothing import SmoothingPlan, fold_value_smoothing, search_smoothing
from .transform import DEFAULT_MAX_SHIFT, MigrationReport, convert_norms, plan_norms
from .value_rotation import check_value_rotation, fold_value_rotation

LayerConfig = Callable[[str, nn.Linear], "W8A8Config | None"]


def fuse_norm_quant(model: nn.Module) -> dict[str, str | None]:
    """Let every converted norm emit the int8 input of its ``W8A8Linear`` consumers.

    A site fuses when its W8A8 consumers agree on the activation mode (float consumers keep
    reading the float output) and, when static, on the calibrated scale; otherwise each consumer
    quantizes for itself. Run it after ``calibrate`` (static scales are read from the consumers at
    run time, so recalibrating later needs no new call). Returns norm path -> fused mode or None.
    """
    sites, _ = norm_sites(model)
    fused = {}
    for site in sites:
        norm = model.get_submodule(site.norm)
        if not isinstance(norm, MigratedNorm):
            raise ValueError(f"fuse_norm_quant: {site.norm} is a {type(norm).__name__}; convert the norms first "
                             "(migrate_gamma or convert_norms)")
        consumers = [m for m in (model.get_submodule(p) for p in site.consumers) if isinstance(m, W8A8Linear)]
        modes = {c.config.activation for c in consumers}
        mode = modes.pop() if len(modes) == 1 else None
        if any(c.transforms_input for c in consumers):
            mode = None  # such a consumer quantizes its transformed float input itself
        if mode == "static":
            scales = [c.input_scale for c in consumers]
            if any(s is None for s in scales):
                raise ValueError(f"fuse_norm_quant: a static consumer of {site.norm} has no input scale; calibrate first")
            if not all(torch.equal(s, scales[0]) for s in scales):
                mode = None
        norm.set_act_quant(mode, consumers[0] if mode == "static" else None)
        fused[site.norm] = mode
    return fused


@dataclass
class W8A8Report:
    migration: MigrationReport
    replaced: ReplaceReport
    calibration: CalibrationStats | None
    # norm path -> activation mode of its fused int8 output (None: float output only)
    fused_norms: dict[str, str | None] = field(default_factory=dict)
    smoothing: SmoothingPlan | None = None
    tuned: str = ""  # what tune_static_scales did to the static scales
    qat: QATReport | None = None

    def __str__(self) -> str:
        fused = sum(mode is not None for mode in self.fused_norms.values())
        smoothing = "" if self.smoothing is None else f"{self.smoothing}\n"
        tuned = f"\nstatic scales: {self.tuned}" if self.tuned else ""
        return (f"{smoothing}{self.migration}\n{self.replaced.summary()}\n"
                f"norms with a fused int8 output: {fused}/{len(self.fused_norms)}{tuned}")


def _per_layer(model: nn.Module, config: W8A8Config | LayerConfig) -> dict[str, W8A8Config | None]:
    if isinstance(config, W8A8Config):
        return dict.fromkeys(block_linears(model), config)
    if not callable(config):
        raise TypeError(f"config must be a W8A8Config or a callable (path, linear) -> W8A8Config | None, got {config!r}")
    out = {}
    for path in block_linears(model):
        cfg = config(path, model.get_submodule(path))
        if cfg is not None and not isinstance(cfg, W8A8Config):
            raise TypeError(f"config({path!r}) must return a W8A8Config or None, got {cfg!r}")
        out[path] = cfg
    return out


def quantize_w8a8(
    model: nn.Module,
    config: W8A8Config | LayerConfig = W8A8Config(),
    *,
    calibration: Iterable | None = None,
    migrate: bool = True,
    max_shift: float = DEFAULT_MAX_SHIFT,
    smooth: bool = False,
    runtime_smoothing: bool = True,
    rotate_attn_out: int = 0,
    method: str = "minmax",
    percentile: float = 99.99,
    search: str | None = None,
    qat: QATConfig | None = None,
    progress: bool = False,
) -> W8A8Report:
    """W8A8 of the linears inside the transformer blocks of a supported HF model, in place.

    Args:
        model: a float HF model (``families.SUPPORTED_MODEL_TYPES``), not yet migrated.
        config: one ``W8A8Config`` for all block linears, or ``config(path, linear)`` returning a
            ``W8A8Config`` or None (that linear stays float: a fallback for sensitive layers).
        calibration: batches for ``calibrate`` (HF batch dicts; padding is left out); required
            when any linear is static or ``smooth`` is set.
        migrate: gamma migration before quantizing (else the norms are converted with factor 1,
            which still fuses their int8 output).
        max_shift: the migration's tiny-gamma guard (``transform.migration_factors``).
        smooth: channel smoothing searched per site on ``calibration`` (``smoothing.py``): free
            where it folds (norm-fed inputs, the attention-output projection), one per-channel
            multiply at run time on each smoothed FFN down-projection input.
        runtime_smoothing: with ``smooth``, also smooth the FFN down-projections (False: only the
            folded sites, so smoothing adds no op at run time).
        rotate_attn_out: a block size b (dividing head_dim; 0 = none): the W8A8 attention-output
            projections' input rotated by b-blocks of a Hadamard matrix, folded into the value
            projection and the output projection (``value_rotation.py``): free at run time.
        method, percentile, progress: passed to ``calibrate``.
        search, qat: the static scales then searched ("mse" / "token_clip") and / or learned
            (QAT against the float model's outputs on ``calibration``): ``ranges.tune_static_scales``.

    Embeddings, pooler and heads stay float.

    All or nothing: invalid arguments and everything the steps would refuse (a norm or linear that
    cannot be migrated, a layer that cannot be quantized, e.g. a non-finite weight) raise before the
    model is touched; a failure after that (e.g. calibration batches that never reach a static
    layer or carry NaN) restores the model as it was. The price: the original float modules stay
    alive until the transform has succeeded (peak memory: the float model plus its int8 layers).
    """
    filter_none = lambda _name, _module: False  # noqa: E731  (only the per-layer overrides apply)
    per_layer = _per_layer(model, config)
    static = [p for p, c in per_layer.items() if c is not None and c.activation == "static"]
    if static or smooth:
        if calibration is None:
            why = f"{len(static)} linears use static activation scales" if static else "smoothing is searched on them"
            raise ValueError(f"quantize_w8a8: {why}; pass calibration batches")
        calibration = list(calibration)
        if not calibration:
            raise ValueError("quantize_w8a8: calibration has no batches")
        check_method(method, percentile, "quantize_w8a8")
    check_search(search)
    if (search or qat) and not static:
        raise ValueError("quantize_w8a8: search and qat tune static activation scales; no linear is static")
    plan_replacement(model, W8A8Config(), filter_none, overrides=per_layer)
    # The float model's outputs, before anything changes: what token clipping and QAT aim at.
    targets = reference_outputs(model, calibration) if search == "token_clip" or qat else None
    rotated = [site for site in value_sites(model) if per_layer.get(site.output)] if rotate_attn_out else []
    for site in rotated:
        check_value_rotation(site, rotate_attn_out)
    smoothing = None
    if smooth:
        kinds = ("norm", "value", "ffn_down") if runtime_smoothing else ("norm", "value")
        # The search sees the rotation the fold will make (as the same rotation run in the layer).
        searched = dict(per_layer) | {s.output: replace(per_layer[s.output], rotation=rotate_attn_out) for s in rotated}
        smoothing = search_smoothing(model, searched, calibration, migrate=migrate, max_shift=max_shift, kinds=kinds)
    norm_factors = smoothing.norm_factors() if smoothing else {}
    value_factors = smoothing.value_factors() if smoothing else {}
    runtime_factors = smoothing.runtime_factors() if smoothing else {}
    plans, _ = plan_norms(model, max_shift if migrate else None, norm_factors)
    values = [site for site in value_sites(model) if site.value in value_factors] if value_factors else []

    touched = [p.site.norm for p in plans] + [q for p in plans for q in p.site.consumers + p.site.residual_outputs]
    touched += [q for site in values + rotated for q in (site.value, site.output)]
    undo = _Undo(model, touched + list(per_layer))
    try:
        for site in values:
            fold_value_smoothing(model, site, value_factors[site.value])
        for site in rotated:
            fold_value_rotation(model, site, rotate_attn_out)
        migration = convert_norms(model, max_shift if migrate else None, norm_factors)
        floats = {p: model.get_submodule(p) for p in runtime_factors}
        replaced = replace_linear(model, W8A8Config(), filter_none, overrides=per_layer)
        for path, s in runtime_factors.items():
            model.set_submodule(path, W8A8Linear.from_linear(floats[path], per_layer[path], smoothing=s))
        stats = calibrate(model, calibration, method, percentile, progress=progress) if static else None
        tuned, qat_report = tune_static_scales(model, calibration, targets, search, qat) if static else ("", None)
        fused = fuse_norm_quant(model)
    except BaseException:
        undo.restore()
        raise
    return W8A8Report(migration, replaced, stats, fused, smoothing, tuned, qat_report)


class _Undo:
    """The modules at ``paths`` and the weight and bias Parameters of the nn.Linear among them, as
    they are now; ``restore()`` puts them back. The transforms replace modules and Parameters
    rather than writing into them (transform._fold_into, smoothing.fold_value_smoothing), so the
    originals are intact."""

    def __init__(self, model: nn.Module, paths: list[str]):
        self.model = model
        # Parents before children: restoring a parent brings back the original object, into which
        # the children are then set.
        self.modules = {p: model.get_submodule(p) for p in sorted(set(paths), key=lambda p: p.count("."))}
        self.weights = [(m, m.weight, m.bias) for m in self.modules.values() if isinstance(m, nn.Linear)]

    def restore(self) -> None:
        for path, module in self.modules.items():
            self.model.set_submodule(path, module)
        for module, weight, bias in self.weights:
            module.weight = weight
            module.bias = bias
