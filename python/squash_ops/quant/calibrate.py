"""``calibrate``: activation ranges of a model's linear inputs, and the static W8A8 scales.

The model runs over the calibration batches with a forward pre-hook on each observed layer. Per
layer the statistics are per tensor (min, max, absmax, a percentile of |x|), per token (the absmax
of every token, i.e. what a dynamic per-token quantizer would use) and per input channel (absmax,
what SmoothQuant-style migrations need). Padding never counts: for HF batch dicts, tokens whose
``attention_mask`` is 0 are left out wherever a layer's input is ``[batch, seq, K]``. A
``W8A8Linear`` with an input transform (``input_mul``, rotation) is observed after the transform.

Percentiles are computed from a histogram of |x| whose buckets are the float32 bit patterns with
the low 14 bits dropped (for non-negative floats the bit order is the value order): ranks are
exact, and a value is placed within its bucket, so the percentile is within 2^-9 (relative) of
``torch.quantile`` of all |x| seen, a quarter of an int8 step (1/127). Memory stays bounded (at
most 512 buckets per binade actually seen) however many batches are fed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import W8A8Config
from .linear import QuantizedActivation, W8A8Linear, _QuantLinear

Method = Literal["minmax", "percentile"]


@dataclass
class ActivationStats:
    """What one layer's inputs looked like over the calibration batches (float32 values).

    ``scale`` is the per-tensor int8 scale the chosen method gives: ``absmax / 127`` (minmax) or
    ``percentile(|x|) / 127`` (percentile); values beyond the range are clamped at run time.
    """

    tokens: int
    min: float
    max: float
    absmax: float
    percentile: float | None  # the |x| percentile of the "percentile" method, else None
    token_absmax: torch.Tensor  # float32 [tokens]
    channel_absmax: torch.Tensor  # float32 [in_features]
    scale: float


class CalibrationStats(dict):
    """Layer name -> ``ActivationStats``, in model order; ``method`` / ``percentile`` say how the
    scales were chosen. Renders as a rich table."""

    def __init__(self, layers: dict[str, ActivationStats], method: str, percentile: float | None):
        super().__init__(layers)
        self.method = method
        self.percentile = percentile

    def table(self):
        from rich.table import Table

        how = "min-max" if self.method == "minmax" else f"{self.percentile:g}th percentile of |x|"
        table = Table(title=f"calibration ({how})")
        for col in ("layer", "tokens", "min", "max", "median token absmax", "scale"):
            if col == "layer":
                table.add_column(col, overflow="fold")
            else:
                table.add_column(col, justify="right", no_wrap=True)
        for name, s in self.items():
            table.add_row(name, str(s.tokens), f"{s.min:.4g}", f"{s.max:.4g}",
                          f"{float(s.token_absmax.median()):.4g}", f"{s.scale:.4g}")
        return table

    def __rich__(self):
        return self.table()


_DROPPED_BITS = 14  # float32 bits ignored by the |x| histogram: 9 mantissa bits kept


def _bucket_lower_edge(keys: torch.Tensor) -> torch.Tensor:
    return (keys.to(torch.int32) << _DROPPED_BITS).view(torch.float32).double()


class _Observer:
    """Running statistics of one layer's inputs."""

    def __init__(self, quantile: float | None):
        self.quantile = quantile  # in [0, 1], None for minmax
        self.tokens = 0
        self.count = 0  # elements seen
        self.finite = True
        self.min = math.inf
        self.max = -math.inf
        self.token_absmax: list[torch.Tensor] = []
        self.channel_absmax: torch.Tensor | None = None
        # |x| histogram (percentile only): sorted bucket keys and their counts.
        self.keys: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if x.shape[0] == 0:
            return
        a = x.abs()
        self.tokens += x.shape[0]
        self.count += x.numel()
        self.finite = self.finite and bool(torch.isfinite(x).all())
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.token_absmax.append(a.amax(-1).cpu())
        ch = a.amax(0)
        self.channel_absmax = ch if self.channel_absmax is None else torch.maximum(self.channel_absmax, ch)
        if self.quantile is not None:
            keys, counts = torch.unique(a.flatten().view(torch.int32) >> _DROPPED_BITS, return_counts=True)
            if self.keys is not None:
                keys, inverse = torch.unique(torch.cat([self.keys, keys]), return_inverse=True)
                counts = torch.zeros_like(keys, dtype=torch.int64).scatter_add_(0, inverse, torch.cat([self.counts, counts]))
            self.keys, self.counts = keys, counts

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max))

    def _order_statistic(self, rank: int, lower, upper, cum) -> float:
        """The ``rank``-th smallest |x| (0-based), placed within its bucket by its rank there (the
        largest is known exactly, so percentile 100 equals the min-max range)."""
        if rank == self.count - 1:
            return self.absmax
        b = int(torch.searchsorted(cum, rank, right=True))
        start = int(cum[b - 1]) if b else 0
        frac = (rank - start + 0.5) / int(self.counts[b])
        return float(lower[b] + frac * (upper[b] - lower[b]))

    def percentile_value(self) -> float:
        # torch.quantile's "linear" rule: position q * (count - 1) in ascending order.
        keys = self.keys.cpu()
        lower, upper = _bucket_lower_edge(keys), _bucket_lower_edge(keys + 1)
        cum = torch.cumsum(self.counts.cpu(), 0)
        pos = self.quantile * (self.count - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo = self._order_statistic(lo, lower, upper, cum)
        v_hi = self._order_statistic(hi, lower, upper, cum)
        return v_lo + (pos - lo) * (v_hi - v_lo)

    def result(self) -> ActivationStats:
        absmax = self.absmax
        p = self.percentile_value() if self.quantile is not None else None
        return ActivationStats(
            tokens=self.tokens, min=self.min, max=self.max, absmax=absmax, percentile=p,
            token_absmax=torch.cat(self.token_absmax), channel_absmax=self.channel_absmax.cpu(),
            # Rounded to float32 like the input_scale buffer it is written to.
            scale=float(torch.tensor((absmax if p is None else p) / 127, dtype=torch.float32)),
        )


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


@torch.no_grad()
def capture_inputs(model: nn.Module, paths: list[str], batches: list, max_tokens: int,
                   who: str = "capture_inputs") -> dict[str, torch.Tensor]:
    """The input of each linear at ``paths`` on the real (unpadded) tokens, float32 [tokens, K],
    the first ``max_tokens`` of them (a ``W8A8Linear``'s input as its ``transform_input`` makes it)."""
    seen: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    count = dict.fromkeys(paths, 0)
    mask: list[torch.Tensor | None] = [None]

    def hook(path):
        def fn(module, args):
            x = args[0]
            if isinstance(module, W8A8Linear):
                x = module.transform_input(x)
            if mask[0] is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask[0].shape):
                x = x[mask[0].to(x.device) != 0]
            x = x.reshape(-1, x.shape[-1])[: max_tokens - count[path]].float().cpu()
            seen[path].append(x)
            count[path] += x.shape[0]
        return fn

    handles = [model.get_submodule(p).register_forward_pre_hook(hook(p)) for p in paths]
    device = _model_device(model)
    try:
        for batch in batches:
            batch = _to(batch, device)
            am = batch.get("attention_mask") if isinstance(batch, Mapping) else None
            mask[0] = am if isinstance(am, torch.Tensor) and am.dim() == 2 else None
            if isinstance(batch, Mapping):
                model(**batch)
            elif isinstance(batch, (list, tuple)):
                model(*batch)
            else:
                model(batch)
    finally:
        for h in handles:
            h.remove()
    empty = [p for p in paths if not count[p]]
    if empty:
        raise ValueError(f"{who}: the calibration batches never reach {', '.join(empty)}")
    return {p: torch.cat(v) for p, v in seen.items()}


@contextmanager
def _dynamic_while_calibrating(model: nn.Module, layers: list[W8A8Linear]):
    # Uncalibrated static layers cannot run; while observing they quantize per token instead,
    # which is within int8 rounding of the float activations the static scales must cover. A
    # norm that emits its static consumers' int8 input (fuse_norm_quant) does so per token too:
    # else recalibrating a fused model would see its present scales' codes downstream, and each
    # calibration would move the next one's ranges.
    from ..migration.norm import MigratedNorm  # migration builds on quant: imported late

    saved = [m.config for m in layers]
    norms = [(m, m._scale_from) for m in model.modules() if isinstance(m, MigratedNorm) and m.act_quant == "static"]
    try:
        for m in layers:
            m.config = W8A8Config("dynamic")
        for norm, _ in norms:
            norm.set_act_quant("dynamic")
        yield
    finally:
        for m, cfg in zip(layers, saved):
            m.config = cfg
        for norm, scale_from in norms:
            norm.set_act_quant("static", scale_from[0])


def check_method(method: str, percentile: float, who: str = "calibrate") -> None:
    """The ``method`` / ``percentile`` arguments of ``calibrate`` (and of the transforms that call it)."""
    if method not in ("minmax", "percentile"):
        raise ValueError(f"{who}: method must be 'minmax' or 'percentile', got {method!r}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise ValueError(f"{who}: percentile must be in (0, 100], got {percentile}")


def calibrate(
    model: nn.Module,
    batches: Iterable,
    method: Method = "minmax",
    percentile: float = 99.99,
    *,
    observe: Literal["static", "all"] = "static",
    progress: bool = True,
) -> CalibrationStats:
    """Run ``model`` over ``batches`` and set the input scale of every static ``W8A8Linear``.

    ``batches``: HF batch dicts (``model(**batch)``), tensors (``model(batch)``) or tuples/lists
    (``model(*batch)``), moved to the model's device. ``method``: ``"minmax"`` (scale = absmax/127)
    or ``"percentile"`` (scale = the ``percentile``-th percentile of |x| over all elements / 127;
    clips the rare outliers that would waste int8 range). ``observe="all"`` also collects the
    statistics of every other linear layer (``nn.Linear`` included, e.g. to calibrate before
    ``replace_linear``); only static W8A8 layers get a scale. Runs under ``torch.no_grad`` with a
    tqdm progress bar (``progress=False`` hides it).

    Returns the statistics per observed layer (``CalibrationStats``). Raises when there is nothing
    to observe, no batch, an observed static layer never ran, or a range is 0 or not finite
    (the message names the layer); no scale is set then.
    """
    check_method(method, percentile)
    if observe not in ("static", "all"):
        raise ValueError(f"calibrate: observe must be 'static' or 'all', got {observe!r}")
    static = {n: m for n, m in model.named_modules()
              if isinstance(m, W8A8Linear) and m.config.activation == "static"}
    if observe == "all":
        targets = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, _QuantLinear))}
    else:
        targets = static
    if not targets:
        raise ValueError(
            "calibrate: the model has no static W8A8Linear layer to calibrate (replace_linear with "
            "W8A8Config('static') first, or pass observe='all' to collect the statistics of every linear)"
        )

    quantile = percentile / 100 if method == "percentile" else None
    observers = {name: _Observer(quantile) for name in targets}
    mask: list[torch.Tensor | None] = [None]  # the current batch's attention mask

    def hook_for(name):
        def hook(module, args):
            x = args[0]
            if isinstance(x, QuantizedActivation):
                x = x.q.float() * x.scales.reshape(*x.scales.shape, *([1] * (x.q.dim() - x.scales.dim())))
            elif isinstance(module, W8A8Linear):
                # A layer with an input transform (smoothing, rotation) quantizes the transformed
                # input: that is the range its static scale must cover.
                x = module.transform_input(x)
            m = mask[0]
            if m is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(m.shape):
                x = x[m.to(x.device) != 0]
            observers[name].observe(x)
        return hook

    device = _model_device(model)
    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in targets.items()]
    n_batches = 0
    try:
        with torch.no_grad(), _dynamic_while_calibrating(model, list(static.values())):
            total = len(batches) if hasattr(batches, "__len__") else None
            for batch in tqdm(batches, desc="calibrate", total=total, unit="batch", disable=not progress):
                batch = _to(batch, device)
                if isinstance(batch, Mapping):
                    am = batch.get("attention_mask")
                    mask[0] = am if isinstance(am, torch.Tensor) and am.dim() == 2 else None
                    model(**batch)
                elif isinstance(batch, (list, tuple)):
                    mask[0] = None
                    model(*batch)
                else:
                    mask[0] = None
                    model(batch)
                n_batches += 1
    finally:
        for h in handles:
            h.remove()
    if n_batches == 0:
        raise ValueError("calibrate: batches is empty")
    unreached = [n for n, o in observers.items() if o.tokens == 0 and n in static]
    if unreached:
        raise RuntimeError(
            f"calibrate: static layers never saw an input token during calibration: {', '.join(unreached)}; "
            "feed batches that reach them, keep them out of replace_linear, or call set_input_scale"
        )
    stats = CalibrationStats(
        {n: o.result() for n, o in observers.items() if o.tokens}, method, percentile if quantile else None
    )
    for name in static:
        if not observers[name].finite:
            raise ValueError(f"calibrate: {name}: its inputs contained inf or NaN during calibration")
        scale = stats[name].scale
        if not scale > 0:
            raise ValueError(
                f"calibrate: {name}: the calibrated input range is {scale * 127:g} ({method}); a static "
                "int8 scale needs a range > 0 (inputs all zero?)"
            )
    for name, module in static.items():
        module.set_input_scale(stats[name].scale)
    return stats
