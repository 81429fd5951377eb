"""The attention-output projection's input rotated by block Hadamard matrices, folded: free at run time.

The attention output of head ``h`` is ``P_h @ V_h`` (``P_h`` the attention probabilities), linear
in the value projection's output ``V_h``. For ``R = blockdiag(H_b / sqrt(b))`` with ``b`` dividing
``head_dim`` (no block straddles two heads; symmetric and orthogonal):
``(P_h @ V_h) @ R == P_h @ (V_h @ R)`` and ``y = ctx @ W.T == (ctx @ R) @ (W @ R).T``. So the value
projection's output rows are rotated (``W_v <- R @ W_v``, ``b_v <- R @ b_v``) and the output
projection's input columns (``W_o <- W_o @ R``): exact in float, nothing added at run time (the
``W8A8Config.rotation`` of a layer rotates its input at run time instead).

Why: under static per-tensor int8 the attention-output input is MiniLM's worst (alone it takes the
embedding cosine min from 0.99674 to 0.98299; every block linear static: 0.99848 / 0.98271).
Rotating it by 32-blocks (MiniLM's head_dim) spreads a token's large channels over its head:
0.99943 / 0.99609 with only that layer static, 0.99892 / 0.99329 all static (FFN down-projection
rotated and smoothed; python -m squash_ops.eval.minilm, 2026-12-02).
"""

from __future__ import annotations

import torch
from torch import nn

from ..quant.rotation import check_block, hadamard, rotate_blocks
from .families import ValueSite


def check_value_rotation(site: ValueSite, block: int) -> None:
    check_block(block, site.head_dim, who=f"attention-output rotation of {site.output} (head_dim {site.head_dim})")


def fold_value_rotation(model: nn.Module, site: ValueSite, block: int) -> None:
    """Rotate ``site.value``'s output rows and ``site.output``'s input columns by ``block``-blocks
    (module docs), in float64 with one rounding; new Parameters (``quantize_w8a8`` keeps the old
    ones to restore on failure). Grouped-query attention: the value channel ``kv * head_dim + d``
    feeds channel ``d`` of every query head of ``kv``, and a block inside a head stays inside it."""
    check_value_rotation(site, block)
    value, output = model.get_submodule(site.value), model.get_submodule(site.output)
    for path, lin in ((site.value, value), (site.output, output)):
        if type(lin) is not nn.Linear:
            raise ValueError(f"{path}: the rotation folds into float nn.Linear weights, got {type(lin).__name__}")
    r = hadamard(block, torch.float64).to(value.weight.device)
    with torch.no_grad():
        w = value.weight
        value.weight = nn.Parameter(rotate_blocks(w.double().T, r).T.to(w.dtype).contiguous(), w.requires_grad)
        if value.bias is not None:
            b = value.bias
            value.bias = nn.Parameter(rotate_blocks(b.double(), r).to(b.dtype), b.requires_grad)
        w = output.weight
        output.weight = nn.Parameter(rotate_blocks(w.double(), r).to(w.dtype), w.requires_grad)
