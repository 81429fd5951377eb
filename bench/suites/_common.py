"""Pieces shared by the suites: the Llama-3 layer shapes and the slow-impl guard."""

from __future__ import annotations

from dataclasses import dataclass

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

    def measure(self, suite: str, case: str, impl: str, params: dict, make_fn, **kw) -> None:
        """ctx.measure of one impl, unless it got too slow at a smaller M of this shape."""
        if not self.blocked(impl, case):
            self.update(impl, self.ctx.measure(suite, case, impl, params, make_fn, **kw))


@dataclass(frozen=True)
class SquashImpls:
    """Which squash weight-only impls have a kernel here: the prepacked op (recorded as
    "squash", what a model loaded through the prepack path runs) and the canonical-layout op
    (recorded as "squash:canonical" at CANONICAL_MS, to compare the two)."""

    prepacked: bool
    canonical: bool


# The canonical-layout op is timed at these M only (the suites' budget goes to the peers and the
# prepacked path; these two show the old kernels' GEMV and tensor-core regimes).
CANONICAL_MS = (1, 16)


def run_weight_only(ctx, op: str, run_shape, config) -> None:
    """The w4a16/w8a16 loop: every dtype x Llama shape of `config(ctx)`; run_shape(ctx, dtype, K,
    N, ms, squash) times one shape at every M, squash a SquashImpls for `op` (e.g. "w4a16_gemm")
    and its prepacked variant (`op` + "_prepacked")."""
    shapes, ms, dtypes = config(ctx)
    squash = SquashImpls(prepacked=ctx.has_squash(op + "_prepacked"), canonical=ctx.has_squash(op))
    for dn in dtypes:
        for K, N in shapes:
            if ctx.out_of_time():
                return
            run_shape(ctx, DTYPES[dn], K, N, ms, squash)
            ctx.free()


def try_prepare(fn):
    """(value, None) or (None, 'ExcType: message'): for setup shared by many cases."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"
