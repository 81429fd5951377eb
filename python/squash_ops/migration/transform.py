"""Gamma migration (Outlier Suppression, Wei et al., NeurIPS 2022) as an in-place model transform.

A norm computes ``y_j = x_hat_j * gamma_j + beta_j`` and linears read ``W @ y``. For any per-channel
factor ``m_j != 0``, ``W @ y == (W * m) @ (x_hat * gamma / m + beta / m)``: the linears' input
columns absorb ``m`` and the norm keeps ``gamma / m`` and ``beta / m``. Migration takes
``m = gamma``: the norm computes ``x_hat + beta / gamma`` (the ops' ``weight=None`` form) and the
activation that gets quantized no longer carries gamma's per-channel outliers.

The tiny-gamma guard is exact: ``m_j = sign(gamma_j) * max(|gamma_j|, |beta_j| / max_shift)``,
and a guarded channel keeps ``gamma_j / m_j`` (|.| < 1) as the norm's weight, so nothing is rounded
away. What a tiny gamma endangers is the shift: the migrated channel is
``x_hat_j * gamma_j / m_j + beta_j / m_j``, and ``x_hat`` has RMS 1 over the channels of every
token by construction, so an unguarded ``beta_j / gamma_j`` of, say, 50 would turn a quiet channel
into the largest value of every token and set the int8 scale. The guard bounds the shift by
``max_shift`` (default 4: the range a unit-RMS ``x_hat`` spans on ordinary tokens). RMSNorm has no
shift, so its channels migrate by ``gamma`` unguarded (``x_hat_j`` itself is O(1)). A channel with
``gamma_j == beta_j == 0`` outputs 0 and keeps ``m_j = 1``. On the real MiniLM the guard acts on
the embeddings' norm only (``|beta / gamma|`` up to 7.5; the block norms stay below 2).

Post-norm blocks (BERT/RoBERTa): the norm's output is also the next block's residual, so the block
outputs reading it become ``ResidualScaledOutput`` (residual multiplied back by ``m``). The last
block's output norm is not migrated: its output leaves the model (``last_hidden_state``, pooler).

Float outputs before and after agree to float32 rounding (tests/test_migration.py, on the real
MiniLM and tiny LLaMA / OPT / BERT).

What it buys depends on where gamma's outliers sit. On MiniLM (``python -m squash_ops.eval.minilm``,
static per-tensor SQNR): the FFN inputs gain 6.8 dB on average (the attention-output norms of
layers 0-4 have gamma 1.1-1.55 on channel 99, the [CLS] outlier channel), but the q/k/v inputs
lose 3.0 dB: the block-output norms have gamma 0.4-0.55 there, below their mean |gamma| of
0.6-0.7, so dividing by gamma makes that outlier relatively larger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .families import NormSite, SkippedNorm, norm_sites
from .norm import MigratedNorm, ResidualScaledOutput

DEFAULT_MAX_SHIFT = 4.0


def migration_factors(gamma: torch.Tensor, beta: torch.Tensor | None = None,
                      max_shift: float = DEFAULT_MAX_SHIFT) -> torch.Tensor:
    """``m = sign(gamma) * max(|gamma|, |beta| / max_shift)``, float32; 1 where that is 0
    (sign(0) taken as +1). See the module docstring for the guard."""
    if not max_shift > 0:
        raise ValueError(f"max_shift must be > 0, got {max_shift}")
    g = gamma.detach().to(torch.float32)
    mag = g.abs()
    if beta is not None:
        mag = torch.maximum(mag, beta.detach().to(torch.float32).abs() / max_shift)
    mag = torch.where(mag == 0, 1.0, mag)
    return torch.where(g < 0, -mag, mag)


@dataclass
class MigratedSite:
    norm: str
    consumers: tuple[str, ...]
    residual_outputs: tuple[str, ...]
    migrated_channels: int
    guarded_channels: int  # |beta / gamma| > max_shift: migrated by less than gamma
    hidden: int
    smoothed: bool = False  # a smoothing factor (smoothing.py) is folded in beside the migration


@dataclass
class MigrationReport:
    max_shift: float | None  # None: norms converted without migration (factor 1)
    sites: list[MigratedSite] = field(default_factory=list)
    skipped: list[SkippedNorm] = field(default_factory=list)

    def __str__(self) -> str:
        head = ("norms converted without migration" if self.max_shift is None
                else f"gamma migration (max_shift={self.max_shift:g})")
        lines = [f"{head}: {len(self.sites)} norms, {len(self.skipped)} left alone"]
        for s in self.sites:
            lines.append(f"  {s.norm} -> {', '.join(s.consumers)}"
                         + (f" (+ residual of {', '.join(s.residual_outputs)})" if s.residual_outputs else "")
                         + f": {s.migrated_channels}/{s.hidden} channels migrated, {s.guarded_channels} guarded"
                         + (", smoothed" if s.smoothed else ""))
        lines += [f"  {s.norm}: left alone ({s.reason})" for s in self.skipped]
        return "\n".join(lines)


def _norm_params(norm: nn.Module, path: str):
    """(kind, eps, gamma, beta) of an HF LayerNorm / RMSNorm, float32."""
    if isinstance(norm, MigratedNorm):
        raise ValueError(f"{path} is already a MigratedNorm: the model was migrated (or prepared) before")
    if isinstance(norm, nn.LayerNorm):
        kind, eps, hidden = "layer", norm.eps, norm.normalized_shape[-1]
        if len(norm.normalized_shape) != 1:
            raise ValueError(f"{path}: only LayerNorm over the last dimension is supported")
    elif type(norm).__name__.endswith("RMSNorm") and hasattr(norm, "weight"):
        kind, hidden = "rms", norm.weight.shape[-1]
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    else:
        raise ValueError(f"{path}: expected a LayerNorm or RMSNorm, got {type(norm).__name__}")
    weight = getattr(norm, "weight", None)
    gamma = torch.ones(hidden) if weight is None else weight.detach().to("cpu", torch.float32)
    bias = getattr(norm, "bias", None) if kind == "layer" else None
    beta = None if bias is None else bias.detach().to("cpu", torch.float32)
    return kind, float(eps), gamma, beta


def _check_foldable(model: nn.Module, path: str, factor: torch.Tensor) -> None:
    """Raise unless ``factor`` can be folded into the linear at ``path`` (a float nn.Linear of the
    norm's width whose folded weight stays finite in its dtype)."""
    lin = model.get_submodule(path)
    if type(lin) is not nn.Linear:
        raise ValueError(
            f"{path}: gamma migration folds into float nn.Linear weights, got {type(lin).__name__} "
            "(migrate before quantizing)"
        )
    if lin.in_features != factor.numel():
        raise ValueError(f"{path}: in_features {lin.in_features} != the norm's hidden size {factor.numel()}")
    w = lin.weight.detach()
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{path}: its weight holds inf or NaN; gamma migration would spread it")
    # |W[:, j] * m_j| <= colmax_j * |m_j|: the largest folded value, without building the product.
    largest = float((w.abs().amax(0).double() * factor.abs().to(w.device, torch.float64)).max())
    if largest > torch.finfo(w.dtype).max:
        raise ValueError(f"{path}: folding the norm's gamma into its {w.dtype} weight overflows "
                         f"(largest folded value {largest:.3g}); migrate a float32 copy of the model")


def _fold_into(model: nn.Module, path: str, factor: torch.Tensor) -> None:
    lin = model.get_submodule(path)
    with torch.no_grad():
        w = lin.weight
        # float64 product, one rounding to the weight's dtype. A new Parameter rather than an
        # in-place update: quantize_w8a8 keeps the original one to restore the model on failure.
        folded = (w.double() * factor.to(w.device, torch.float64)).to(w.dtype)
        lin.weight = nn.Parameter(folded, requires_grad=w.requires_grad)


@dataclass
class _SitePlan:
    site: NormSite
    kind: str
    eps: float
    gamma: torch.Tensor
    beta: torch.Tensor | None
    factor: torch.Tensor  # migration * smoothing: what the consumers' input columns absorb
    migration: torch.Tensor
    device: torch.device


def check_factor(s: torch.Tensor, width: int, where: str) -> torch.Tensor:
    """``s`` as float32 [width], every entry finite and > 0 (a smoothing factor)."""
    s = torch.as_tensor(s).detach().to("cpu", torch.float32)
    if tuple(s.shape) != (width,) or not bool((torch.isfinite(s) & (s > 0)).all()):
        raise ValueError(f"{where}: a smoothing factor must be [{width}] finite and > 0, got shape {list(s.shape)}")
    return s


def plan_norms(model: nn.Module, max_shift: float | None,
               smoothing: Mapping[str, torch.Tensor] | None = None) -> tuple[list[_SitePlan], list[SkippedNorm]]:
    """Everything ``convert_norms`` will do, checked without touching ``model``: every site's norm,
    its gamma/beta (finite), its consumers (foldable) and its residual outputs. Raises ValueError
    (naming the module) on the first problem."""
    if max_shift is not None and not max_shift > 0:
        raise ValueError(f"max_shift must be > 0, got {max_shift}")
    sites, skipped = norm_sites(model)
    smoothing = dict(smoothing or {})
    unknown = set(smoothing) - {site.norm for site in sites}
    if unknown:
        raise ValueError(f"smoothing names norms that feed no linear here: {', '.join(sorted(unknown))}")
    plans = []
    for site in sites:
        norm = model.get_submodule(site.norm)
        kind, eps, gamma, beta = _norm_params(norm, site.norm)
        for name, t in (("weight (gamma)", gamma), ("bias (beta)", beta)):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{site.norm}: its {name} holds inf or NaN")
        migration = torch.ones_like(gamma) if max_shift is None else migration_factors(gamma, beta, max_shift)
        factor = migration
        if site.norm in smoothing:
            factor = migration * check_factor(smoothing[site.norm], gamma.numel(), site.norm)
        if bool((factor != 1).any()):
            for path in site.consumers:
                _check_foldable(model, path, factor)
            for path in site.residual_outputs:
                block = model.get_submodule(path)
                missing = [n for n in ("dense", "dropout", "LayerNorm") if not hasattr(block, n)]
                if missing:
                    raise ValueError(f"{path}: a {type(block).__name__} has no {missing[0]!r} (not a BERT-style "
                                     "block output whose residual can be scaled back)")
        plans.append(_SitePlan(site, kind, eps, gamma, beta, factor, migration, _device_of(norm)))
    return plans, skipped


def convert_norms(model: nn.Module, max_shift: float | None,
                  smoothing: Mapping[str, torch.Tensor] | None = None) -> MigrationReport:
    """Replace every norm site of ``model`` by a ``MigratedNorm``: migrated with
    ``migration_factors(gamma, beta, max_shift)``, or with factor 1 (the same function, still the
    squash norm ops, ready for a fused int8 output) when ``max_shift`` is None. ``smoothing``: norm
    path -> a positive per-channel factor multiplied into that norm's factor (channel smoothing,
    ``smoothing.py``; the same exact algebra as migration).

    All or nothing: every site is checked (``plan_norms``) before the first one is converted."""
    plans, skipped = plan_norms(model, max_shift, smoothing)
    report = MigrationReport(max_shift, skipped=list(skipped))
    for plan in plans:
        report.sites.append(_convert_site(model, plan))
    return report


def _convert_site(model: nn.Module, plan: _SitePlan) -> MigratedSite:
    site, gamma, beta, factor, device = plan.site, plan.gamma, plan.beta, plan.factor, plan.device
    weight = gamma / factor
    guarded = int((plan.migration.abs() > gamma.abs()).sum())
    migrated = int((factor != 1).sum())
    if migrated:
        for path in site.consumers:
            _fold_into(model, path, factor)
        for path in site.residual_outputs:
            model.set_submodule(path, ResidualScaledOutput(model.get_submodule(path), factor.to(device)))
    new = MigratedNorm(
        plan.kind, plan.eps,
        None if bool((weight == 1).all()) else weight.to(device),
        None if beta is None else (beta / factor).to(device),
        factor.to(device),
    )
    model.set_submodule(site.norm, new)
    return MigratedSite(site.norm, site.consumers, site.residual_outputs, migrated, guarded, gamma.numel(),
                        not torch.equal(factor, plan.migration))


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


def migrate_gamma(model: nn.Module, max_shift: float = DEFAULT_MAX_SHIFT) -> MigrationReport:
    """Gamma migration of a supported HF model (``families.SUPPORTED_MODEL_TYPES``), in place.

    Every norm that feeds linear layers becomes a ``MigratedNorm`` computing
    ``x_hat * gamma / m + beta / m``; its consumers' weights become ``W * m`` (per input column);
    post-norm residuals are multiplied back by ``m``. ``m`` is ``gamma`` with the exact tiny-gamma
    guard of ``migration_factors`` (module docstring). Run it on the float model, before any
    linear is quantized. Returns a report of what was migrated and what was left alone.

    Raises ``UnsupportedModelError`` (a ValueError) for an unsupported architecture.
    """
    return convert_norms(model, max_shift)
