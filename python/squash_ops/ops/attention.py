"""Flash attention in the FlashAttention layout: ``[batch, seq, heads, head_dim]``.

Semantics shared by the three ops (CPU and CUDA implement exactly this):

* dtypes: q, k, v float16 or bfloat16 (float32 accepted on CPU); k and v have q's dtype. The
  output has q's dtype and is computed with fp32 accumulation (scores, softmax, P @ V), rounded
  once.
* head_dim D in 1..256 (a CUDA kernel may support fewer and says so); the last dim of q, k, v
  must be contiguous, leading dims may be strided (e.g. slices of a packed qkv or a big cache).
* GQA/MQA: ``heads_q`` is a multiple of ``heads_kv``; query head ``h`` reads kv head
  ``h // (heads_q // heads_kv)``. K/V are never repeated in memory.
* scores are ``softmax_scale * q @ k^T`` with ``softmax_scale`` defaulting to ``1/sqrt(D)``.
* causal masking is bottom-right aligned: with ``Sq`` queries and ``Sk`` keys, query ``i`` sees
  key ``j`` iff ``j <= i + Sk - Sq`` (the last query sees every key). With ``Sq > Sk`` the first
  ``Sq - Sk`` queries see no key.
* a query row that sees no key gets output 0 and lse ``-inf``.
* lse (float32) is the natural-log sum-exp of the row's scaled, masked scores, the quantity
  needed to merge partial attention results (e.g. split-KV).
* zero-sized batch/sequence dimensions are allowed (empty results).

CUDA limits (ValueError otherwise): float16/bfloat16 only, head_dim 64, 128 or 256, pointers on
16-byte boundaries and leading strides that are multiples of 8 elements (slices of a packed qkv
with such head sizes are fine). Every op refuses a ``softmax_scale`` that is not finite and > 0. On
CUDA the ops never synchronize and never read cu_seqlens/cache_seqlens on the host, so those
values are not validated there (the kernels clamp lengths to max_seqlen / the cache size).
"""

from typing import Optional, Union

import torch
from torch import Tensor

from . import _checks

__all__ = ["attention", "attention_varlen", "attention_decode"]

_Result = Union[Tensor, tuple[Tensor, Tensor]]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    return_lse: bool = False,
) -> _Result:
    """Attention over a padded batch.

    Args:
        q: ``[B, Sq, Hq, D]``.
        k, v: ``[B, Sk, Hkv, D]``, same dtype as q, ``Hq % Hkv == 0``.
        softmax_scale: scale of ``q @ k^T``; None means ``1/sqrt(D)``.
        causal: bottom-right aligned causal mask (query i sees key j iff j <= i + Sk - Sq).
        return_lse: also return the log-sum-exp.

    Returns:
        ``out [B, Sq, Hq, D]`` (q's dtype), and with ``return_lse`` also
        ``lse [B, Hq, Sq]`` float32. Rows that see no key: out 0, lse -inf.
    """
    out, lse = torch.ops.squash.attention(q, k, v, softmax_scale, causal)
    return (out, lse) if return_lse else out


def attention_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    return_lse: bool = False,
) -> _Result:
    """Attention over sequences packed along one token axis (no padding).

    Sequence ``b`` owns query rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of q and key rows
    ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` of k/v, and attends within itself with the rules of
    :func:`attention` (causal alignment per sequence). Empty sequences are allowed.

    Args:
        q: ``[Tq, Hq, D]``.
        k, v: ``[Tk, Hkv, D]``.
        cu_seqlens_q, cu_seqlens_k: int32 ``[B + 1]`` contiguous, on q's device, non-decreasing,
            starting at >= 0 and ending at <= Tq (Tk).
        max_seqlen_q, max_seqlen_k: upper bounds of the per-sequence lengths (used by CUDA to
            size the launch; the CPU path checks them).
        softmax_scale, causal, return_lse: as in :func:`attention`.

    Returns:
        ``out [Tq, Hq, D]`` and with ``return_lse`` ``lse [Hq, Tq]`` float32. Query rows outside
        every sequence are 0 / -inf on CPU and left unwritten on CUDA; do not rely on them.
    """
    out, lse = torch.ops.squash.attention_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal
    )
    return (out, lse) if return_lse else out


def attention_decode(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    cache_seqlens: Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = True,
    return_lse: bool = False,
) -> _Result:
    """Attention of a few new tokens against a KV cache.

    The cache already holds the ``Sq`` new tokens: sequence ``b`` has ``len = cache_seqlens[b]``
    valid keys (rows ``0:len`` of k_cache/v_cache), and query ``i`` sits at position
    ``len - Sq + i``. Causal: query i sees keys ``j <= len - Sq + i``; non-causal: all
    ``j < len``. ``len`` may be 0 (or < Sq): queries that see no key give 0 / -inf.

    Args:
        q: ``[B, Sq, Hq, D]``.
        k_cache, v_cache: ``[B, Smax, Hkv, D]``, same dtype as q, ``Hq % Hkv == 0``.
        cache_seqlens: int32 ``[B]`` contiguous on q's device, ``0 <= len <= Smax``.
        softmax_scale, return_lse: as in :func:`attention`.
        causal: default True (decode with Sq > 1, e.g. speculative tokens, is causal).

    Returns:
        ``out [B, Sq, Hq, D]`` and with ``return_lse`` ``lse [B, Hq, Sq]`` float32.
    """
    out, lse = torch.ops.squash.attention_decode(
        q, k_cache, v_cache, cache_seqlens, softmax_scale, causal
    )
    return (out, lse) if return_lse else out


# ---- fake kernels for torch.compile and opcheck: the real kernels' argument checks (_checks.py),
# then the output shapes (never reading cu_seqlens/cache_seqlens) ----


@torch.library.register_fake("squash::attention")
def _attention_fake(q, k, v, softmax_scale=None, causal=False):
    _checks.attention(q, k, v, softmax_scale)
    B, Sq, Hq, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, Hq, Sq), dtype=torch.float32)


@torch.library.register_fake("squash::attention_varlen")
def _attention_varlen_fake(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None, causal=False
):
    _checks.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale)
    Tq, Hq, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((Hq, Tq), dtype=torch.float32)


@torch.library.register_fake("squash::attention_decode")
def _attention_decode_fake(q, k_cache, v_cache, cache_seqlens, softmax_scale=None, causal=True):
    _checks.attention_decode(q, k_cache, v_cache, cache_seqlens, softmax_scale)
    B, Sq, Hq, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, Hq, Sq), dtype=torch.float32)
