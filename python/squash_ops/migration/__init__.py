"""Gamma migration (Outlier Suppression) for HF models and the fused norm -> W8A8 path.

* ``migrate_gamma(model)``: fold each norm's gamma into the linears it feeds (float, exact to
  float32 rounding); LLaMA, OPT (pre-norm) and BERT/RoBERTa (post-norm, scaled residuals).
* ``quantize_w8a8(model, W8A8Config(...), calibration=batches)``: migration, then int8 weights
  and activations in every block linear, norms emitting the int8 input of q/k/v (and gate/up,
  fc1, intermediate) through the fused norm + quant ops.
"""

from .families import SUPPORTED_MODEL_TYPES, NormSite, SkippedNorm, UnsupportedModelError, block_linears, norm_sites
from .norm import MigratedNorm, ResidualScaledOutput, attached_activation
from .transform import (
    DEFAULT_MAX_SHIFT, MigrationReport, convert_norms, migrate_gamma, migration_factors,
)
from .w8a8 import NormFedW8A8Linear, W8A8Report, calibrate_input_absmax, quantize_w8a8

__all__ = [
    "SUPPORTED_MODEL_TYPES", "NormSite", "SkippedNorm", "UnsupportedModelError", "block_linears", "norm_sites",
    "MigratedNorm", "ResidualScaledOutput", "attached_activation",
    "DEFAULT_MAX_SHIFT", "MigrationReport", "convert_norms", "migrate_gamma",
    "migration_factors",
    "NormFedW8A8Linear", "W8A8Report", "calibrate_input_absmax", "quantize_w8a8",
]
