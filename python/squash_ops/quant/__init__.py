"""Model-level quantization: configs and the quantized replacements of ``nn.Linear``."""

from .config import QuantConfig, W4A16Config, W8A8Config, W8A16Config, config_from_dict, config_to_dict
from .linear import (
    QuantizedActivation, W4A16Linear, W8A8Linear, W8A16Linear, attach_quantized, attached_quantized,
    empty_quantized_linear, quantize_linear,
)
from .replace import PlannedLayer, ReplacementPlan, ReplaceReport, plan_replacement, replace_linear, scheme_label
from .calibrate import ActivationStats, CalibrationStats, calibrate
from .prepacking import PrepackReport, prepack, unprepack
from .serialization import CheckpointError, load_quantized, save_quantized
from .importers import awq_linear, gptq_linear, import_awq, import_gptq
from .compressed_tensors import export_compressed_tensors, import_compressed_tensors
from .qat import QATConfig, QATReport, qat_static_scales
from .ranges import search_mse, token_clipping, tune_static_scales

__all__ = [
    "QuantConfig", "W4A16Config", "W8A8Config", "W8A16Config", "config_from_dict", "config_to_dict",
    "QuantizedActivation", "W4A16Linear", "W8A8Linear", "W8A16Linear", "quantize_linear",
    "attach_quantized", "attached_quantized",
    "empty_quantized_linear",
    "ReplaceReport", "replace_linear", "scheme_label", "plan_replacement", "ReplacementPlan", "PlannedLayer",
    "ActivationStats", "CalibrationStats", "calibrate",
    "CheckpointError", "load_quantized", "save_quantized",
    "PrepackReport", "prepack", "unprepack",
    "awq_linear", "gptq_linear", "import_awq", "import_gptq",
    "export_compressed_tensors", "import_compressed_tensors",
    "QATConfig", "QATReport", "qat_static_scales", "search_mse", "token_clipping", "tune_static_scales",
]
