"""Helpers shared by the test files: error metrics and tolerances from TARGETS.md."""

import pytest
import torch

# Quantized GEMM vs dequantize-then-matmul in fp32: relative mean error bounds (TARGETS.md).
GEMM_REL_MEAN_ERR = {torch.float16: 1e-3, torch.bfloat16: 4e-3}


def rel_mean_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Marlin's metric: mean|out - ref| / mean|ref|, computed in float64."""
    out, ref = out.double(), ref.double()
    return ((out - ref).abs().mean() / ref.abs().mean().clamp_min(1e-30)).item()


def raises_value_error(match: str, fn, *args, **kwargs) -> None:
    """Bad-input tests: ``fn(*args, **kwargs)`` raises ValueError whose message matches ``match``."""
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
