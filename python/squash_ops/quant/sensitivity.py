"""Per-layer quantization sensitivity, and the float fallback that meets an accuracy budget.

    report = analyze_sensitivity(model, W4A16Config(), batches, metric_fn=accuracy)
    rich.print(report.table())
    fb = report.fallback(max_relative_drop=0.01)      # or min_cosine=0.999
    replace_linear(model, W4A16Config(), overrides=fb.plan)   # + calibrate() for W8A8 static
    report.plot("sensitivity.png", fallback=fb)
    fb = report.fallback(min_cosine=0.999, ladder=(W8A16Config(),))   # int8 -> W8A16 -> float

For every ``nn.Linear`` that ``replace_linear(model, config, filter_fn)`` would replace the
analysis quantizes that layer alone and measures three errors:

- ``sqnr_db``: the layer's own output SQNR, 10*log10(sum y^2 / sum (y_q - y)^2), on the
  calibration batches. Its input is the float model's (every other layer is float), so one float
  pass with hooks gives it for all layers at once.
- ``cosine`` / ``min_cosine``: the model output vs the float model's on the eval batches, cosine
  along the last dim per row (per token, or per sequence for pooled outputs), mean and worst; rows
  the batch's ``attention_mask`` marks as padding are left out.
- ``metric`` / ``metric_delta`` / ``relative_drop``: ``metric_fn(model)`` (user-supplied, e.g.
  accuracy; ``higher_is_better=False`` for perplexity or a loss), its change from the float
  model's value, and that change as a relative drop (> 0 = worse).

Layers are ranked most sensitive first: by relative drop when a metric is given, else by output
cosine, ties by SQNR. ``fallback`` then keeps layers in float (the model's own dtype: they stay
the original ``nn.Linear``) greedily in that order until the *combined* model, every other layer
quantized, meets the budget: per-layer errors do not add up exactly, so each candidate plan is
evaluated, never predicted. A pruning pass then tries each float layer back in quantized form
(least sensitive first) and keeps it quantized where the budget still holds. Greedy, so the fewest
float layers is not guaranteed in general, but each evaluation is of the real combined model.

With a ``ladder`` (e.g. ``(W8A16Config(),)``) a layer falls back one rung at a time: the greedy pass
first moves layers to the first rung in ranking order until the budget holds, then (if every layer
is there and it still does not) to the next rung, float last; pruning moves each demoted layer back
to the highest rung that keeps the budget. So a sensitive W8A8 layer keeps int8 weights (W8A16)
where that suffices, and only what still misses the budget runs float.

Each layer is packed once (``quantize_linear``) and its packed module is swapped in and out for
every trial; the model is left as it was found. W8A8 static: every evaluated plan is calibrated
the way its user would (``calibrate`` on the same batches, after the swap); alone in the model
a layer sees float inputs, so one float calibration pass serves every single-layer trial.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .calibrate import _model_device, _to, calibrate
from .config import QuantConfig, W8A8Config, config_from_dict, config_to_dict
from .linear import apply_prepack_choice, quantize_linear
from .replace import plan_replacement, scheme_label  # replace_linear's layer choice, so the plans match it

Batch = Any  # a dict of model kwargs (HF batch), a tensor, or a tuple of positional args
Plan = dict[str, "QuantConfig | None"]


# ----------------------------------------------------------------------------------------------
# Running a model on batches


def run_batch(model: nn.Module, batch: Batch):
    """``model(**batch)`` for a dict (an HF batch), ``model(*batch)`` for a tuple or list,
    ``model(batch)`` for a tensor (as ``calibrate`` feeds them); moved to the model's device."""
    batch = _to(batch, _model_device(model))
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (list, tuple)):
        return model(*batch)
    return model(batch)


def default_output(outputs, batch: Batch = None) -> torch.Tensor:
    """The tensor compared against the float model: ``logits`` (LMs, classifiers), else
    ``last_hidden_state`` (encoders), else the output itself or its first element."""
    for key in ("logits", "last_hidden_state"):
        value = getattr(outputs, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, (list, tuple)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise TypeError(
        f"cannot find the output tensor in a {type(outputs).__name__}; pass output_fn(outputs, batch) -> Tensor"
    )


def _rows(out: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[rows, D]: one row per position, padding positions (attention_mask 0) dropped."""
    out = out.detach()
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if mask is not None and out.dim() >= 3 and tuple(out.shape[:2]) == tuple(mask.shape):
        return out[mask.to(out.device).bool()].reshape(-1, out.shape[-1])
    return out.reshape(-1, out.shape[-1]) if out.dim() else out.reshape(1, 1)


def row_cosines(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Cosine per row, in float64; two all-zero rows agree (1), one all-zero row scores 0."""
    out, ref = out.double(), ref.double()
    dot = (out * ref).sum(-1)
    norms = out.norm(dim=-1) * ref.norm(dim=-1)
    both_zero = (out.abs().amax(-1) == 0) & (ref.abs().amax(-1) == 0)
    cos = torch.where(norms > 0, dot / norms.clamp_min(1e-300), torch.zeros_like(dot))
    return torch.where(both_zero, torch.ones_like(cos), cos)


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class LayerSensitivity:
    """The errors caused by quantizing this one layer (every other layer float)."""

    name: str
    shape: tuple[int, int]  # (out_features, in_features)
    sqnr_db: float
    cosine: float
    min_cosine: float
    metric: float | None = None
    metric_delta: float | None = None  # metric - float metric (signed, in the metric's units)
    relative_drop: float | None = None  # > 0: worse than float (direction from higher_is_better)


@dataclass
class Evaluation:
    """One evaluated model state: which layers ran quantized and how close it came to float."""

    quantized: frozenset[str]
    cosine: float
    min_cosine: float
    metric: float | None = None
    metric_delta: float | None = None
    relative_drop: float | None = None
    meets_budget: bool | None = None
    demoted: dict[str, QuantConfig | None] = field(default_factory=dict)  # ladder rungs other than float


@dataclass
class Budget:
    """What the fallback must meet; None = no constraint. At least one must be given."""

    max_relative_drop: float | None = None  # e.g. 0.01 = at most 1% worse than float
    min_cosine: float | None = None  # mean output cosine vs float
    min_worst_cosine: float | None = None  # every row's output cosine vs float

    def __post_init__(self):
        if self.max_relative_drop is None and self.min_cosine is None and self.min_worst_cosine is None:
            raise ValueError("fallback: give a budget: max_relative_drop, min_cosine and/or min_worst_cosine")
        if self.max_relative_drop is not None and not (
            math.isfinite(self.max_relative_drop) and self.max_relative_drop >= 0
        ):
            raise ValueError(f"fallback: max_relative_drop must be a finite number >= 0, got {self.max_relative_drop}")
        for key in ("min_cosine", "min_worst_cosine"):
            value = getattr(self, key)
            if value is not None and not -1 <= value <= 1:
                raise ValueError(f"fallback: {key} must be in [-1, 1], got {value}")

    def met_by(self, ev: Evaluation) -> bool:
        return (
            (self.max_relative_drop is None or ev.relative_drop <= self.max_relative_drop)
            and (self.min_cosine is None or ev.cosine >= self.min_cosine)
            and (self.min_worst_cosine is None or ev.min_cosine >= self.min_worst_cosine)
        )

    def describe(self) -> str:
        parts = []
        if self.max_relative_drop is not None:
            parts.append(f"relative metric drop <= {self.max_relative_drop:.2%}")
        if self.min_cosine is not None:
            parts.append(f"mean cosine >= {self.min_cosine}")
        if self.min_worst_cosine is not None:
            parts.append(f"worst cosine >= {self.min_worst_cosine}")
        return ", ".join(parts)


@dataclass
class FallbackResult:
    """``plan``: every linear of the model -> its config, or None to keep it float (what
    ``replace_linear`` takes as per-layer overrides). ``float_layers``: the analyzed layers kept
    in float, most sensitive first. ``final``: the evaluation of exactly this plan. ``trials``:
    every plan evaluated on the way, in order."""

    plan: Plan
    float_layers: list[str]
    final: Evaluation
    budget: Budget
    config: QuantConfig
    trials: list[Evaluation] = field(default_factory=list)
    demoted: dict[str, QuantConfig] = field(default_factory=dict)  # analyzed layers on a quantized ladder rung

    def save(self, path: str | Path) -> Path:
        """The plan as JSON (``load_plan`` reads it back), with the budget and the verified
        numbers for whoever reads the file."""
        path = Path(path)
        doc = {
            "config": config_to_dict(self.config),
            "overrides": {n: (None if c is None else config_to_dict(c)) for n, c in self.plan.items()},
            "float_layers": self.float_layers,
            "budget": self.budget.describe(),
            "cosine": self.final.cosine,
            "min_cosine": self.final.min_cosine,
            "relative_drop": self.final.relative_drop,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path


def load_plan(path: str | Path) -> tuple[QuantConfig, Plan]:
    """``(config, overrides)`` from a file written by ``FallbackResult.save``:
    ``replace_linear(model, config, overrides=overrides)`` applies it."""
    try:
        doc = json.loads(Path(path).read_text())
        config = config_from_dict(doc["config"])
        overrides = {n: (None if c is None else config_from_dict(c)) for n, c in doc["overrides"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"load_plan: {path} is not a sensitivity plan file ({type(e).__name__}: {e})") from e
    return config, overrides


class SensitivityReport:
    """The ranked per-layer sensitivities of ``model`` under ``config`` (see the module docs).

    Holds the packed layers and the float reference outputs so that ``fallback`` and
    ``evaluate`` reuse them; the model must not be changed between the analysis and those calls.
    """

    def __init__(self, analysis: _Analysis, layers: list[LayerSensitivity], baseline_metric: float | None):
        self._analysis = analysis
        self.config: QuantConfig = analysis.config
        self.layers = layers
        self.baseline_metric = baseline_metric
        self.skipped: dict[str, str] = dict(analysis.skipped)

    def __getitem__(self, name: str) -> LayerSensitivity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no analyzed layer named {name!r}")

    @property
    def ranking(self) -> list[str]:
        """Layer names, most sensitive first."""
        return [layer.name for layer in self.layers]

    def plan(self, float_layers: Iterable[str] = ()) -> Plan:
        """The replace_linear overrides that quantize every analyzed layer except ``float_layers``
        (skipped layers map to None too, so the plan is the whole model's)."""
        return self._analysis.plan(set(self.ranking) - set(float_layers))

    def evaluate(self, float_layers: Iterable[str] = (), demoted: Mapping[str, QuantConfig] | None = None) -> Evaluation:
        """Output cosine and metric of the model with every analyzed layer quantized except
        ``float_layers`` and the ``demoted`` ones (name -> the config they run instead)."""
        float_layers, demoted = set(float_layers), dict(demoted or {})
        unknown = (float_layers | set(demoted)) - set(self.ranking)
        if unknown:
            raise ValueError(f"evaluate: not analyzed layers: {sorted(unknown)}")
        return self._analysis.evaluate(frozenset(set(self.ranking) - float_layers - set(demoted)), demoted=demoted)

    def fallback(
        self,
        max_relative_drop: float | None = None,
        min_cosine: float | None = None,
        min_worst_cosine: float | None = None,
        progress: bool = True,
        ladder: Sequence[QuantConfig] = (),
    ) -> FallbackResult:
        """The fewest float layers (greedy by sensitivity, then pruned) whose combined quantized
        model meets the budget; see the module docs. ``ladder``: quantized configs tried before
        float, in order (e.g. ``(W8A16Config(),)``). Raises ValueError when even the float model
        misses it (e.g. a cosine above 1) or a metric budget is asked without a metric."""
        budget = Budget(max_relative_drop, min_cosine, min_worst_cosine)
        ladder = tuple(ladder)
        if not all(isinstance(c, QuantConfig.__args__) for c in ladder):
            raise TypeError(f"fallback: ladder must hold quantization configs (float is always the last rung), got {ladder}")
        if budget.max_relative_drop is not None:
            if self._analysis.metric_fn is None:
                raise ValueError("fallback: max_relative_drop needs analyze_sensitivity(..., metric_fn=...)")
            if self.baseline_metric == 0:
                raise ValueError("fallback: the float model's metric is 0, a relative drop is undefined")
        return self._ladder_fallback(budget, ladder, progress)

    def _ladder_fallback(self, budget: Budget, ladder: tuple, progress: bool) -> FallbackResult:
        """``fallback``: level 0 is the analyzed config, level i ``ladder[i - 1]``, the last level
        float (module docs; without a ladder: quantized or float). Every plan is evaluated at most
        once (the last greedy step's is not evaluated again by the pruning)."""
        rungs = (self.config, *ladder, None)
        trials: list[Evaluation] = []
        seen: dict[tuple, Evaluation] = {}

        def check(levels: dict[str, int]) -> Evaluation:
            key = tuple(sorted(levels.items()))
            if key not in seen:
                ev = self._analysis.evaluate(
                    frozenset(n for n, lv in levels.items() if lv == 0),
                    demoted={n: rungs[lv] for n, lv in levels.items() if lv > 0})
                ev.meets_budget = budget.met_by(ev)
                trials.append(ev)
                seen[key] = ev
                bar.update(1)
                bar.set_postfix_str(f"{sum(lv > 0 for lv in levels.values())} fallen back, cos {ev.cosine:.5f}")
            return seen[key]

        from tqdm.auto import tqdm

        with tqdm(desc="fallback", unit="eval", disable=not progress, leave=False) as bar:
            levels = dict.fromkeys(self.ranking, 0)
            ev = check(levels)
            for rung in range(1, len(rungs)):
                for name in self.ranking:
                    if ev.meets_budget:
                        break
                    levels = {**levels, name: rung}
                    ev = check(levels)
            if not ev.meets_budget:
                raise ValueError(f"fallback: even the float model misses the budget ({budget.describe()})")
            # Pruning: the greedy order comes from single-layer errors; with every demoted layer
            # in place some earlier ones may no longer need it. Least sensitive first, each demoted
            # layer moves to the highest rung (the analyzed config first) that keeps the budget. Every rung above is tried: a rung is not
            # always more accurate than the one above it (weights int4 represents exactly).
            for name in reversed(self.ranking):
                for level in range(levels[name]):
                    candidate = {**levels, name: level}
                    trial = check(candidate)
                    if trial.meets_budget:
                        levels, ev = candidate, trial
                        break
        float_layers = [n for n in self.ranking if rungs[levels[n]] is None]
        plan = self.plan(float_layers)
        demoted = {n: rungs[lv] for n, lv in levels.items() if 0 < lv < len(rungs) - 1}
        plan.update(demoted)
        return FallbackResult(plan, float_layers, ev, budget, self.config, trials, demoted)

    # -- presentation ---------------------------------------------------------------------------

    def table(self, fallback: FallbackResult | None = None, top: int | None = None):
        """A rich Table, most sensitive first (``top`` rows); ``fallback`` marks its float layers."""
        from rich.table import Table

        has_metric = self.baseline_metric is not None
        title = f"Sensitivity of each linear under {self.config} (only that layer quantized)"
        if has_metric:
            title += f"; float metric {self.baseline_metric:.6g}"
        # No box and unbreakable numbers: on an 80-column terminal only the layer names fold.
        # (Per-layer metric values are left out: base * (1 - drop) when wanted; the drop is what ranks.)
        table = Table(title=title, box=None, pad_edge=False, header_style="bold")
        cols = ["#", "layer", "out x in", "SQNR dB", "cosine", "worst cos"]
        if has_metric:
            cols.append("rel. drop")
        if fallback is not None:
            cols.append("plan")
        for col in cols:
            if col == "layer":
                table.add_column(col, overflow="fold", min_width=16, ratio=1)
            else:
                table.add_column(col, justify="right", no_wrap=True)
        keep = set(fallback.float_layers) if fallback else set()
        for rank, layer in enumerate(self.layers[:top], 1):
            row = [str(rank), layer.name, f"{layer.shape[0]}x{layer.shape[1]}", f"{layer.sqnr_db:.1f}",
                   f"{layer.cosine:.6f}", f"{layer.min_cosine:.6f}"]
            if has_metric:
                row.append(f"{layer.relative_drop:+.3%}")
            if fallback is not None:
                demoted = fallback.demoted.get(layer.name)
                row.append("[bold yellow]float[/]" if layer.name in keep
                           else f"[yellow]{scheme_label(demoted)}[/]" if demoted else "quant")
            table.add_row(*row, style="yellow" if layer.name in keep else None)
        if fallback is not None:
            f = fallback.final
            caption = (f"fallback ({fallback.budget.describe()}): {len(keep)} of {len(self.layers)} layers "
                       + (f"in float, {len(fallback.demoted)} on a ladder rung" if fallback.demoted else "in float")
                       + f"; combined cosine {f.cosine:.6f} (worst {f.min_cosine:.6f})")
            if f.relative_drop is not None:
                caption += f", metric {f.metric:.6g} ({f.relative_drop:+.3%})"
            table.caption = caption + f"; {len(fallback.trials)} evaluations"
        return table

    def plot(self, path: str | Path, fallback: FallbackResult | None = None) -> Path:
        """A PNG: each layer's SQNR and output error (1 - cosine, and the relative metric drop when
        given) in model order; ``fallback``'s float layers highlighted. Needs matplotlib."""
        try:
            # The Figure API without pyplot: no global backend switch, no display needed.
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError(
                "SensitivityReport.plot needs matplotlib: pip install matplotlib (the table and the "
                "fallback work without it)"
            ) from e
        path = Path(path)
        order = [self[name] for name in self._analysis.names]  # model order reads better than rank
        keep = set(fallback.float_layers) if fallback else set()
        colors = ["tab:orange" if layer.name in keep else "tab:blue" for layer in order]
        x = range(len(order))
        has_metric = self.baseline_metric is not None
        fig = Figure(figsize=(max(6.0, 0.28 * len(order) + 2), 7 + 2 * has_metric))
        axes = fig.subplots(2 + has_metric, 1, sharex=True)
        sqnr = [min(layer.sqnr_db, 200.0) for layer in order]  # an exact layer has infinite SQNR
        axes[0].bar(x, sqnr, color=colors)
        axes[0].set_ylabel("layer output SQNR (dB)")
        axes[1].bar(x, [max(1 - layer.cosine, 1e-12) for layer in order], color=colors)
        axes[1].set_yscale("log")
        axes[1].set_ylabel("1 - model output cosine")
        if has_metric:
            axes[2].bar(x, [layer.relative_drop for layer in order], color=colors)
            axes[2].set_ylabel("relative metric drop")
        axes[-1].set_xticks(list(x))
        axes[-1].set_xticklabels([layer.name for layer in order], rotation=90, fontsize=7)
        title = f"sensitivity under {self.config}"
        if fallback is not None:
            title += f" (orange: {len(keep)} layers kept float for {fallback.budget.describe()})"
        axes[0].set_title(title, fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        return path


# ----------------------------------------------------------------------------------------------
# The analysis


class _Analysis:
    """The model, its packed layers, the eval batches and the float reference outputs."""

    def __init__(self, model, config, names, packed, skipped, all_linears, batches, eval_batches, output_fn,
                 metric_fn, higher_is_better, calibration):
        self.model = model
        self.config = config
        self.names = names  # analyzed layers, model order
        self.packed = packed
        self.skipped = skipped
        self.all_linears = all_linears
        self.batches = batches
        self.eval_batches = eval_batches
        self.output_fn = output_fn
        self.metric_fn = metric_fn
        self.higher_is_better = higher_is_better
        self.calibration = calibration  # calibrate() kwargs; None unless W8A8 static
        self.rung_packed: dict[tuple[str, QuantConfig], nn.Module] = {}
        self.reference: list[torch.Tensor] = []
        self.baseline_metric: float | None = None

    def packed_as(self, name: str, config: QuantConfig) -> nn.Module:
        """``name`` packed under another config (a fallback ladder rung), packed once."""
        key = (name, config)
        if key not in self.rung_packed:
            self.rung_packed[key] = _as_replace_linear_would(quantize_linear(self.model.get_submodule(name), config))
        return self.rung_packed[key]

    @contextlib.contextmanager
    def swapped(self, modules: Mapping[str, nn.Module]):
        """``modules`` (name -> packed module) in place of their nn.Linear for the block."""
        originals = []
        try:
            for name, module in modules.items():
                parent, child = _parent(self.model, name)
                originals.append((parent, child, getattr(parent, child)))
                setattr(parent, child, module)
            yield
        finally:
            for parent, child, module in reversed(originals):
                setattr(parent, child, module)

    def outputs(self) -> list[torch.Tensor]:
        return [_rows(self.output_fn(run_batch(self.model, b), b), b) for b in self.eval_batches]

    def metric(self) -> float:
        value = float(self.metric_fn(self.model))
        if not math.isfinite(value):
            raise ValueError(f"metric_fn returned {value}; it must return a finite float")
        return value

    def drop(self, value: float) -> float:
        """How much worse than float (> 0 worse), in the metric's units."""
        return self.baseline_metric - value if self.higher_is_better else value - self.baseline_metric

    def relative_drop(self, value: float) -> float:
        """``drop / |float metric|``; NaN when the float metric is 0 (undefined)."""
        base = abs(self.baseline_metric)
        return self.drop(value) / base if base else math.nan

    def evaluate(self, quantized: frozenset[str], calibrated: bool = False,
                 demoted: Mapping[str, QuantConfig | None] | None = None) -> Evaluation:
        """The model with ``quantized`` swapped in (and the ``demoted`` layers under their ladder
        config; None: float). Static W8A8: calibrated first, as a user of the plan would
        (replace_linear, then calibrate on the same batches), unless the caller knows the scales
        are already those (``calibrated``)."""
        demoted = {n: c for n, c in (demoted or {}).items() if c is not None}
        modules = {n: self.packed[n] for n in sorted(quantized)}
        modules.update({n: self.packed_as(n, c) for n, c in sorted(demoted.items())})
        static_rung = any(isinstance(c, W8A8Config) and c.activation == "static" for c in demoted.values())
        with self.swapped(modules):
            if (self.calibration is not None and quantized or static_rung) and not calibrated:
                calibrate(self.model, self.batches, progress=False, **(self.calibration or {}))
            with torch.inference_mode():
                cos = torch.cat([row_cosines(o, r) for o, r in zip(self.outputs(), self.reference)])
                metric = self.metric() if self.metric_fn is not None else None
        if metric is None:
            return Evaluation(quantized, cos.mean().item(), cos.min().item(), demoted=demoted)
        return Evaluation(quantized, cos.mean().item(), cos.min().item(), metric,
                          metric - self.baseline_metric, self.relative_drop(metric), demoted=demoted)

    def plan(self, quantized: set[str]) -> Plan:
        return {name: (self.config if name in quantized else None) for name in self.all_linears}


def _as_replace_linear_would(module: nn.Module) -> nn.Module:
    """The layer in the layout replace_linear gives it by default (prepacked where that is the
    faster kernel: CUDA, and the CPU kernels): the trials then run the kernels the plan's model
    will run, so a plan's verified cosine is bit for bit what the user's model gets."""
    apply_prepack_choice(module, None)
    return module


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    prefix, _, child = name.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), child


def _check_batches(batches, what: str) -> list:
    if batches is None or isinstance(batches, (torch.Tensor, Mapping)):
        raise TypeError(f"analyze_sensitivity: {what} must be a list of batches (dicts, tensors or tuples), "
                        f"got {type(batches).__name__}; wrap a single batch in a list")
    batches = list(batches)
    if not batches:
        raise ValueError(f"analyze_sensitivity: {what} is empty")
    return batches


def analyze_sensitivity(
    model: nn.Module,
    config: QuantConfig,
    batches: Iterable[Batch],
    eval_batches: Iterable[Batch] | None = None,
    metric_fn: Callable[[nn.Module], float] | None = None,
    higher_is_better: bool = True,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
    output_fn: Callable[[Any, Batch], torch.Tensor] | None = None,
    calibrate_method: str = "minmax",
    percentile: float = 99.99,
    progress: bool = True,
) -> SensitivityReport:
    """Quantize each nn.Linear of ``model`` alone under ``config`` and rank the errors.

    ``batches``: calibration batches (HF batch dicts, tensors or tuples) for the layers' SQNR and,
    with ``W8A8Config("static")``, for ``calibrate(model, batches, calibrate_method, percentile)``.
    ``eval_batches`` (default ``batches``): for the output cosine vs float. ``metric_fn(model)``:
    optional scalar metric (``higher_is_better`` gives its direction). ``filter_fn(name,
    module)``: which linears to analyze, as in ``replace_linear``. ``output_fn(outputs, batch)``:
    the tensor compared (default ``default_output``: logits / last_hidden_state).

    The layers analyzed are those ``replace_linear(model, config, filter_fn)`` would replace; the
    others (tied to an embedding, in_features the int4 group does not divide, hooked, ...) are in
    ``report.skipped`` with replace_linear's reason, and stay float in every plan.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"analyze_sensitivity: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, QuantConfig.__args__):
        raise TypeError(f"analyze_sensitivity: config must be a W8A16Config, W4A16Config or W8A8Config, "
                        f"got {type(config).__name__}")
    batches = _check_batches(batches, "batches")
    eval_batches = batches if eval_batches is None else _check_batches(eval_batches, "eval_batches")
    static = isinstance(config, W8A8Config) and config.activation == "static"
    calibration = {"method": calibrate_method, "percentile": percentile} if static else None

    # replace_linear's own choice of layers and its reasons for the rest (nothing is packed there).
    choice = plan_replacement(model, config, filter_fn)
    names = choice.names
    all_linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    skipped = {n: why for n, why in choice.skipped.items() if n in all_linears}
    if not names:
        raise ValueError(f"analyze_sensitivity: no nn.Linear to analyze under {config} "
                         f"(skipped: {skipped or 'the model has none'})")

    from tqdm.auto import tqdm

    packed = {  # packed once, reused by every trial
        name: _as_replace_linear_would(quantize_linear(model.get_submodule(name), config))
        for name in tqdm(names, desc="packing", unit="layer", disable=not progress, leave=False)
    }
    an = _Analysis(model, config, names, packed, skipped, all_linears, batches, eval_batches,
                   output_fn or default_output, metric_fn, higher_is_better, calibration)
    was_training = model.training
    model.eval()
    try:
        if static:
            # Alone in the model, a layer sees the float model's inputs: one float pass gives every
            # layer the scale that calibrating with only it swapped in would.
            stats = calibrate(model, batches, observe="all", progress=False, **calibration)
            for name in names:
                packed[name].set_input_scale(stats[name].scale)
        sqnr = _sqnr_pass(an, batches)
        with torch.inference_mode():
            an.reference = an.outputs()
            an.baseline_metric = an.metric() if metric_fn is not None else None
        layers = []
        for name in tqdm(names, desc="sensitivity", unit="layer", disable=not progress, leave=False):
            ev = an.evaluate(frozenset([name]), calibrated=True)
            w = model.get_submodule(name).weight
            layers.append(LayerSensitivity(name, tuple(w.shape), sqnr[name], ev.cosine, ev.min_cosine,
                                           ev.metric, ev.metric_delta, ev.relative_drop))
    finally:
        model.train(was_training)
    if metric_fn is not None:
        # By the drop in metric units: the same order as the relative drop, and defined at 0.
        layers.sort(key=lambda s: (-an.drop(s.metric), s.cosine, s.sqnr_db))
    else:
        layers.sort(key=lambda s: (s.cosine, s.sqnr_db))
    return SensitivityReport(an, layers, an.baseline_metric)


def _sqnr_pass(an: _Analysis, batches: list) -> dict[str, float]:
    """One float pass; a hook on each analyzed linear runs its packed twin on the same input."""
    signal = dict.fromkeys(an.names, 0.0)
    noise = dict.fromkeys(an.names, 0.0)

    def hook(name):
        def fn(module, inputs, output):
            y = output.detach().double()
            yq = an.packed[name](inputs[0]).double()
            signal[name] += y.pow(2).sum().item()
            noise[name] += (yq - y).pow(2).sum().item()

        return fn

    handles = [an.model.get_submodule(n).register_forward_hook(hook(n)) for n in an.names]
    try:
        with torch.inference_mode():
            for batch in batches:
                run_batch(an.model, batch)
    finally:
        for h in handles:
            h.remove()
    return {n: _db(signal[n], noise[n]) for n in an.names}


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)
