"""Norms: LayerNorm / RMSNorm, with and without the residual add, vs torch and torch.compile.

The torch references here are also what "compiled" compiles (one compile per op, hidden and
dtype: the token dimension is marked dynamic, so all token counts share it; hidden stays static
so Inductor keeps its persistent reductions). gbps counts the fused op's bytes in + out for
every impl of a case (effective bandwidth of the same work).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..harness import Context, dtype_name, rand, rotating
from ._common import DTYPES

BUDGET_WEIGHT = 40
SUITE = "norm"
EPS = 1e-5


def layer_norm(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, EPS)


def add_layer_norm(x, r, w, b):
    h = x + r
    return F.layer_norm(h, (h.shape[-1],), w, b, EPS), h


def rms_norm(x, w):
    return F.rms_norm(x, (x.shape[-1],), w, EPS)


def add_rms_norm(x, r, w):
    h = x + r
    return F.rms_norm(h, (h.shape[-1],), w, EPS), h


# op name -> (torch reference, has residual, has bias)
OPS = {
    "rms_norm": (rms_norm, False, False),
    "add_rms_norm": (add_rms_norm, True, False),
    "layer_norm": (layer_norm, False, True),
    "add_layer_norm": (add_layer_norm, True, True),
}


def squash_call(op: str):
    """squash::<op> with the argument order of its schema, same inputs as the reference."""
    f = getattr(torch.ops.squash, op)
    if op in ("rms_norm", "rms_norm_quant"):
        return lambda x, w: f(x, w, EPS)
    if op in ("add_rms_norm", "add_rms_norm_quant"):
        return lambda x, r, w: f(x, r, w, EPS)
    if op in ("layer_norm", "layer_norm_quant"):
        return lambda x, w, b: f(x, w, b, EPS)
    return lambda x, r, w, b: f(x, r, w, b, EPS)


def config(ctx: Context):
    if ctx.tiny:
        return ["bf16"], [256], [64, 96]
    if ctx.quick:
        return ["bf16"], [4096], [4096, 65536]
    return ["bf16", "fp16"], [1024, 4096, 16384], [4096, 16384, 65536]


def compile_fn(ctx: Context, ref):
    """A fresh torch.compile of `ref` (Dynamo's caches reset, so no cache limit is reached)."""
    ctx.note_compile()
    if ctx.dry_run:
        return ref
    torch._dynamo.reset()
    return torch.compile(ref)


def inputs(ctx: Context, T: int, H: int, dt: torch.dtype, residual: bool, bias: bool, mark_dynamic: bool):
    """Rotating input sets (x[, residual], weight[, bias]) with the token dim marked dynamic."""
    def make():
        ts = [rand(ctx, (T, H), dt)] + ([rand(ctx, (T, H), dt)] if residual else [])
        if mark_dynamic and not ctx.dry_run:
            for t in ts:
                torch._dynamo.mark_dynamic(t, 0)
        ts.append(rand(ctx, (H,), dt))
        if bias:
            ts.append(rand(ctx, (H,), dt))
        return tuple(ts)
    return rotating(ctx, make, T * H * dt.itemsize * (2 if residual else 1))


def run(ctx: Context, suite: str = SUITE, ops: dict | None = None, out_bytes=None) -> None:
    """Also drives norm_quant (its own ops and output bytes)."""
    ops = ops or OPS
    dtypes, hiddens, tokens = config(ctx)
    # torch.compile failing twice (e.g. no C compiler for Triton's launcher) is not retried for
    # every case: each attempt can cost seconds.
    compile_failures, compile_reason = 0, ""
    for dn in dtypes:
        dt = DTYPES[dn]
        for op, (ref, residual, bias) in ops.items():
            has_squash = ctx.has_squash(op)
            for H in hiddens:
                if ctx.out_of_time():
                    return
                compiled = None
                for T in tokens:
                    case = f"{op} T={T} H={H} {dn}"
                    params = {"tokens": T, "hidden": H, "dtype": dn}
                    sets = inputs(ctx, T, H, dt, residual, bias, mark_dynamic=True)
                    nbytes = (sum(t.numel() * t.element_size() for t in sets[0])
                              + (out_bytes(T, H, dt, residual) if out_bytes else
                                 T * H * dt.itemsize * (2 if residual else 1)))

                    def call_of(fn):
                        return lambda i: fn(*sets[i % len(sets)])

                    ctx.measure(suite, case, "torch_norm", params, lambda: call_of(ref), nbytes=nbytes)
                    if compile_failures >= 2:
                        ctx.skip("compiled", case, f"torch.compile failed twice already ({compile_reason[:120]})")
                    else:
                        if compiled is None:
                            compiled = compile_fn(ctx, ref)
                        ctx.last_error = None
                        if ctx.measure(suite, case, "compiled", params, lambda: call_of(compiled),
                                       nbytes=nbytes) is None and ctx.last_error:
                            compile_failures, compile_reason = compile_failures + 1, ctx.last_error
                    if has_squash:
                        ctx.measure(suite, case, "squash", params, lambda: call_of(squash_call(op)), nbytes=nbytes)
                    del sets
                ctx.free()
