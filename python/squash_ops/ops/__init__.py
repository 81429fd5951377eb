"""Typed wrappers and fake (meta) kernels of ``torch.ops.squash``, one module per op family."""

# Aliased: the star imports below bring a function named `attention`, which would otherwise
# shadow the submodule of the same name before its __all__ is read.
from . import attention as _attention
from . import cpu_prepacked as _cpu_prepacked
from . import formats as _formats
from . import gemm as _gemm
from . import norm as _norm
from . import prepacked as _prepacked
from .attention import *  # noqa: F401,F403
from .cpu_prepacked import *  # noqa: F401,F403
from .formats import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .prepacked import *  # noqa: F401,F403

__all__ = [*_attention.__all__, *_cpu_prepacked.__all__, *_formats.__all__, *_gemm.__all__, *_norm.__all__, *_prepacked.__all__]
