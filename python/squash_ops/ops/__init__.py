"""Typed wrappers and fake (meta) kernels of ``torch.ops.squash``, one module per op family."""

from . import attention, formats, gemm, norm
from .attention import *  # noqa: F401,F403
from .formats import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403

__all__ = [*attention.__all__, *formats.__all__, *gemm.__all__, *norm.__all__]
