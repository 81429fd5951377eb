"""Gamma migration (Outlier Suppression) for HF models and the fused norm -> W8A8 path.

* ``migrate_gamma(model)``: fold each norm's gamma into the linears it feeds (float, exact to
  float32 rounding); LLaMA, OPT (pre-norm) and BERT/RoBERTa (post-norm, scaled residuals).
* ``quantize_w8a8(model, W8A8Config(...), calibration=batches)``: migration, ``replace_linear``
  and ``calibrate`` on the block linears, then ``fuse_norm_quant``: each norm emits the int8 input
  of the W8A8 linears it feeds (q/k/v, gate/up, fc1, intermediate) with the fused norm + quant op;
  ``smooth=True`` adds channel smoothing searched per site (``smoothing.py``),
  ``rotate_attn_out=b`` the attention-output input rotated, folded (``value_rotation.py``), and
  ``search=`` / ``qat=`` tune the static scales (``quant/ranges.py``, ``quant/qat.py``).
"""

from .families import (
    SUPPORTED_MODEL_TYPES, NormSite, SkippedNorm, UnsupportedModelError, ValueSite, block_linears, ffn_down_paths,
    norm_sites, value_sites,
)
from .norm import MigratedNorm, ResidualScaledOutput
from .transform import DEFAULT_MAX_SHIFT, MigrationReport, convert_norms, migrate_gamma, migration_factors
from .smoothing import ALPHAS, SmoothedSite, SmoothingPlan, fold_value_smoothing, search_smoothing, smoothing_factor
from .value_rotation import fold_value_rotation
from .w8a8 import W8A8Report, fuse_norm_quant, quantize_w8a8

__all__ = [
    "SUPPORTED_MODEL_TYPES", "NormSite", "SkippedNorm", "UnsupportedModelError", "ValueSite", "block_linears",
    "ffn_down_paths", "norm_sites", "value_sites",
    "ALPHAS", "SmoothedSite", "SmoothingPlan", "fold_value_smoothing", "search_smoothing", "smoothing_factor",
    "MigratedNorm", "ResidualScaledOutput",
    "DEFAULT_MAX_SHIFT", "MigrationReport", "convert_norms", "migrate_gamma", "migration_factors",
    "W8A8Report", "fuse_norm_quant", "quantize_w8a8", "fold_value_rotation",
]
