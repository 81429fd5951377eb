"""Quantization schemes for ``replace_linear``: one small frozen dataclass per scheme.

The configs only describe *what* to do; the modules in ``linear.py`` hold the packed weights and
call the ops. ``SCHEMES`` maps each config's ``name`` (the string saved in checkpoints) back to
its class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Union

from .rotation import check_block


@dataclass(frozen=True)
class W8A16Config:
    """int8 weights, one float32 scale per output channel; activations stay fp16/bf16."""

    name = "w8a16"


@dataclass(frozen=True)
class W4A16Config:
    """int4 weights in groups of ``group_size`` input channels (32/64/128, or -1 = per channel).

    ``symmetric=False`` stores a zero point per group (asymmetric ranges, e.g. after ReLU).
    """

    group_size: int = 128
    symmetric: bool = True
    name = "w4a16"

    def __post_init__(self):
        # Types too: 128.0 == 128 and "yes" is truthy, and a checkpoint's JSON may hold either.
        if type(self.group_size) is not int or self.group_size not in (32, 64, 128, -1):
            raise ValueError(f"W4A16Config: group_size must be 32, 64, 128 or -1, got {self.group_size!r}")
        if type(self.symmetric) is not bool:
            raise ValueError(f"W4A16Config: symmetric must be True or False, got {self.symmetric!r}")


@dataclass(frozen=True)
class W8A8Config:
    """int8 weights (per channel) and int8 activations.

    ``activation="dynamic"``: one scale per token computed at run time (no calibration).
    ``activation="static"``: one per-tensor scale per layer, set by ``calibrate``; until then the
    layer refuses to run.
    ``rotation=b`` (a power of two dividing in_features; 0 = none): the input is rotated by a block
    Hadamard matrix before it is quantized, the weight once when it is packed (``rotation.py``):
    exact in float, one extra [.., K/b, b] @ [b, b] matmul per call.
    """

    activation: Literal["dynamic", "static"] = "dynamic"
    rotation: int = 0
    name = "w8a8"

    def __post_init__(self):
        if self.activation not in ("dynamic", "static"):
            raise ValueError(f"W8A8Config: activation must be 'dynamic' or 'static', got {self.activation!r}")
        if self.rotation != 0 or type(self.rotation) is not int:
            check_block(self.rotation, who="W8A8Config")

    def __repr__(self) -> str:  # as before rotation existed, when there is none
        rotation = f", rotation={self.rotation}" if self.rotation else ""
        return f"W8A8Config(activation={self.activation!r}{rotation})"


QuantConfig = Union[W8A16Config, W4A16Config, W8A8Config]
SCHEMES: dict[str, type] = {c.name: c for c in (W8A16Config, W4A16Config, W8A8Config)}


def config_to_dict(config: QuantConfig) -> dict:
    """A JSON-able description, inverse of ``config_from_dict``. ``rotation`` is written only when
    set, so unrotated W8A8 checkpoints stay readable by squash_ops versions before it."""
    d = {"scheme": config.name, **asdict(config)}
    if d.get("rotation") == 0:
        del d["rotation"]
    return d


def config_from_dict(d: dict) -> QuantConfig:
    if not isinstance(d, dict):
        raise TypeError(f"a quantization config must be a dict, got {type(d).__name__}")
    d = dict(d)
    scheme = d.pop("scheme", None)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; expected one of {sorted(SCHEMES)}")
    return SCHEMES[scheme](**d)
