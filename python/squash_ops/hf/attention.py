"""Squash attention as a transformers attention implementation.

``register(name)`` adds ``name`` to transformers' ``AttentionInterface`` (the attention function) and
``AttentionMaskInterface`` (the mask builder). Both are needed: transformers hands an attention
implementation without a registered mask builder ``attention_mask=None``, so padded batches would
be silently wrong (BUILD_NOTES). The mask builder does not build a dense mask: it returns ``None``
or a small ``SquashMask`` that says how to call the ops, computed once per forward and shared by
every layer.

transformers calls the attention function with ``query [B, Hq, Sq, D]``, ``key``/``value``
``[B, Hkv, Sk, D]`` (GQA is never repeated here: the ops read kv head ``h // (Hq / Hkv)``); the
ops take the FlashAttention layout ``[B, S, H, D]``, which is a transposed *view* of those
tensors (last dim contiguous, as the ops require), so nothing is copied on the way in. Routing:

==========================================  =================================================
what the mask builder saw                   op
==========================================  =================================================
no padding; the keys are exactly the past   ``attention`` (causal is bottom-right aligned,
plus the new tokens (no cache, or           which is transformers' causal rule with a cache);
``DynamicCache``)                           ``attention_decode`` with full lengths when the
                                            few query rows make it a decode step
no padding; a ``StaticCache`` (keys are     ``attention_decode`` with ``cache_seqlens`` =
the whole preallocated buffer)              the filled length, read on the device
padding (any 2D ``attention_mask``)         ``attention_varlen`` on tokens packed like
                                            FlashAttention-2's transformers integration
                                            (unpad, attend, pad back)
packed sequences: batch 1, no mask, and     ``attention_varlen`` on the packed rows as they
transformers' ``cu_seq_lens_q/k`` kwargs    are (``PackedEncoder`` runs encoders this way)
==========================================  =================================================

Every path has static shapes and never reads tensor values on the host (the packing uses
cumsum/scatter over all ``B x S`` slots, and ``max_seqlen`` is the padded length), so a forward
goes through ``torch.compile(fullgraph=True)`` and CUDA-graph capture. In eager mode only, a 2D
mask that has no padding at all is dropped after one ``mask.all()`` check (one host sync per
forward) so unpadded batches take the direct path.

What the ops cannot express — a dense or custom mask pattern (sliding window, chunked, packed
sequences with a mask, model-specific overlays, a user's 4D mask), softcapping, attention sinks, position
bias, dropout (training), ``output_attentions``, a value head dim different from the query's, an
op without a kernel for the tensors' device — raises ``NotImplementedError`` naming the feature
(``fallback="error"``, the default), or with ``fallback="sdpa"`` runs that attention call with
transformers' SDPA implementation on a dense mask (a warning is logged once per reason).
Padded query rows (left or right padding) of causal attention come out as zeros, where SDPA
leaves values that no unpadded position ever reads.

The ops have no backward: this is an inference path.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import (
    AttentionMaskInterface,
    bidirectional_mask_function,
    causal_mask_function,
    sdpa_mask,
)

from .. import cpu, ops

__all__ = ["register", "SquashMask", "LengthsMask", "PaddedMask", "FALLBACKS"]

FALLBACKS = ("error", "sdpa")
_log = logging.getLogger(__name__)
_warned: set[str] = set()

# At most this many query rows per kv head (Sq x Hq/Hkv) make a call a decode step, routed to
# attention_decode even without a cache: its CUDA kernel splits the keys across CTAs, and 8 rows
# are what one of its CTAs holds (csrc/kernels/attention/decode_heuristics.h).
_DECODE_MAX_ROWS = 8

# Which ops have a kernel for which device, read once (a dispatcher query inside a traced
# function would break the graph). The library registers every kernel when squash_ops loads.
_KERNELS = {
    (op, dev): bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"squash::{op}", key))
    for op in ("attention", "attention_varlen", "attention_decode")
    for dev, key in (("cpu", "CPU"), ("cuda", "CUDA"))
}


class SquashMask:
    """What the mask builder hands every layer instead of a dense mask.

    ``ndim = 4`` makes transformers' mask preprocessing pass a pre-built one through unchanged
    (``generate()`` with a static cache builds the mask before the forward and the forward then
    calls the builder again with it).
    """

    ndim = 4

    def __init__(self, causal: bool):
        self.causal = causal


class LengthsMask(SquashMask):
    """No padding, keys in a preallocated cache: sequence b has ``seqlens[b]`` valid keys (int32
    ``[B]``, on the device) and its queries are the last ``Sq`` of them."""

    def __init__(self, causal: bool, seqlens: Tensor):
        super().__init__(causal)
        self.seqlens = seqlens

    def dense(self, q_len: int, kv_len: int) -> Tensor:
        """The equivalent boolean ``[B, 1, q_len, kv_len]`` mask (True = attend), for SDPA."""
        j = torch.arange(kv_len, device=self.seqlens.device)
        lens = self.seqlens.long()[:, None, None]
        allowed = j < lens
        if self.causal:
            q_pos = lens - q_len + torch.arange(q_len, device=j.device)[:, None]
            allowed = allowed & (j <= q_pos)
        return allowed.expand(-1, q_len, -1)[:, None]


class PaddedMask(SquashMask):
    """A 2D padding mask turned into the packing of ``attention_varlen``.

    ``key_valid [B, Sk]``: the keys that may be attended (for causal, keys after the last query
    are cleared, so bottom-right alignment within each packed sequence is exact).
    ``q_positions [Sq]``: the key position of each query. Keys are packed by
    ``(k_batch, k_pos)`` with ``cu_seqlens_k``; causal queries likewise by ``(q_batch, q_pos)``,
    and ``q_dest`` puts each packed row back, ``q_valid`` zeroes the padded ones. Non-causal
    queries stay dense (every query row of sequence b sees its valid keys, as SDPA computes).
    """

    def __init__(self, causal: bool, key_valid: Tensor, q_positions: Tensor):
        super().__init__(causal)
        B, Sk = key_valid.shape
        Sq = q_positions.shape[0]
        self.key_valid, self.q_positions = key_valid, q_positions
        self.k_batch, self.k_pos, _, self.cu_seqlens_k = _pack(key_valid)
        if causal:
            self.q_valid = key_valid.gather(1, q_positions.expand(B, Sq))
            self.q_batch, self.q_pos, self.q_dest, self.cu_seqlens_q = _pack(self.q_valid)
        else:
            self.q_valid = None
            self.cu_seqlens_q = torch.arange(B + 1, device=key_valid.device, dtype=torch.int32) * Sq

    def dense(self, q_len: int, kv_len: int) -> Tensor:
        allowed = self.key_valid[:, None, :].expand(-1, q_len, -1)
        if self.causal:
            j = torch.arange(kv_len, device=allowed.device)
            allowed = allowed & (j <= self.q_positions[:, None])
        return allowed[:, None]


def _pack(valid: Tensor):
    """Static-shape packing of the True slots of ``valid [B, S]``, in order, to the front.

    Returns (batch, position) of the slot at each packed row (int64 ``[B*S]``; rows past the
    last valid slot hold the padded slots), ``dest`` (the packed row of each slot, row-major) and
    int32 ``cu_seqlens [B + 1]``. No host sync: ranks come from cumsum, not nonzero().
    """
    B, S = valid.shape
    flat = valid.reshape(-1)
    kept = flat.long()
    dest = torch.where(flat, kept.cumsum(0) - 1, kept.sum() + (1 - kept).cumsum(0) - 1)
    src = torch.empty_like(dest).scatter_(0, dest, torch.arange(B * S, device=valid.device))
    cu = F.pad(valid.sum(1).cumsum(0), (1, 0)).to(torch.int32)
    return src // S, src % S, dest, cu


def _can_sync(t: Tensor) -> bool:
    """Reading a tensor on the host is allowed: eager, and not inside a CUDA-graph capture."""
    if torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


class _Unsupported(Exception):
    """Internal: the ops cannot express this call; the message names what."""


def _unsupported(name: str, fallback: str, what: str) -> None:
    if fallback == "error":
        raise NotImplementedError(
            f"squash attention ({name!r}): {what} is not supported by the squash ops; register with "
            f"squash_ops.hf.register({name!r}, fallback='sdpa') to run such calls with PyTorch SDPA, or "
            "use attn_implementation='sdpa'"
        ) from None
    if what not in _warned:
        _warned.add(what)
        _log.warning("squash attention (%r): %s is not supported by the squash ops; using SDPA there", name, what)


# ---- the mask builder -----------------------------------------------------------------------


def _make_mask_builder(name: str, fallback: str) -> Callable:
    def squash_mask(
        batch_size: int,
        q_length: int,
        kv_length: int,
        q_offset=0,
        kv_offset: int = 0,
        mask_function: Callable = causal_mask_function,
        attention_mask: Optional[Tensor] = None,
        **kwargs,
    ):
        if isinstance(attention_mask, SquashMask):  # built earlier by generate() for this step
            return attention_mask
        try:
            return _build_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function,
                               attention_mask, kwargs.get("device", "cpu"))
        except _Unsupported as e:
            _unsupported(name, fallback, str(e))
            # A dense mask: the attention function sends dense masks to SDPA.
            kwargs.update(allow_is_causal_skip=False, allow_is_bidirectional_skip=False)
            return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                             kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                             **kwargs)

    squash_mask.__name__ = squash_mask.__qualname__ = f"squash_mask[{name}]"
    return squash_mask


def _build_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask, device):
    # transformers composes the pattern as a function; only the two plain ones are recognizable
    # (every overlay is a fresh closure), and only they map onto the ops.
    if mask_function is causal_mask_function:
        causal = True
    elif mask_function is bidirectional_mask_function:
        causal = False
    else:
        raise _Unsupported(
            "a mask pattern other than plain causal/bidirectional attention with padding (sliding window, "
            "chunked attention, a model-specific overlay, or packed sequences, which transformers also assumes "
            "under torch.compile when a forward has neither an attention_mask nor a cache: pass one)"
        )
    if kv_offset != 0:
        raise _Unsupported(f"a key offset (kv_offset={kv_offset}, a sliding-window cache)")
    static = isinstance(q_offset, Tensor)  # StaticCache: keys are the whole preallocated buffer
    if not static and q_offset + q_length > kv_length:
        raise _Unsupported(f"queries past the keys (q_offset {q_offset} + q_length {q_length} > kv_length {kv_length})")
    # Keys that exist: the past plus the new tokens (or, bidirectional without a cache, all keys).
    filled = q_offset + q_length if (causal or static) else kv_length

    if attention_mask is not None:
        attention_mask = attention_mask[:, :kv_length].to(torch.bool)
        if (_can_sync(attention_mask) and attention_mask.shape[-1] == int(filled)
                and bool(attention_mask.all())):
            attention_mask = None

    if attention_mask is None:
        if static:  # the filled length lives on the device (no host read, capturable)
            return LengthsMask(causal, filled.to(torch.int32).reshape(1).repeat(batch_size))
        if filled != kv_length:
            # torch.full, not as_tensor: a fill kernel, where a host-to-device copy of a Python
            # int would not replay correctly from a CUDA graph.
            return LengthsMask(causal, torch.full((batch_size,), filled, dtype=torch.int32, device=device))
        return None

    key_valid = attention_mask
    if key_valid.shape[-1] < kv_length:  # a short mask: the rest is padding (transformers' rule)
        key_valid = F.pad(key_valid, (0, kv_length - key_valid.shape[-1]))
    q_positions = torch.arange(q_length, device=key_valid.device) + q_offset
    if causal:
        key_valid = key_valid & (torch.arange(kv_length, device=key_valid.device) < filled)
    return PaddedMask(causal, key_valid, q_positions)


# ---- the attention function -----------------------------------------------------------------


def _check_call(query: Tensor, value: Tensor, mask, dropout: float, kwargs: dict) -> None:
    if isinstance(mask, Tensor):
        raise _Unsupported("a dense attention mask (a 4D mask built by the model or passed by the caller)")
    if dropout:
        raise _Unsupported(f"attention dropout ({dropout}, training mode)")
    for key, what in (("softcap", "logit softcapping"), ("sliding_window", "a sliding window"),
                      ("s_aux", "attention sinks"), ("position_bias", "a position bias")):
        if kwargs.get(key) is not None:
            raise _Unsupported(what)
    if kwargs.get("output_attentions"):
        raise _Unsupported("output_attentions=True (the ops do not form the attention matrix)")
    if value.shape[-1] != query.shape[-1]:
        raise _Unsupported(f"a value head dim ({value.shape[-1]}) different from the query's ({query.shape[-1]})")
    if query.is_cuda and query.dtype == torch.float32:
        raise _Unsupported("float32 on CUDA (the CUDA kernels take float16/bfloat16)")


def _kernel(op: str, t: Tensor) -> None:
    if not _KERNELS.get((op, t.device.type), False):
        raise _Unsupported(f"{t.device.type} tensors (squash::{op} has no {t.device.type} kernel in this build)")


def _dense(q: Tensor, k: Tensor, v: Tensor, scale, causal: bool) -> Tensor:
    """Every key valid, queries the last Sq positions (q, k, v in [B, S, H, D])."""
    B, Sq, Hq, _ = q.shape
    decode = Sq * (Hq // k.shape[2]) <= _DECODE_MAX_ROWS
    if decode or not _KERNELS.get(("attention", q.device.type), False):
        # attention_decode with full lengths computes the same thing; it is also the path on a
        # device where only the decode kernel exists.
        _kernel("attention_decode", q)
        lens = torch.full((B,), k.shape[1], dtype=torch.int32, device=q.device)
        return ops.attention_decode(q, k, v, lens, softmax_scale=scale, causal=causal)
    return ops.attention(q, k, v, softmax_scale=scale, causal=causal)


def _padded(q: Tensor, key: Tensor, value: Tensor, mask: PaddedMask, scale) -> Tensor:
    """attention_varlen on packed tokens; q in [B, Sq, H, D], key/value in transformers' layout."""
    _kernel("attention_varlen", q)
    B, Sq, Hq, D = q.shape
    kp = key[mask.k_batch, :, mask.k_pos]  # [B*Sk, Hkv, D]: one gather, straight from [B, H, S, D]
    vp = value[mask.k_batch, :, mask.k_pos]
    qp = q[mask.q_batch, mask.q_pos] if mask.causal else q.reshape(B * Sq, Hq, D)
    out = ops.attention_varlen(qp, kp, vp, mask.cu_seqlens_q, mask.cu_seqlens_k, Sq, key.shape[2],
                               softmax_scale=scale, causal=mask.causal)
    if mask.causal:
        # Back to row-major slots; padded query rows (and packed rows of no sequence) become 0.
        out = torch.where(mask.q_valid.reshape(-1, 1, 1), out.index_select(0, mask.q_dest), out.new_zeros(()))
    return out.reshape(B, Sq, Hq, D)


def _packed_sdpa(q: Tensor, k: Tensor, v: Tensor, cu_q: Tensor, cu_k: Tensor, scale, causal: bool) -> Tensor:
    """Packed sequences on a CPU where ``attention_varlen`` has no vectorized kernel (no AVX2,
    or a head dim that is not a multiple of 8): torch's SDPA per sequence. 32 sequences of 3-49
    tokens, 12 heads of 32 (MiniLM's shape), one thread: 3.4-3.9 ms against 6.7-7.2 ms for the
    scalar reference ``attention_varlen`` (bench/results/2026-12-02_cpu-amd-epyc_probes.log); its AVX2
    kernel takes 0.9-1.2 ms there, SDPA per sequence 2.2 ms (bench/results/2026-12-02_cpu-amd-epyc-6_probes.log).
    Causal is bottom-right aligned per sequence, as in attention_varlen."""
    out = q.new_empty(q.shape[1:])
    bq, bk = cu_q.tolist(), cu_k.tolist()
    gqa = q.shape[2] != k.shape[2]
    for i in range(len(bq) - 1):
        (q0, q1), (k0, k1) = bq[i:i + 2], bk[i:i + 2]
        if q1 == q0:
            continue
        qs, ks, vs = (t[0, a:b].transpose(0, 1) for t, a, b in ((q, q0, q1), (k, k0, k1), (v, k0, k1)))
        mask = None
        if causal and q1 - q0 > 1:  # bottom-right: query i sees key j iff j <= i + Sk - Sq
            mask = torch.ones(q1 - q0, k1 - k0, dtype=torch.bool).tril(k1 - k0 - (q1 - q0))
        out[q0:q1] = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale,
                                                    enable_gqa=gqa).transpose(0, 1)
    return out.unsqueeze(0)


@torch.compiler.assume_constant_result
def _cpu_vector_path() -> bool:
    """Whether the CPU kernels run a vectorized path: a process-wide setting, which a compiled
    graph takes as the constant it saw (a native call would break the graph at every layer)."""
    return cpu.active_isa() != "scalar"


def _packed(q: Tensor, k: Tensor, v: Tensor, kwargs: dict, scale, causal: bool) -> Tensor:
    """Sequences packed back to back in one row (batch 1), delimited by transformers' packed-
    sequence kwargs ``cu_seq_lens_q/k`` and ``max_length_q/k`` (FlashAttention-2's convention;
    what ``PackedEncoder`` passes): attention_varlen on them, nothing padded."""
    if q.shape[0] != 1:
        raise _Unsupported(f"packed sequences (cu_seq_lens_q) in a batch of {q.shape[0]} rows (expected 1)")
    if q.device.type == "cpu" and not (q.shape[-1] % 8 == 0 and _cpu_vector_path()):
        return _packed_sdpa(q, k, v, kwargs["cu_seq_lens_q"], kwargs["cu_seq_lens_k"], scale, causal)
    _kernel("attention_varlen", q)
    out = ops.attention_varlen(q[0], k[0], v[0], kwargs["cu_seq_lens_q"], kwargs["cu_seq_lens_k"],
                               _length(kwargs["max_length_q"]), _length(kwargs["max_length_k"]),
                               softmax_scale=scale, causal=causal)
    return out.unsqueeze(0)


def _length(v) -> int:
    """A max_length kwarg as an int; a symbolic one (torch.compile / torch.export with a dynamic
    length) stays symbolic, where int() would make the traced graph hold this call's value."""
    return v if isinstance(v, (int, torch.SymInt)) else int(v)


def _make_attention(name: str, fallback: str) -> Callable:
    def squash_attention(
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask,
        dropout: float = 0.0,
        scaling: Optional[float] = None,
        is_causal: Optional[bool] = None,
        **kwargs,
    ) -> tuple[Tensor, None]:
        q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        try:
            _check_call(query, value, attention_mask, dropout, kwargs)
            if attention_mask is None:
                causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
                if kwargs.get("cu_seq_lens_q") is not None:
                    return _packed(q, k, v, kwargs, scaling, causal), None
                return _dense(q, k, v, scaling, causal), None
            if isinstance(attention_mask, LengthsMask):
                _kernel("attention_decode", q)
                return ops.attention_decode(q, k, v, attention_mask.seqlens, softmax_scale=scaling,
                                            causal=attention_mask.causal), None
            return _padded(q, key, value, attention_mask, scaling), None
        except _Unsupported as e:
            _unsupported(name, fallback, str(e))
        if isinstance(attention_mask, SquashMask):
            attention_mask = attention_mask.dense(query.shape[2], key.shape[2])
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)

    squash_attention.__name__ = squash_attention.__qualname__ = f"squash_attention[{name}]"
    return squash_attention


def register(name: str = "squash", *, fallback: str = "error") -> str:
    """Registers squash attention with transformers under ``name``; returns ``name``.

    Afterwards ``model.set_attn_implementation(name)`` (or ``attn_implementation=name`` in
    ``from_pretrained``/``from_config``) routes the model's attention to the squash ops.
    ``fallback``: ``"error"`` raises ``NotImplementedError`` for what the ops cannot express;
    ``"sdpa"`` runs those calls with transformers' SDPA attention instead (logged once per reason).
    Registering a name again replaces it.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"squash_ops.hf.register: fallback must be one of {FALLBACKS}, got {fallback!r}")
    AttentionInterface.register(name, _make_attention(name, fallback))
    AttentionMaskInterface.register(name, _make_mask_builder(name, fallback))
    return name
