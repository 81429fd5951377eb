"""squash_ops: quantized GEMM, fused norms and flash attention for Hugging Face inference.

Importing the package loads the native library, which registers every op under
``torch.ops.squash``; the typed wrappers below are the documented entry points.
"""

import torch  # noqa: F401  (must be imported before the extension, which links against it)

from . import _C  # noqa: F401  (registers torch.ops.squash.*)
from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all

__version__ = "0.1.0"
__all__ = list(_ops_all) + ["cuda_available"]


def cuda_available() -> bool:
    """True when the extension was built with its CUDA kernels and a GPU is visible."""
    has_kernels = torch._C._dispatch_has_kernel_for_dispatch_key("squash::w8a16_gemm", "CUDA")
    return bool(has_kernels) and torch.cuda.is_available()
