"""Pieces shared by the suites: the Llama-3 layer shapes and the slow-impl guard."""

from __future__ import annotations

import torch

# (K, N) of nn.Linear layers in Llama-3-8B/70B (TARGETS.md: "4096x4096, 4096x14336, ...").
LLAMA_SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672), (28672, 8192)]
TINY_SHAPES = [(256, 128), (384, 256)]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# An impl slower than this per call at some M of a shape is not timed at the larger M of that
# shape (e.g. a GEMV-style peer at M=4096 would take seconds per call).
SLOW_US = 50_000


class SlowGuard:
    """Remembers, within one shape, which impls got too slow as M grew."""

    def __init__(self, ctx):
        self.ctx, self.slow = ctx, {}

    def blocked(self, impl: str, case: str) -> bool:
        if impl in self.slow:
            self.ctx.skip(impl, case, f"took {self.slow[impl]:.0f} us per call at a smaller M of this "
                                      "shape; larger M are left out")
            return True
        return False

    def update(self, impl: str, rec: dict | None) -> None:
        if rec is not None and rec["median_us"] > SLOW_US:
            self.slow[impl] = rec["median_us"]


def try_prepare(fn):
    """(value, None) or (None, 'ExcType: message'): for setup shared by many cases."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"
