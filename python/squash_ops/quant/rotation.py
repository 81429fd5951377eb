"""Block Hadamard rotation of a linear layer's input (QuaRot-style, one block size per layer).

``y = x @ W.T == (x @ R) @ (W @ R).T`` for any orthogonal ``R``; with ``R`` block-diagonal of
normalised Hadamard blocks ``H_b / sqrt(b)`` (symmetric, so ``R.T == R``) the rotated activation
spreads a token's few large channels over the ``b`` channels of their block. That is what a
per-token int8 scale needs on MiniLM's post-GELU FFN down-projection input: a token's absmax is
9-13x its RMS there (median over tokens, layers 0-3, the 40 calibration sentences), on channels
that change from token to token, so no per-channel smoothing factor can remove it.

The weight is rotated once, in float64, before it is quantized; the activation is rotated at run
time: on the CPU inside the quantizer (``quantize_activation_int8_transformed``: butterflies,
log2(b) adds per element), elsewhere by ``rotate_blocks`` (one batched [.., K/b, b] @ [b, b]
matmul, b multiply-adds per element, in float32; also what ``transform_input`` and the tests use).
"""

from __future__ import annotations

import torch


def check_block(block: int, in_features: int | None = None, who: str = "rotation") -> None:
    """``block`` is a power of two >= 2 (Sylvester's construction) dividing ``in_features``."""
    if type(block) is not int or block < 2 or block & (block - 1):
        raise ValueError(f"{who}: the Hadamard block size must be a power of two >= 2, got {block!r}")
    if in_features is not None and in_features % block:
        raise ValueError(f"{who}: the Hadamard block size {block} does not divide in_features {in_features}")


def hadamard(block: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The normalised Hadamard matrix ``H_b / sqrt(b)`` [b, b] (Sylvester), orthogonal and
    symmetric; entries are +-2^(-k/2), built in float64 and rounded once to ``dtype``."""
    check_block(block)
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < block:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / block ** 0.5).to(dtype)


def rotate_blocks(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``x @ blockdiag(rotation, ...)`` along the last dimension (its size a multiple of the block)."""
    b = rotation.shape[0]
    return (x.unflatten(-1, (x.shape[-1] // b, b)) @ rotation).flatten(-2)
