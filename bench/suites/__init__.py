"""One module per suite; each has `run(ctx)` and `BUDGET_WEIGHT` (its share of the run's time).

Every suite measures through `Context.measure`, so an impl that fails is logged as a SKIP and
the run goes on; the squash impl is measured only where `ctx.has_squash(op)`.
"""

import importlib

ORDER = ("ceiling", "w4a16", "w8a16", "w8a8", "norm", "norm_quant", "attn_fwd", "attn_decode", "e2e_decode")


def load(name: str):
    if name not in ORDER:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(ORDER)}")
    return importlib.import_module(f"{__name__}.{name}")
