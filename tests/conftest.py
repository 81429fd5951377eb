"""Shared test set-up: the `gpu` marker skips without CUDA, the `slow` one without SQUASH_SLOW=1; seeds are fixed per test; the
`one_thread` fixture for modules of small CPU ops."""

import os
import zlib

import pytest
import torch

import squash_ops


def pytest_collection_modifyitems(config, items):
    slow = bool(os.environ.get("SQUASH_SLOW"))
    for item in items:
        if "slow" in item.keywords and not slow:
            item.add_marker(pytest.mark.skip(reason="over a minute on the CPU machine: set SQUASH_SLOW=1"))
    if squash_ops.cuda_available():
        return
    why = "needs a CUDA device and squash_ops built with CUDA kernels"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True)
def _seed(request):
    # Different but reproducible random inputs per test (never zeros; see TARGETS.md). crc32, not
    # hash(): str hashes are salted per process (PYTHONHASHSEED), so a failure seen in one run or
    # one xdist worker would get other inputs when re-run.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module whose CPU ops are small: on the shared 2-core machines
    OpenMP's second thread only waits for a busy core at every op (measured: 25-100x slower,
    e.g. test_sensitivity 94 s with 2 threads, 9 s with 1). Restored for the other modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=squash_ops.cpu.runnable_isas())
def each_cpu_isa(request):
    """Runs a test once per ISA path of the CPU kernels that this machine can run (forced through
    squash_ops.cpu.use_isa), so the scalar reference path and each vector path meet its asserts."""
    with squash_ops.cpu.use_isa(request.param):
        yield request.param
