"""squash_ops: quantized GEMM, fused norms and flash attention for Hugging Face inference.

Importing the package loads the native library, which registers every op under
``torch.ops.squash``; the typed wrappers below are the documented entry points.
"""

import torch  # noqa: F401  (must be imported before the extension, which links against it)

__version__ = "0.1.0"  # before the imports below: checkpoints written by quant/ record it

from . import _C  # noqa: F401  (registers torch.ops.squash.*)
from . import cpu  # noqa: F401  (the CPU kernels' ISA path)
from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all
from .quant import (
    CalibrationStats, CheckpointError, ReplaceReport, export_compressed_tensors, import_compressed_tensors, W4A16Config, W8A8Config, W8A16Config, calibrate,
    import_awq, import_gptq, load_quantized, plan_replacement, PlannedLayer, ReplacementPlan, replace_linear,
    save_quantized,
)
# Not star-exported from ops: `prepack` / `unprepack` here are the model-level switches.
from .quant import PrepackReport, prepack, unprepack

# The model-level API, next to the ops: configs, replace_linear, its plan and its report, calibrate, save/load, GPTQ/AWQ import,
# compressed-tensors in and out.
_quant_api = [
    "W8A16Config", "W4A16Config", "W8A8Config", "replace_linear", "ReplaceReport", "plan_replacement", "ReplacementPlan",
    "PlannedLayer", "calibrate", "CalibrationStats",
    "save_quantized", "load_quantized", "CheckpointError", "import_gptq", "import_awq",
    "import_compressed_tensors", "export_compressed_tensors",
    "prepack", "unprepack", "PrepackReport",
]

__all__ = list(_ops_all) + _quant_api + ["cuda_available", "has_cuda_kernel"]


def has_cuda_kernel(op: str) -> bool:
    """True when ``torch.ops.squash.<op>`` has a CUDA implementation in this build."""
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"squash::{op}", "CUDA"))


def cuda_available() -> bool:
    """True when a GPU is visible and the extension was built with CUDA kernels (any op)."""
    if not torch.cuda.is_available():
        return False
    registered = torch._C._dispatch_get_registrations_for_dispatch_key("CUDA")
    return any(name.startswith("squash::") for name in registered)
