"""pytest plugin of bench/gpu_check.sh (`-p bench.pytest_gpu_check`):

- GPU_CHECK_STRICT=1: a skipped test marked `gpu` fails the run. The one skip that is allowed is
  a case declared not to apply to this GPU's compute capability (e.g. a CUTLASS 2.x config that
  takes only int8): its reason says "does not run ... on compute capability". "no CUDA kernel in
  this build", a missing package or a missing device are failures: the test proved nothing.
  Without GPU_CHECK_STRICT (the dry run) the same list is printed as what would fail.
- GPU_CHECK_CURRENT=<file>: the node id of the running test is written there before it starts,
  so a process that dies in native code (SIGSEGV) can be re-run on exactly that test.
- GPU_CHECK_MAPS=<file>: after collection (squash_ops, torch and their libraries are loaded),
  the shared libraries of interest this process has mapped (libstdc++, libgomp/libiomp, c10,
  torch, squash_ops' _C) are written there from /proc/self/maps: which copies were loaded side by
  side is the first question about a crash in an OpenMP or C++ runtime.
"""

from __future__ import annotations

import os
import re

import pytest

ARCH_NOT_APPLICABLE = re.compile(r"does not run .* on compute capability")
MAPS_OF_INTEREST = re.compile(r"libstdc\+\+|libgomp|libiomp|libomp|libc10|libtorch|squash_ops|/_C\.")

_bad_skips: list[str] = []
_arch_skips: list[str] = []


def loaded_libraries() -> list[str]:
    paths = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and MAPS_OF_INTEREST.search(parts[5]) and parts[5].strip() not in paths:
                paths.append(parts[5].strip())
    return paths


def pytest_collection_finish(session):
    path = os.environ.get("GPU_CHECK_MAPS")
    if path:
        with open(path, "w") as f:
            f.write(f"pid {os.getpid()}: libraries mapped after collection\n")
            f.writelines(p + "\n" for p in loaded_libraries())


def pytest_runtest_logstart(nodeid, location):
    path = os.environ.get("GPU_CHECK_CURRENT")
    if path:
        with open(path, "w") as f:
            f.write(nodeid + "\n")


def pytest_runtest_logreport(report):
    if not report.skipped or "gpu" not in report.keywords:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    entry = f"{report.nodeid}: {reason}"
    (_arch_skips if ARCH_NOT_APPLICABLE.search(reason) else _bad_skips).append(entry)


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    strict = os.environ.get("GPU_CHECK_STRICT") == "1"
    if _arch_skips:
        tr.write_line(f"gpu_check: {len(_arch_skips)} GPU test case(s) not applicable to this compute capability:")
        for e in _arch_skips:
            tr.write_line(f"  n/a  {e}")
    if _bad_skips:
        word = "FAIL" if strict else "would fail (not strict: dry run)"
        tr.write_line(f"gpu_check: {word}: {len(_bad_skips)} GPU test(s) skipped:")
        for e in _bad_skips:
            tr.write_line(f"  SKIP {e}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _bad_skips and os.environ.get("GPU_CHECK_STRICT") == "1" and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
