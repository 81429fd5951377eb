"""Helpers shared by the test files: error metrics and tolerances from TARGETS.md."""

import json
import shutil

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


# ---- checkpoint surgery for the corrupt-checkpoint tests (save/load test files) ----


def copy_checkpoint(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "ckpt")


def edit_checkpoint_json(directory, edit):
    """Rewrites squash_config.json after ``edit(header_dict)``."""
    path = directory / "squash_config.json"
    header = json.loads(path.read_text())
    edit(header)
    path.write_text(json.dumps(header))


def edit_checkpoint_tensors(directory, edit):
    """Rewrites squash_model.safetensors (metadata kept) after ``edit(tensors_dict)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = directory / "squash_model.safetensors"
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    edit(tensors)
    save_file(tensors, path, metadata=metadata)
