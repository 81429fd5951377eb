"""One module per suite; each has `run(ctx)` and `BUDGET_WEIGHT` (its share of the run's time).

Every suite measures through `Context.measure`, so an impl that fails is logged as a SKIP and
the run goes on; the squash impl is measured only where `ctx.has_squash(op)`. The GPU suites (ORDER) run on the
CPU as a smoke test with tiny shapes; the CPU suites (CPU_ORDER) are benchmarks of the CPU.
"""

import importlib

ORDER = ("ceiling", "w4a16", "w8a16", "w8a8", "norm", "norm_quant", "attn_fwd", "attn_decode", "e2e_decode")
# The CPU suites (real shapes on the CPU; `--device cpu` runs these by default). A new CPU suite is
# a module here plus its name in this tuple.
CPU_ORDER = ("cpu_minilm", "cpu_w8a8", "cpu_woq", "cpu_decode")


def load(name: str):
    if name not in ORDER + CPU_ORDER:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(ORDER + CPU_ORDER)}")
    return importlib.import_module(f"{__name__}.{name}")
