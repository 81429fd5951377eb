"""Quantized drop-in replacements for ``nn.Linear``.

Each module holds its weight in the canonical checkpoint format (docs/FORMATS.md), packed once in
``from_linear``, and calls one ``torch.ops.squash`` GEMM per forward, so the same module runs on
the CPU reference and on the CUDA kernels and goes through ``torch.compile`` without breaks.
Weight quantization itself runs on the CPU (the format ops are load-time work).

The weight-only modules (W8A16, W4A16) can switch their weight to a prepacked layout
(``prepack()`` / ``unprepack()``, docs/FORMATS.md "Prepack"): the one of the small-M tensor-core
kernel on CUDA, the one of the AVX2 / scalar kernels on the CPU. The canonical buffers are
replaced, not duplicated, and ``state_dict()`` / ``load_state_dict`` / ``save_quantized`` keep
speaking the canonical checkpoint format (hooks below), so the layout is an in-memory detail of
this process; ``.to(device)`` re-packs for the new device.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .. import ops
from .config import QuantConfig, W4A16Config, W8A8Config, W8A16Config
from .rotation import check_block, hadamard, rotate_blocks

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class QuantizedActivation(NamedTuple):
    """An int8 activation already quantized upstream (e.g. by a fused norm + quant op).

    ``W8A8Linear`` consumes it without re-quantizing. ``scales`` is float32 per token
    (``q.shape[:-1]``) or one element; ``dtype`` is the float dtype the activation stands for,
    which is also the dtype of the linear's output.
    """

    q: torch.Tensor
    scales: torch.Tensor
    dtype: torch.dtype


_ATTACHED = "_squash_int8_activation"


def attach_quantized(x: torch.Tensor, quantized: QuantizedActivation) -> torch.Tensor:
    """Attach ``x``'s int8 form (made upstream, e.g. by a fused norm + quant op) to ``x`` itself.

    Every ``W8A8Linear`` that reads this tensor object (q, k and v all read one norm output) uses
    it instead of quantizing ``x`` again; anything else sees a plain float tensor. Returns ``x``.
    """
    setattr(x, _ATTACHED, quantized)
    return x


def attached_quantized(x: torch.Tensor) -> QuantizedActivation | None:
    """The ``QuantizedActivation`` attached to ``x`` by ``attach_quantized``, if any."""
    return getattr(x, _ATTACHED, None)


def _compute_dtype(weight: torch.Tensor, requested: torch.dtype | None) -> torch.dtype:
    """Activation dtype of the weight-only GEMMs: fp16/bf16 (the ops' contract); an fp32 model
    runs its quantized layers in bf16 (same exponent range as fp32, so no overflow)."""
    if requested is not None:
        if requested not in _HALF_DTYPES:
            raise ValueError(f"compute_dtype must be float16 or bfloat16, got {requested}")
        return requested
    return weight.dtype if weight.dtype in _HALF_DTYPES else torch.bfloat16


def _pack_int8(m: "_QuantLinear", linear: nn.Linear, weight: torch.Tensor | None = None) -> "_QuantLinear":
    """Fills an int8-weight module (W8A16 / W8A8) from ``linear`` (its weight, or ``weight`` when
    given: a transformed copy) and moves it to the device of ``linear``'s weight."""
    w = linear.weight.detach()
    q, s = ops.quantize_int8_weight((w if weight is None else weight).to("cpu", torch.float32))
    m.qweight.copy_(q)
    m.scales.copy_(s)
    if linear.bias is not None:
        m.bias.copy_(linear.bias.detach())
    return m.to(w.device)


class _QuantLinear(nn.Module):
    """Shared bookkeeping: sizes, the scheme's config and the repr."""

    config: QuantConfig

    def __init__(self, in_features: int, out_features: int, config: QuantConfig):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.config = config

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, config={self.config}"

    def optional_buffers(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Buffers only some instances hold (None otherwise): name -> (shape, dtype). Loading a
        checkpoint that has one creates it first (see serialization.py)."""
        return {}

    def validate(self) -> None:
        """Raise ValueError when a buffer holds values the format forbids (after loading one)."""
        for name, t in self.named_buffers(recurse=False):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} holds inf or NaN")

    # ---- prepacked layout (weight-only schemes; see _PrepackableLinear) ----
    prepacked: bool = False

    def prepack_blocker(self, layout: str | None = None) -> str | None:
        """Why this layer cannot use the prepacked ``layout`` (None: it can)."""
        return f"{type(self).__name__} has no prepacked kernel"

    def canonical_buffers(self) -> dict[str, torch.Tensor | None]:
        """The buffers in the canonical checkpoint format (unprepacked copies when prepacked)."""
        return dict(self._buffers)

    def _check_input(self, x: torch.Tensor) -> None:
        weight = next(t for t in self._buffers.values() if t is not None)
        if weight.is_meta and not x.is_meta:
            # e.g. empty_quantized_linear(..., device="meta") never filled: nothing to compute with.
            raise RuntimeError(
                f"{type(self).__name__}: the layer's weights are on the meta device (never loaded); load them "
                "first (squash_ops.load_quantized, load_state_dict(..., assign=True)) or build it on a real device"
            )
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: input must be [..., {self.in_features}], got shape {list(x.shape)}"
            )


# Prepacked layouts: "cuda" (docs/FORMATS.md "The small-M tensor-core layout", prepack_int*_weight)
# and "cpu" ("CPU prepacked layout", cpu_prepack_int*_weight).
LAYOUTS = ("cpu", "cuda")


def _layout_for(device: torch.device) -> str:
    """The prepacked layout whose kernel runs on ``device`` (meta follows the CPU)."""
    return "cuda" if device.type == "cuda" else "cpu"


def _has_kernel(op: str, key: str) -> bool:
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"squash::{op}", key))


class _PrepackableLinear(_QuantLinear):
    """A weight-only module whose canonical weight buffers (``_CANONICAL``) can be swapped for
    the prepacked ones (``_PACKED``) in place.

    ``prepack()``: canonical -> prepacked (the canonical buffers are freed: no doubled weight
    memory beyond one layer during the conversion); forward then calls the prepacked GEMM of the
    layout: on CUDA the small-M tensor-core kernel (the canonical op has none), on the CPU the
    AVX2 / scalar kernels that dequantize in registers (the canonical CPU op dequantizes the whole
    weight per call). ``prepack(layout="cuda")`` on the CPU holds the CUDA layout, whose CPU op is
    unprepack + the canonical reference (bit-exact with the canonical module, only slower).
    ``unprepack()``: back, bit-exact. ``.to(device)`` of a prepacked module re-packs when the
    device needs the other layout (canonical if the new layout cannot hold the shape).

    Checkpoints never see the prepacked layout: ``state_dict()`` of a prepacked module holds the
    canonical ``qweight`` / ``scales`` / ``zeros`` (unprepacked on the fly, so it allocates one
    canonical copy per layer while the dict is alive), and ``load_state_dict`` takes canonical
    tensors and prepacks them when the module is prepacked. ``save_quantized`` writes the same
    bytes as for the canonical module.
    """

    _CANONICAL: tuple[str, ...] = ()
    _PACKED: tuple[str, ...] = ()
    _PREPACKED_OPS: dict[str, str] = {}  # layout -> the prepacked GEMM op

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepacked = False
        self.prepack_layout: str | None = None  # one of LAYOUTS while prepacked
        self._register_state_dict_hook(_canonical_state_dict_hook)
        self.register_load_state_dict_pre_hook(_prepack_incoming_hook)

    def prepack_blocker(self, layout: str | None = None) -> str | None:
        """Why this layer cannot take ``layout`` (default: the one of its device); None: it can."""
        if (layout or _layout_for(self.weight_device())) == "cpu":
            return None  # the CPU layout pads N to whole panels and takes any K
        n, k = self.out_features, self.in_features
        if n % 8 or k % 8:
            return (f"the prepacked layout needs out_features (N) and in_features (K) to be multiples of 8, "
                    f"got N={n}, K={k}")
        return None

    def prepack_pays(self) -> bool:
        """True where the prepacked layout is the faster one: the weight is on CUDA and this build
        has the prepacked CUDA kernel, or on the CPU and this build has the CPU prepacked kernel
        (it dequantizes in registers; the canonical CPU op dequantizes the whole weight per call)."""
        device = self.weight_device()
        layout = _layout_for(device)
        return device.type in ("cpu", "cuda") and _has_kernel(self._PREPACKED_OPS[layout], layout.upper())

    def weight_device(self) -> torch.device:
        return getattr(self, (self._PACKED if self.prepacked else self._CANONICAL)[0]).device

    def _pack(self, canonical: tuple) -> tuple:
        raise NotImplementedError

    def _unpack(self, packed: tuple) -> tuple:
        raise NotImplementedError

    def prepack(self, layout: str | None = None) -> "_PrepackableLinear":
        """Convert the weight to a prepacked layout in place: ``layout`` "cpu" or "cuda", default
        the one of the weight's device (no-op when already prepacked). Raises ValueError when the
        shape does not fit the layout. Returns ``self``."""
        if self.prepacked:
            return self
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"{type(self).__name__}.prepack: layout must be one of {LAYOUTS} or None, got {layout!r}")
        layout = layout or _layout_for(self.weight_device())
        why = self.prepack_blocker(layout)
        if why is not None:
            raise ValueError(f"{type(self).__name__}.prepack: {why}")
        self.prepack_layout = layout
        self._swap_weights(self._CANONICAL, self._PACKED, self._pack)
        self.prepacked = True
        return self

    def unprepack(self) -> "_PrepackableLinear":
        """Back to the canonical layout in place, bit-exact (no-op when canonical). Returns ``self``."""
        if not self.prepacked:
            return self
        self._swap_weights(self._PACKED, self._CANONICAL, self._unpack)
        self.prepacked = False
        self.prepack_layout = None
        return self

    def _apply(self, fn, recurse=True):
        # .to(device) / .cuda() / .cpu(): the CPU layout has no CUDA kernel (and the CUDA layout's
        # CPU op is the slow reference), so a prepacked module that changes device type is
        # unpacked first and re-packed there in that device's layout (canonical when the layout
        # cannot hold the shape). `fn` is probed on an empty uint8 tensor: conversions only
        # change the dtype of floating tensors, so this sees where the buffers would go.
        if self.prepacked:
            source = self.weight_device()
            target = fn(torch.empty(0, dtype=torch.uint8, device=source)).device
            if target.type != source.type:
                self.unprepack()
                super()._apply(fn, recurse)
                if self.prepack_blocker() is None:
                    self.prepack()
                return self
        return super()._apply(fn, recurse)

    def _swap_weights(self, old: tuple[str, ...], new: tuple[str, ...], convert) -> None:
        # The weights first, then the other buffers (bias, input_perm) as they were: the buffer
        # order of a freshly built module, so state_dict keys come out in the same order.
        tensors = convert(tuple(self._buffers[n] for n in old))
        rest = {n: t for n, t in self._buffers.items() if n not in old}
        self._buffers.clear()
        self._buffers.update(zip(new, tensors))
        self._buffers.update(rest)

    def canonical_buffers(self) -> dict[str, torch.Tensor | None]:
        weights = dict(zip(self._CANONICAL, self._weights()))
        return {**weights, **{n: t for n, t in self._buffers.items() if n not in self._PACKED + self._CANONICAL}}

    def _weights(self) -> tuple:
        """The canonical weight tensors (unprepacked copies when prepacked)."""
        names = self._PACKED if self.prepacked else self._CANONICAL
        ts = tuple(getattr(self, n) for n in names)
        return self._unpack(ts) if self.prepacked else ts

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", prepacked ({self.prepack_layout})" if self.prepacked else "")


def apply_prepack_choice(module: _QuantLinear, prepack: bool | None) -> None:
    """The ``prepack`` argument of replace_linear / load_quantized / the importers, for one layer:
    True: prepack (the layout of the weight's device) if the layout fits; None: only where it is
    faster (CUDA or the CPU with the prepacked kernel built); False: never. Layers the layout
    cannot hold stay canonical (and keep working)."""
    if isinstance(module, _PrepackableLinear) and module.prepack_blocker() is None and (
            prepack or (prepack is None and module.prepack_pays())):
        module.prepack()


def _canonical_state_dict_hook(module: _PrepackableLinear, state_dict, prefix, local_metadata):
    if not module.prepacked:
        return state_dict
    # The module has no children, so its entries are the dict's last ones: re-adding them in the
    # canonical module's order gives the same key order as a canonical model.
    own = {n: state_dict.pop(prefix + n) for n in list(module._buffers) if prefix + n in state_dict}
    for name, t in zip(module._CANONICAL, module._weights()):
        if t is not None:
            state_dict[prefix + name] = t
    for name, t in own.items():
        if name not in module._PACKED:
            state_dict[prefix + name] = t
    return state_dict


def _prepack_incoming_hook(module: _PrepackableLinear, state_dict, prefix, *args):
    # Checkpoints hold the canonical tensors; a prepacked module converts them on the way in
    # (a canonical module takes them as they are).
    if not module.prepacked or not all(prefix + n in state_dict for n in module._CANONICAL if n != "zeros"):
        return
    canonical = tuple(state_dict.pop(prefix + n, None) for n in module._CANONICAL)
    for name, t in zip(module._PACKED, module._pack(canonical)):
        if t is not None:
            state_dict[prefix + name] = t


class W8A16Linear(_PrepackableLinear):
    """y = x @ (q * s).T + bias with int8 ``qweight`` [N, K] and float32 ``scales`` [N].

    Prepacked (``prepack()``): buffers ``packed`` and ``packed_scales`` instead of ``qweight`` /
    ``scales``: CUDA layout uint8 [N/8, ceil(K/64), 512] and float32 [N]; CPU layout int8
    [ceil(N/16), K, 16] and float32 [ceil(N/16), 16].
    """

    _CANONICAL = ("qweight", "scales")
    _PACKED = ("packed", "packed_scales")
    _PREPACKED_OPS = {"cuda": "w8a16_gemm_prepacked", "cpu": "w8a16_gemm_cpu_prepacked"}

    def __init__(self, in_features, out_features, bias=True, compute_dtype=torch.bfloat16, device=None):
        super().__init__(in_features, out_features, W8A16Config())
        self.compute_dtype = _compute_dtype(torch.empty(0, dtype=compute_dtype), compute_dtype)
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.zeros(out_features, dtype=torch.float32, device=device))
        self.register_buffer(
            "bias", torch.zeros(out_features, dtype=self.compute_dtype, device=device) if bias else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: W8A16Config | None = None, compute_dtype=None):
        m = cls(linear.in_features, linear.out_features, linear.bias is not None,
                _compute_dtype(linear.weight, compute_dtype))
        return _pack_int8(m, linear)

    def _pack(self, canonical):
        if self.prepack_layout == "cpu":
            return ops.cpu_prepack_int8_weight(*canonical)
        return ops.prepack_int8_weight(*canonical)

    def _unpack(self, packed):
        if self.prepack_layout == "cpu":
            return ops.cpu_unprepack_int8_weight(*packed, n=self.out_features)
        return ops.unprepack_int8_weight(*packed, k=self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        q, s = self._weights()
        return ops.dequantize_int8_weight(q.cpu(), s.cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.prepacked and self.prepack_layout == "cpu":
            y = ops.w8a16_gemm_cpu_prepacked(x.to(self.compute_dtype), self.packed, self.packed_scales,
                                             n=self.out_features, bias=self.bias)
        elif self.prepacked:
            y = ops.w8a16_gemm_prepacked(x.to(self.compute_dtype), self.packed, self.packed_scales, self.in_features,
                                         bias=self.bias)
        else:
            y = ops.w8a16_gemm(x.to(self.compute_dtype), self.qweight, self.scales, bias=self.bias)
        return y.to(x.dtype)


class W4A16Linear(_PrepackableLinear):
    """y = x @ ((q - z) * s).T + bias with int4 ``qweight`` [N, K/2] (two values per byte),
    float32 ``scales`` [N, K/g] and uint8 ``zeros`` [N, K/g] (None when symmetric: zero 8).

    Optional ``input_perm`` (int32 [K], a permutation): the packed columns are the input channels
    in that order, i.e. y = x[..., input_perm] @ W'.T. GPTQ act-order checkpoints group input
    channels in a permuted order; permuting the activation keeps them exact instead of
    requantizing into contiguous groups (Marlin and ExLlama do the same gather).

    Prepacked (``prepack()``): buffers ``packed``, ``packed_scales``, ``packed_zeros`` (None when
    symmetric) instead of ``qweight`` / ``scales`` / ``zeros``: CUDA layout uint8
    [N/8, ceil(K/128), 512], float32 [N/8, K/g, 8], uint8 [N/8, K/g, 8]; CPU layout uint8
    [ceil(N/16), K, 8], float32 [ceil(N/16), K/g, 16], uint8 [ceil(N/16), K/g, 16].
    ``input_perm`` is still applied to x before the GEMM.
    """

    _CANONICAL = ("qweight", "scales", "zeros")
    _PACKED = ("packed", "packed_scales", "packed_zeros")
    _PREPACKED_OPS = {"cuda": "w4a16_gemm_prepacked", "cpu": "w4a16_gemm_cpu_prepacked"}

    def __init__(
        self, in_features, out_features, bias=True, config: W4A16Config = W4A16Config(),
        compute_dtype=torch.bfloat16, device=None,
    ):
        super().__init__(in_features, out_features, config)
        group = in_features if config.group_size == -1 else config.group_size
        if in_features % 2 or in_features % group:
            raise ValueError(
                f"W4A16Linear: in_features must be even and a multiple of group_size {config.group_size}, "
                f"got {in_features}"
            )
        self.compute_dtype = _compute_dtype(torch.empty(0, dtype=compute_dtype), compute_dtype)
        n_groups = in_features // group
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.zeros(out_features, n_groups, dtype=torch.float32, device=device))
        self.register_buffer(
            "zeros",
            None if config.symmetric else torch.zeros(out_features, n_groups, dtype=torch.uint8, device=device),
        )
        self.register_buffer(
            "bias", torch.zeros(out_features, dtype=self.compute_dtype, device=device) if bias else None
        )
        self.register_buffer("input_perm", None)

    def optional_buffers(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {"input_perm": ((self.in_features,), torch.int32)}

    def set_input_permutation(self, perm: torch.Tensor | None) -> None:
        """Use packed column i for input channel ``perm[i]`` (None: identity)."""
        if perm is not None:
            perm = torch.as_tensor(perm)
            if perm.shape != (self.in_features,) or not torch.equal(
                    torch.sort(perm.cpu().long()).values, torch.arange(self.in_features)):
                raise ValueError(f"W4A16Linear: input_perm must be a permutation of 0..{self.in_features - 1}")
            perm = perm.to(torch.int32, copy=False).to(self.weight_device())
        self.input_perm = perm

    def validate(self) -> None:
        super().validate()
        zeros = self.packed_zeros if self.prepacked else self.zeros
        if zeros is not None and int(zeros.max()) > 15:
            raise ValueError("zeros must be 0..15")
        if self.input_perm is not None:
            self.set_input_permutation(self.input_perm)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: W4A16Config = W4A16Config(), compute_dtype=None):
        w = linear.weight.detach()
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, config,
                _compute_dtype(w, compute_dtype))
        q, s, z = ops.quantize_int4_weight(w.to("cpu", torch.float32), config.group_size, config.symmetric)
        m.qweight.copy_(q)
        m.scales.copy_(s)
        if m.zeros is not None:
            m.zeros.copy_(z)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach())
        return m.to(w.device)

    def _pack(self, canonical):
        if self.prepack_layout == "cpu":
            return ops.cpu_prepack_int4_weight(*canonical, group_size=self.config.group_size)
        return ops.prepack_int4_weight(*canonical, group_size=self.config.group_size)

    def _unpack(self, packed):
        if self.prepack_layout == "cpu":
            return ops.cpu_unprepack_int4_weight(*packed, n=self.out_features, k=self.in_features,
                                                 group_size=self.config.group_size)
        return ops.unprepack_int4_weight(*packed, k=self.in_features, group_size=self.config.group_size)

    def dequantized_weight(self) -> torch.Tensor:
        """float32 [N, K] in the model's input-channel order (``input_perm`` undone)."""
        q, s, z = self._weights()
        w = ops.dequantize_int4_weight(q.cpu(), s.cpu(), None if z is None else z.cpu(), self.config.group_size)
        if self.input_perm is None:
            return w
        out = torch.empty_like(w)
        out[:, self.input_perm.cpu().long()] = w
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.input_perm is not None:
            x = x.index_select(-1, self.input_perm)
        if self.prepacked and self.prepack_layout == "cpu":
            y = ops.w4a16_gemm_cpu_prepacked(x.to(self.compute_dtype), self.packed, self.packed_scales,
                                             self.packed_zeros, n=self.out_features,
                                             group_size=self.config.group_size, bias=self.bias)
        elif self.prepacked:
            y = ops.w4a16_gemm_prepacked(x.to(self.compute_dtype), self.packed, self.packed_scales,
                                         self.packed_zeros, self.in_features, group_size=self.config.group_size,
                                         bias=self.bias)
        else:
            y = ops.w4a16_gemm(x.to(self.compute_dtype), self.qweight, self.scales, zeros=self.zeros,
                               group_size=self.config.group_size, bias=self.bias)
        return y.to(x.dtype)


class W8A8Linear(_QuantLinear):
    """int8 x int8 with int32 accumulation: y = (x_q @ q.T) * x_scale[token] * w_scale[n] + bias.

    Input: a float tensor (quantized here: per token when dynamic, with the calibrated per-tensor
    ``input_scale`` when static, unless an int8 form is attached to it: ``attach_quantized``) or a
    ``QuantizedActivation`` from a fused norm + quant op.
    Output dtype: the input's float dtype.

    Input transform (both optional, both exact in float, both extra work at run time before the
    quantization, in float32): ``input_mul`` [K] multiplies the input per channel (the inverse of a
    smoothing factor ``s`` whose product ``W * s`` the weight holds: ``from_linear(..., smoothing=s)``);
    ``config.rotation = b`` rotates it by a block Hadamard matrix ``input_rotation`` [b, b] (the
    weight holds ``W @ R``). A layer with an input transform quantizes its float input itself: an
    attached int8 form (made for the untransformed input) is ignored and a ``QuantizedActivation``
    is refused. The transform is a separate torch op for now; folding ``input_mul`` into the
    quantize op's scale pass is a later step.
    """

    def __init__(self, in_features, out_features, bias=True, config: W8A8Config = W8A8Config(), device=None):
        super().__init__(in_features, out_features, config)
        if config.rotation:
            check_block(config.rotation, in_features, "W8A8Linear")
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.zeros(out_features, dtype=torch.float32, device=device))
        # float32 bias: the op adds it in fp32 before the one rounding to the output dtype.
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None)
        # Static mode only; set by calibrate() / set_input_scale, saved with the model.
        self.register_buffer("input_scale", None)
        self.register_buffer("input_mul", None)
        self.register_buffer(
            "input_rotation", hadamard(config.rotation).to(device) if config.rotation else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: W8A8Config = W8A8Config(),
                    smoothing: torch.Tensor | None = None):
        """Packs ``linear``; ``smoothing`` ([in_features], finite, nonzero): the weight's input
        columns are multiplied by it and the input by its inverse at run time (``input_mul``)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, config)
        w = linear.weight.detach().to("cpu", torch.float64)
        if smoothing is not None:
            smoothing = torch.as_tensor(smoothing).detach().to("cpu", torch.float64).reshape(-1)
            m._check_mul(smoothing, "smoothing")
            w = w * smoothing
        if config.rotation:
            w = rotate_blocks(w, hadamard(config.rotation, torch.float64))
        m = _pack_int8(m, linear, w if smoothing is not None or config.rotation else None)
        if smoothing is not None:
            m.input_mul = (1 / smoothing).to(torch.float32).to(m.qweight.device)
        return m

    def optional_buffers(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {"input_scale": ((1,), torch.float32), "input_mul": ((self.in_features,), torch.float32)}

    def _check_mul(self, t: torch.Tensor, what: str) -> None:
        # Any sign is exact; smoothing factors are positive, a gamma migration's may be negative.
        if tuple(t.shape) != (self.in_features,) or not bool((torch.isfinite(t) & (t != 0)).all()):
            raise ValueError(f"W8A8Linear: {what} must be [{self.in_features}], finite and nonzero")

    def validate(self) -> None:
        super().validate()
        if self.input_scale is not None:
            self.set_input_scale(self.input_scale)
        if self.input_mul is not None:
            self._check_mul(self.input_mul, "input_mul")
        if self.config.rotation and not torch.equal(self.input_rotation.cpu(), hadamard(self.config.rotation)):
            raise ValueError(f"input_rotation is not the normalised Hadamard matrix of size {self.config.rotation}")

    @property
    def transforms_input(self) -> bool:
        return self.input_mul is not None or self.input_rotation is not None

    def set_input_scale(self, scale: float | torch.Tensor) -> None:
        """Per-tensor activation scale (absmax / 127 of the calibrated range) for static mode."""
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(1)
        if not bool(torch.isfinite(scale).all()) or float(scale) <= 0:
            raise ValueError(f"W8A8Linear: input scale must be a finite positive number, got {float(scale)}")
        self.input_scale = scale.to(self.qweight.device)

    def dequantized_weight(self) -> torch.Tensor:
        """float32 [N, K] acting on the untransformed input (rotation and smoothing undone, in
        float64): ``x @ dequantized_weight().T`` is what the layer computes, up to the activation
        quantization."""
        w = ops.dequantize_int8_weight(self.qweight.cpu(), self.scales.cpu())
        if not self.transforms_input:
            return w
        w = w.double()
        if self.input_rotation is not None:
            w = rotate_blocks(w, self.input_rotation.cpu().double())  # R is its own inverse
        if self.input_mul is not None:
            w = w * self.input_mul.cpu().double()
        return w.float()

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input the int8 GEMM sees: ``x * input_mul`` then rotated, in float32 (``x`` itself
        when the layer has no input transform)."""
        if not self.transforms_input:
            return x
        x = x.float()
        if self.input_mul is not None:
            x = x * self.input_mul
        if self.input_rotation is not None:
            x = rotate_blocks(x, self.input_rotation)
        return x

    def quantize_input(self, x: torch.Tensor) -> QuantizedActivation:
        self._check_input(x)
        scale = None
        if self.config.activation == "static":
            if self.input_scale is None:
                raise RuntimeError(
                    "W8A8Linear: static activation scale not set; run squash_ops.calibrate(model, batches) "
                    "or set_input_scale() first"
                )
            scale = self.input_scale
        if self.transforms_input:
            # One op for the transform and the quantization (one pass per row on the CPU). The
            # block size comes from the rotation the layer holds, not from config.rotation (a
            # rotation folded into the weights leaves the config's number and no buffer).
            block = 0 if self.input_rotation is None else self.input_rotation.shape[0]
            q, s = ops.quantize_activation_int8_transformed(x, self.input_mul, block, scale)
        else:
            q, s = ops.quantize_activation_int8(x, scale)
        return QuantizedActivation(q, s, x.dtype)

    def forward(self, x: torch.Tensor | QuantizedActivation) -> torch.Tensor:
        if not isinstance(x, QuantizedActivation):
            pre = None if self.transforms_input else attached_quantized(x)
            x = self.quantize_input(x) if pre is None else pre
        elif self.transforms_input:
            raise ValueError("W8A8Linear: a layer with an input transform (input_mul / rotation) needs its float "
                             "input, not a QuantizedActivation")
        else:
            self._check_input(x.q)
        return ops.w8a8_gemm(x.q, x.scales, self.qweight, self.scales, bias=self.bias, out_dtype=x.dtype)


MODULES: dict[str, type[_QuantLinear]] = {"w8a16": W8A16Linear, "w4a16": W4A16Linear, "w8a8": W8A8Linear}


def empty_quantized_linear(
    config: QuantConfig, in_features: int, out_features: int, bias: bool = True,
    compute_dtype: torch.dtype | None = None, device=None,
) -> _QuantLinear:
    """An unfilled module of ``config``'s scheme (zeros; nothing allocated on ``device="meta"``),
    e.g. to receive a checkpoint. ``compute_dtype`` applies to the weight-only schemes (default
    bfloat16)."""
    cd = compute_dtype or torch.bfloat16
    if isinstance(config, W8A16Config):
        return W8A16Linear(in_features, out_features, bias, cd, device)
    if isinstance(config, W4A16Config):
        return W4A16Linear(in_features, out_features, bias, config, cd, device)
    return W8A8Linear(in_features, out_features, bias, config, device)


def quantize_linear(linear: nn.Linear, config: QuantConfig, compute_dtype: torch.dtype | None = None) -> _QuantLinear:
    """The quantized module for ``config``, packed from ``linear``'s weight (``linear`` unchanged).

    ``compute_dtype`` (float16/bfloat16) is the activation dtype of the weight-only schemes; by
    default the weight's dtype when half, else bfloat16. W8A8 ignores it (its output follows the input).
    """
    if config.name == "w8a8":
        return W8A8Linear.from_linear(linear, config)
    return MODULES[config.name].from_linear(linear, config, compute_dtype=compute_dtype)
