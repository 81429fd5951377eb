"""The verdicts of bench/gpu_check.sh fail when a stage proved nothing (issue 11: no vacuous
passes): canned sanitizer, bench/cpp and pytest outputs, the results merge, and the pytest plugin
that fails skipped GPU tests (run in a child pytest)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_verdict import cuda_ops_expected, merge, verdict_cpp, verdict_pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEMCHECK_OK = "========= ERROR SUMMARY: 0 errors\n"
RACECHECK_OK = "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"


@pytest.mark.parametrize("text,tool,ok", [
    ("check: 44 cases, 0 failed\n", None, True),
    ("check: 44 cases, 0 failed\n" + MEMCHECK_OK, "memcheck", True),
    ("16/16 checks passed\n" + RACECHECK_OK, "racecheck", True),
    ("all outputs checked: ok\n", None, True),
    ("check: 0 cases, 0 failed\n", None, False),                      # checked nothing
    ("check: 44 cases, 2 failed\n", None, False),
    ("check: 10 cases, 1 wrong\n", None, False),
    ("15/16 checks passed\n", None, False),
    ("SOME OUTPUTS WRONG\n", None, False),
    ("running...\n", None, False),                                     # cut short
    ("check: 44 cases, 0 failed\n", "memcheck", False),               # sanitizer never summarized
    ("check: 44 cases, 0 failed\n========= ERROR SUMMARY: 3 errors\n", "memcheck", False),
    ("check: 4 cases, 0 failed\n========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)\n",
     "racecheck", False),
    ("check: 4 cases, 0 failed\n========= RACECHECK SUMMARY: 1 hazard displayed (0 errors, 1 warning)\n",
     "racecheck", False),
])
def test_cpp_verdict(text, tool, ok):
    assert (verdict_cpp(text, tool) == []) is ok


@pytest.mark.parametrize("text,tool,ok", [
    ("....\n12 passed, 2 skipped in 3.21s\n", None, True),
    ("==== 12 passed in 75.31s (0:01:15) ====\n" + MEMCHECK_OK, "memcheck", True),
    ("no tests ran in 0.12s\n", None, False),
    ("30 deselected in 0.5s\n", None, False),
    ("1 failed, 11 passed in 3.0s\n", None, False),
    ("12 passed in 3.0s\n", "memcheck", False),
    ("12 passed in 3.0s\n========= ERROR SUMMARY: 1 error\n", "memcheck", False),
    ("Fatal Python error: Segmentation fault\n", None, False),
])
def test_pytest_verdict(text, tool, ok):
    assert (verdict_pytest(text, tool) == []) is ok


def test_expected_cuda_ops_come_from_the_bindings():
    ops = cuda_ops_expected()
    assert {"w4a16_gemm", "attention_decode", "w4a16_gemm_prepacked"} <= set(ops) and len(ops) == len(set(ops))


def test_merge_keeps_every_suite(tmp_path):
    rec = {"suite": "ceiling", "case": "copy 1 GiB", "impl": "copy", "params": {}, "median_us": 1.0,
           "tflops": None, "gbps": 2.0}
    meta = {"device": "d", "torch": "t", "cuda": "c", "commit": "x", "date": "2026-12-02T00:00:00Z"}
    for i, suite in enumerate(("a", "b")):
        (tmp_path / f"part-{suite}.json").write_text(json.dumps({"meta": meta, "records": [{**rec, "median_us": i + 1.0}]}))
    out = tmp_path / "all.json"
    merge(out, sorted(tmp_path.glob("part-*.json")) + [tmp_path / "part-missing.json"])
    assert [r["median_us"] for r in json.loads(out.read_text())["records"]] == [1.0, 2.0]
    assert merge(tmp_path / "none.json", [tmp_path / "part-missing.json"]) == ["no suite wrote a results file"]


PLUGIN_TESTS = '''
import pytest
import torch  # noqa: F401  (maps: the libraries torch brings, as in the real test run)

@pytest.mark.gpu
def test_na():
    pytest.skip("cutlass_sm80_x does not run int4 on compute capability 9.0")

@pytest.mark.gpu
def test_vacuous():
    pytest.skip("squash::attention has no CUDA kernel in this build yet")

def test_cpu_skip():
    pytest.skip("a CPU test may skip")

@pytest.mark.gpu
def test_gpu_ok():
    pass
'''


@pytest.mark.parametrize("strict", [True, False])
def test_plugin_fails_a_skipped_gpu_test(tmp_path, strict):
    (tmp_path / "test_x.py").write_text(PLUGIN_TESTS)
    env = {**os.environ, "PYTHONPATH": str(REPO), "GPU_CHECK_STRICT": "1" if strict else "0",
           "GPU_CHECK_MAPS": str(tmp_path / "maps"), "GPU_CHECK_CURRENT": str(tmp_path / "current")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench.pytest_gpu_check",
                        "test_x.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "SKIP test_x.py::test_vacuous: squash::attention has no CUDA kernel" in r.stdout
    assert "n/a  test_x.py::test_na" in r.stdout and "test_cpu_skip" not in r.stdout.split("gpu_check:")[-1]
    assert r.returncode == (1 if strict else 0), r.stdout
    assert (tmp_path / "current").read_text().strip() == "test_x.py::test_gpu_ok"
    maps = (tmp_path / "maps").read_text()
    assert "libstdc++" in maps and "libgomp" in maps and "libtorch_cpu" in maps
