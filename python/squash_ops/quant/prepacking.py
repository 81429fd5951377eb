"""``prepack(model)`` / ``unprepack(model)``: switch every weight-only quantized layer of a model
to / from a prepacked layout (docs/FORMATS.md "Prepack"): the small-M tensor-core kernel's on
CUDA, the AVX2 / scalar kernels' on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .linear import _PrepackableLinear, _QuantLinear


@dataclass
class PrepackReport:
    """``converted``: layer names switched by this call, in model order. ``skipped``: layer name ->
    why it was left as it was (no prepacked kernel for the scheme, a shape the layout cannot
    hold, already in the requested layout, or, with ``only_where_faster``, no faster kernel there)."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.converted)


def prepack(model: nn.Module, *, only_where_faster: bool = False, layout: str | None = None) -> PrepackReport:
    """Convert every W8A16 / W4A16 layer of ``model`` to the prepacked layout, in place (each
    layer's canonical buffers are freed as it is converted, so peak memory grows by one layer).

    Layers that cannot be converted (W8A8, N or K not a multiple of 8) keep the canonical layout
    and keep working; they are listed in the report's ``skipped`` with the reason. Calling it
    again is harmless (already prepacked layers are reported as skipped). ``layout``: "cpu" or
    "cuda" (default: the layout of each layer's device). ``only_where_faster``: convert only
    layers whose device has the prepacked kernel built (what ``replace_linear`` and
    ``load_quantized`` do by default). Saving is unaffected: checkpoints stay canonical.
    """
    report = PrepackReport()
    for name, m in model.named_modules():
        if not isinstance(m, _QuantLinear):
            continue
        why = m.prepack_blocker(layout)
        if why is None and m.prepacked:
            why = "already prepacked"
        if why is None and only_where_faster and not m.prepack_pays():
            why = f"on {m.weight_device()}: this build has no prepacked kernel there"
        if why is not None:
            report.skipped[name] = why
            continue
        m.prepack(layout)
        report.converted.append(name)
    return report


def unprepack(model: nn.Module) -> PrepackReport:
    """Back to the canonical layout, bit-exact, for every prepacked layer of ``model``."""
    report = PrepackReport()
    for name, m in model.named_modules():
        if isinstance(m, _PrepackableLinear) and m.prepacked:
            m.unprepack()
            report.converted.append(name)
        elif isinstance(m, _QuantLinear):
            report.skipped[name] = "not prepacked"
    return report
