"""Channel-wise smoothing (SmoothQuant, Xiao et al., ICML 2023) of the block linears' inputs.

For a linear reading ``x``, ``W @ x == (W * s) @ (x / s)`` for any positive per-channel ``s``.
SmoothQuant's ``s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha)`` moves the activation's outlier
channels into the weight, which is quantized per output channel. Where ``1 / s`` goes:

* **norm sites** (q/k/v share one ``s``, FFN-up): into the norm's gamma/beta together with the
  gamma migration factor (``convert_norms(..., smoothing=...)``, the same algebra): exact, free;
* **value sites**: the attention output ``softmax(q k^T) @ v`` is linear in ``v``, so the value
  projection's output rows and bias are divided by ``s`` and the attention-output projection's
  input columns multiplied by it (GQA: ``s`` per value channel, repeated for the query heads that
  share it): exact, free;
* **the FFN down-projection** (after GELU, which no scale commutes with): a runtime per-channel
  multiply in the ``W8A8Linear`` (``input_mul``), one extra elementwise pass over the input before
  its quantization, in a separate torch op for now. (OPT's ReLU is positively homogeneous and
  LLaMA's SwiGLU is linear in up_proj, so there ``1 / s`` could be folded into fc1 / up_proj rows
  instead; not done yet.)

``search_smoothing`` picks, per site, alpha in ``ALPHAS`` or no smoothing at all, by the error of
the site's W8A8 consumers (the real modules, with their configs: per token or static, rotation) on
the calibration tokens, against the float layer: ``mean over tokens of |y_q - y|^2 / |y|^2``. Per
token, not summed over tokens: the few tokens with large activations would otherwise choose alpha
for everyone, while the sentence embedding weighs every token alike. On MiniLM (every block linear
W8A8 per token, FFN down-projection rotated by 32-blocks, 238 sentences) the per-token objective
gives embedding cosine 0.99948 mean / 0.99664 min, the summed MSE 0.99938 / 0.99652. Each site is
searched with every other layer float (SmoothQuant's layer-wise choice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..quant import W8A8Config, W8A8Linear
from ..quant.calibrate import capture_inputs
from .families import ValueSite, ffn_down_paths, norm_sites, value_sites
from .transform import DEFAULT_MAX_SHIFT, _norm_params, check_factor, migration_factors

# On MiniLM the search picks 0.3-0.9 (python -m squash_ops.eval.minilm, dynamic with the FFN
# down-projection rotated; the plan printed by quantize_w8a8's report).
ALPHAS = tuple(round(0.1 * k, 1) for k in range(1, 10))
# Calibration tokens kept per site (the first ones seen): the search holds [tokens, K] per site.
MAX_TOKENS = 4096


def smoothing_factor(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """``act_absmax^alpha / weight_absmax^(1 - alpha)`` per channel, float32; 1 where either is 0
    (a channel that never carries a value, or that no weight reads, needs no smoothing)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    a, w = act_absmax.double(), weight_absmax.double()
    live = (a > 0) & (w > 0)
    s = a.clamp_min(1e-30).pow(alpha) / w.clamp_min(1e-30).pow(1 - alpha)
    return torch.where(live, s, torch.ones_like(s)).float()


@dataclass
class SmoothedSite:
    """One searched site: ``kind`` "norm" (``where`` is the norm), "value" (the value projection)
    or "ffn_down" (the down-projection); ``factor`` is ``s`` over ``where``'s channels (norm
    width, value output channels, down-projection input); ``alpha`` None: not smoothed (``factor``
    all ones). ``error_*``: the consumers' summed token-relative output error without / with it."""

    kind: str
    where: str
    consumers: tuple[str, ...]
    alpha: float | None
    factor: torch.Tensor
    error_before: float
    error_after: float


@dataclass
class SmoothingPlan:
    sites: list[SmoothedSite] = field(default_factory=list)

    def norm_factors(self) -> dict[str, torch.Tensor]:
        return {s.where: s.factor for s in self.sites if s.kind == "norm" and s.alpha is not None}

    def value_factors(self) -> dict[str, torch.Tensor]:
        return {s.where: s.factor for s in self.sites if s.kind == "value" and s.alpha is not None}

    def runtime_factors(self) -> dict[str, torch.Tensor]:
        return {s.where: s.factor for s in self.sites if s.kind == "ffn_down" and s.alpha is not None}

    def __str__(self) -> str:
        lines = [f"channel smoothing: {sum(s.alpha is not None for s in self.sites)}/{len(self.sites)} sites smoothed"]
        for s in self.sites:
            how = "not smoothed" if s.alpha is None else f"alpha {s.alpha:g}"
            lines.append(f"  {s.kind} {s.where}: {how}, token-relative error {s.error_before:.3g} -> {s.error_after:.3g}")
        return "\n".join(lines)


def fold_value_smoothing(model: nn.Module, site: ValueSite, s: torch.Tensor) -> None:
    """Divide ``site.value``'s output rows and bias by ``s`` and multiply ``site.output``'s input
    columns by ``s`` (repeated per query head of each kv head): exact in float. float64 products,
    one rounding; new Parameters (``quantize_w8a8`` keeps the old ones to restore on failure)."""
    value, output = model.get_submodule(site.value), model.get_submodule(site.output)
    for path, lin in ((site.value, value), (site.output, output)):
        if type(lin) is not nn.Linear:
            raise ValueError(f"{path}: smoothing folds into float nn.Linear weights, got {type(lin).__name__}")
    s64 = check_factor(s, value.out_features, site.value).double()
    with torch.no_grad():
        w = value.weight
        value.weight = nn.Parameter((w.double() / s64.to(w.device)[:, None]).to(w.dtype), w.requires_grad)
        if value.bias is not None:
            b = value.bias
            value.bias = nn.Parameter((b.double() / s64.to(b.device)).to(b.dtype), b.requires_grad)
        w = output.weight
        cols = s64[site.output_channel_source()].to(w.device)
        output.weight = nn.Parameter((w.double() * cols).to(w.dtype), w.requires_grad)


# ---- the search ----


@dataclass
class _Site:
    kind: str
    where: str
    consumers: tuple[str, ...]  # the W8A8 ones
    frame: torch.Tensor  # the factor already applied to the consumers' input (migration), [K]
    source: torch.Tensor | None  # value sites: the value channel of each consumer input channel


KINDS = ("norm", "value", "ffn_down")


def _sites(model: nn.Module, per_layer: Mapping[str, W8A8Config | None], migrate: bool, max_shift: float,
           kinds: tuple[str, ...]) -> list[_Site]:
    quantized = {p for p, c in per_layer.items() if c is not None}
    out = []
    for site in norm_sites(model)[0]:
        consumers = tuple(p for p in site.consumers if p in quantized)
        if consumers:
            _, _, gamma, beta = _norm_params(model.get_submodule(site.norm), site.norm)
            frame = migration_factors(gamma, beta, max_shift) if migrate else torch.ones_like(gamma)
            out.append(_Site("norm", site.norm, consumers, frame, None))
    for site in value_sites(model):
        if site.output in quantized:
            k = model.get_submodule(site.output).in_features
            out.append(_Site("value", site.value, (site.output,), torch.ones(k), site.output_channel_source()))
    for path in ffn_down_paths(model):
        if path in quantized:
            k = model.get_submodule(path).in_features
            out.append(_Site("ffn_down", path, (path,), torch.ones(k), None))
    return [site for site in out if site.kind in kinds]


def _site_error(model, site: _Site, per_layer, x: torch.Tensor, reference: dict, total: torch.Tensor) -> float:
    """Summed token-relative output error of the site's consumers quantized with their configs,
    their input columns scaled by ``total`` (the frame times the candidate ``s``)."""
    err = 0.0
    for path in site.consumers:
        lin, cfg = model.get_submodule(path), per_layer[path]
        q = W8A8Linear.from_linear(lin, cfg, smoothing=None if bool((total == 1).all()) else total)
        if cfg.activation == "static":
            q.set_input_scale(float(q.transform_input(x).abs().max()) / 127)
        y = reference[path]
        e = (q(x).double() - y).pow(2).sum(-1) / y.pow(2).sum(-1).clamp_min(1e-30)
        err += float(e.mean())
    return err


def search_smoothing(
    model: nn.Module,
    per_layer: Mapping[str, W8A8Config | None],
    batches: Iterable,
    *,
    migrate: bool = True,
    max_shift: float = DEFAULT_MAX_SHIFT,
    alphas: Iterable[float] = ALPHAS,
    max_tokens: int = MAX_TOKENS,
    kinds: Iterable[str] = KINDS,
) -> SmoothingPlan:
    """The smoothing factor of every site (module docs) whose consumers ``per_layer`` quantizes
    W8A8, searched on ``batches`` (HF batch dicts, tensors or tuples) of the float ``model``, which
    is left unchanged. ``migrate`` / ``max_shift``: the gamma migration the norm sites will get
    (their factors are searched on top of it). ``kinds``: which sites ("norm", "value",
    "ffn_down"); leaving "ffn_down" out keeps every factor folded (no extra op at run time)."""
    alphas = tuple(alphas)
    kinds = tuple(kinds)
    if not set(kinds) <= set(KINDS):
        raise ValueError(f"search_smoothing: kinds must be among {KINDS}, got {kinds}")
    for a in alphas:
        smoothing_factor(torch.ones(1), torch.ones(1), a)  # range check
    batches = list(batches)
    if not batches:
        raise ValueError("search_smoothing: no calibration batches")
    sites = _sites(model, per_layer, migrate, max_shift, kinds)
    inputs = capture_inputs(model, [s.consumers[0] for s in sites], batches, max_tokens, who="search_smoothing")
    plan = SmoothingPlan()
    with torch.no_grad():
        for site in sites:
            x = inputs[site.consumers[0]]
            reference = {}
            for p in site.consumers:
                lin = model.get_submodule(p)
                reference[p] = nn.functional.linear(x.double(), lin.weight.double(),
                                                    None if lin.bias is None else lin.bias.double())
            weights = torch.cat([model.get_submodule(p).weight.detach().float().cpu() for p in site.consumers])
            act = (x / site.frame).abs().amax(0)
            wmax = (weights * site.frame).abs().amax(0)
            if site.source is not None:  # value site: one factor per value channel
                n = int(site.source.max()) + 1
                act = torch.zeros(n).scatter_reduce(0, site.source, act, "amax")
                wmax = torch.zeros(n).scatter_reduce(0, site.source, wmax, "amax")
            ones = torch.ones_like(act)
            expand = (lambda s: s) if site.source is None else (lambda s: s[site.source])

            def error(s):
                return _site_error(model, site, per_layer, x, reference, site.frame * expand(s))

            before = error(ones)
            best = (before, None, ones)
            for a in alphas:
                s = smoothing_factor(act, wmax, a)
                e = error(s)
                if e < best[0]:
                    best = (e, a, s)
            plan.sites.append(SmoothedSite(site.kind, site.where, site.consumers, best[1], best[2], before, best[0]))
    return plan
