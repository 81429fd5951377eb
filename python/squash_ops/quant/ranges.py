"""Static per-tensor activation scales chosen by search, beyond min-max and one fixed percentile.

Both start from ``calibrate``'s min-max scales and keep one scale per input tensor (layers that
read one tensor, q/k/v, share it: ``qat.input_groups``, so the norm's fused int8 output stays):

* ``search_mse``: per input, the clipping ratio ``r`` (scale ``r * absmax / 127``) in ``RATIOS``
  that minimises the summed token-relative output error of the layers reading it,
  ``mean over tokens |Q(x) W.T - x W.T|^2 / |x W.T + b|^2`` with their int8 weights: a layer-wise
  MSE search (a clip at the p-th percentile is one of its candidates);
* ``token_clipping``: Outlier Suppression's coarse stage (Wei et al., NeurIPS 2022): the outliers
  that waste the int8 range sit on a few tokens, so each input is clipped at the ``alpha``
  quantile of its per-token absmax, one ``alpha`` for the whole model, chosen in ``ALPHAS`` by
  the model's output error against the float model (``qat.model_loss``). Its fine stage, learning
  the clipping with LSQ, is ``qat.qat_static_scales``.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from .calibrate import _dynamic_while_calibrating, calibrate, capture_inputs
from .fake_quant import fake_quant_static
from .qat import QATConfig, QATReport, input_groups, model_loss, qat_static_scales, reference_outputs, static_layers

SEARCHES = ("mse", "token_clip")
RATIOS = tuple(round(0.3 + 0.025 * k, 3) for k in range(29))  # 0.3 .. 1.0
ALPHAS = (1.0, 0.9999, 0.9995, 0.999, 0.998, 0.995, 0.99, 0.98, 0.95)
MAX_TOKENS = 4096


def _set_group(layers, group: list[str], scale: torch.Tensor) -> None:
    for p in group:
        layers[p].set_input_scale(scale)


@torch.no_grad()
def search_mse(model: nn.Module, batches: list, ratios=RATIOS,
               max_tokens: int = MAX_TOKENS) -> dict[str, tuple[float, float, float]]:
    """Set every static input scale by the layer-wise output-error search (module docs); returns
    path -> (the chosen ratio of its min-max range, its input's error at min-max, at the ratio).
    The model must be calibrated (any scales): the inputs are captured as ``calibrate`` sees them
    (static layers and fused norms per token), so ratio 1 is its min-max scale."""
    layers = static_layers(model)
    groups = input_groups(model, batches[0])
    with _dynamic_while_calibrating(model, list(layers.values())):
        inputs = capture_inputs(model, [g[0] for g in groups], batches, max_tokens, who="search_mse")
    chosen = {}
    for group in groups:
        x = inputs[group[0]]
        consumers = []
        for p in group:
            m = layers[p]
            w = m.qweight.float().cpu() * m.scales.float().cpu()[:, None]
            b = None if m.bias is None else m.bias.float().cpu()
            y = nn.functional.linear(x, w)
            consumers.append((w, y, (y if b is None else y + b).pow(2).sum(-1).clamp_min(1e-30)))
        absmax = x.abs().max()

        def error(r):
            xq = fake_quant_static(x, (absmax * r / 127).float())
            return sum(float(((xq @ w.T - y).pow(2).sum(-1) / norm).mean()) for w, y, norm in consumers)

        errors = {r: error(r) for r in ratios}
        best = min(errors, key=errors.get)
        _set_group(layers, group, (absmax * best / 127).float())
        chosen.update(dict.fromkeys(group, (best, error(1.0), errors[best])))
    return chosen


@torch.no_grad()
def token_clipping(model: nn.Module, reference: nn.Module | list[torch.Tensor], batches: list,
                   alphas=ALPHAS, loss: str = "token") -> tuple[float, dict[float, float]]:
    """Set every static input scale to the ``alpha`` quantile of its per-token absmax over
    ``batches`` / 127, with the ``alpha`` of least model loss against ``reference`` (the float
    model or its ``qat.reference_outputs``). Returns (alpha, alpha -> loss). The per-token absmax
    is ``calibrate``'s, so ``alpha = 1`` gives exactly its min-max scales."""
    targets = reference if isinstance(reference, list) else reference_outputs(reference, batches)
    layers = static_layers(model)
    stats = calibrate(model, batches, progress=False)
    groups = input_groups(model, batches[0])

    def clip_at(alpha):
        for group in groups:
            clip = torch.quantile(stats[group[0]].token_absmax.double(), alpha)
            _set_group(layers, group, (clip / 127).float())

    losses = {}
    for alpha in alphas:
        clip_at(alpha)
        losses[alpha] = model_loss(model, batches, targets, loss)
    best = min(losses, key=losses.get)
    clip_at(best)
    return best, losses


def tune_static_scales(model: nn.Module, batches: list, targets: list[torch.Tensor] | None,
                       search: str | None = None, qat: QATConfig | None = None) -> tuple[str, QATReport | None]:
    """After ``calibrate``: the ``search`` ("mse", "token_clip" or None: keep the calibrated scales),
    then QAT from there when ``qat`` is given. ``targets``: the float model's
    ``qat.reference_outputs`` on ``batches`` (needed by "token_clip" and QAT). Returns (what was
    done, the QAT report)."""
    check_search(search)
    done = []
    if search == "mse":
        ratios = [r for r, _, _ in search_mse(model, batches).values()]
        done.append(f"MSE search: clipping ratios {min(ratios):g}-{max(ratios):g} of min-max")
    elif search == "token_clip":
        alpha, _ = token_clipping(model, targets, batches, loss=qat.loss if qat else "token")
        done.append(f"token-wise clipping: the {alpha:g} quantile of each input's token absmax")
    report = None
    if qat is not None:
        report = qat_static_scales(model, targets, batches, **asdict(qat))
        done.append(str(report))
    return "; ".join(done), report


def check_search(search: str | None) -> None:
    if search is not None and search not in SEARCHES:
        raise ValueError(f"static scale search must be one of {SEARCHES} or None, got {search!r}")
