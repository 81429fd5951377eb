"""Shared test set-up: the `gpu` marker skips without CUDA; seeds are fixed per test."""

import pytest
import torch

import squash_ops


def pytest_collection_modifyitems(config, items):
    if squash_ops.cuda_available():
        return
    why = "needs a CUDA device and squash_ops built with CUDA kernels"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True)
def _seed(request):
    # Different but reproducible random inputs per test (never zeros; see TARGETS.md).
    torch.manual_seed(hash(request.node.nodeid) % (2**31))
