"""The CPU kernels' instruction-set path: which one runs, and forcing a lower one (tests, benches).

The native CPU kernels (csrc/kernels/cpu) have a portable scalar path and AVX2 (+FMA/F16C) and
AVX-512 paths, chosen once per process from what the CPU supports. ``SQUASH_CPU_ISA=scalar|avx2|
avx512`` in the environment, or ``use_isa`` here, forces a lower path.
"""

from __future__ import annotations

import contextlib
import os

from . import _C

__all__ = ["ISAS", "active_isa", "detected_isa", "runnable_isas", "use_isa", "set_isa"]

ISAS = ("scalar", "avx2", "avx512")


def active_isa() -> str:
    """The ISA path the CPU kernels take now."""
    return _C.cpu_isa()[0]


def detected_isa() -> str:
    """The best ISA path this CPU can run."""
    return _C.cpu_isa()[1]


def runnable_isas() -> list[str]:
    """The paths this CPU can run, lowest first (what tests force one by one)."""
    return list(ISAS[: ISAS.index(detected_isa()) + 1])


def set_isa(name: str | None) -> None:
    """Force the CPU kernels onto ``name`` (one of ``ISAS``); None: back to the detected path."""
    if name is None:
        _C.set_cpu_isa(-1)
        return
    if name not in ISAS:
        raise ValueError(f"squash_ops.cpu.set_isa: name must be one of {ISAS} or None, got {name!r}")
    if not _C.set_cpu_isa(ISAS.index(name)):
        raise ValueError(f"squash_ops.cpu.set_isa: this CPU cannot run {name!r} (it runs up to {detected_isa()!r})")


@contextlib.contextmanager
def use_isa(name: str):
    """``with use_isa("scalar"): ...`` runs the block on that path, then restores the previous one."""
    before = active_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(before)


_env = os.environ.get("SQUASH_CPU_ISA")
if _env and _env not in ISAS:
    raise ValueError(f"SQUASH_CPU_ISA must be one of {ISAS}, got {_env!r}")
