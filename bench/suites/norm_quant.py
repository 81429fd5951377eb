"""Norm -> int8 per token (dynamic scales): fused squash ops vs torch norm + a separate quantize.

Output bytes: q int8 [T, H] + scales f32 [T] (+ residual_out). The torch peer rounds the norm
to the activation dtype before quantizing (what unfused code does); squash quantizes the fp32
norm (its contract) — the timing compares the same amount of work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..harness import Context
from . import norm as _norm

BUDGET_WEIGHT = 30
SUITE = "norm_quant"
EPS = _norm.EPS


def quantize_per_token(y):
    yf = y.float()
    amax = yf.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.clamp(torch.round(yf * inv), -127, 127).to(torch.int8)
    return q, (amax / 127.0).squeeze(-1)


def layer_norm_quant(x, w, b):
    return quantize_per_token(F.layer_norm(x, (x.shape[-1],), w, b, EPS))


def add_layer_norm_quant(x, r, w, b):
    h = x + r
    q, s = quantize_per_token(F.layer_norm(h, (h.shape[-1],), w, b, EPS))
    return q, s, h


def rms_norm_quant(x, w):
    return quantize_per_token(F.rms_norm(x, (x.shape[-1],), w, EPS))


def add_rms_norm_quant(x, r, w):
    h = x + r
    q, s = quantize_per_token(F.rms_norm(h, (h.shape[-1],), w, EPS))
    return q, s, h


OPS = {
    "rms_norm_quant": (rms_norm_quant, False, False),
    "add_rms_norm_quant": (add_rms_norm_quant, True, False),
    "layer_norm_quant": (layer_norm_quant, False, True),
    "add_layer_norm_quant": (add_layer_norm_quant, True, True),
}


def out_bytes(T, H, dt, residual):
    return T * H + 4 * T + (T * H * dt.itemsize if residual else 0)


def run(ctx: Context) -> None:
    _norm.run(ctx, SUITE, OPS, out_bytes)
