"""The benchmark results format (TARGETS.md) and a CPU smoke run of the harness.

The GPU numbers themselves come from bench/gpu_check.sh on the lent machine; here we check that
what it writes is in the one agreed format and that the suites' code paths run (tiny shapes).
"""

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, run  # noqa: E402
from bench.harness import Context, validate_results  # noqa: E402

META = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "cuda": "13.0", "commit": "abc123",
        "date": "2026-11-24T20:00:00Z"}


def rec(impl, case="M=1 N=4096 K=4096 g=128 bf16", suite="w4a16", **kw):
    r = {"suite": suite, "case": case, "impl": impl,
         "params": {"M": 1, "N": 4096, "K": 4096, "group": 128, "dtype": "bf16"},
         "median_us": 12.3, "tflops": 2.7, "gbps": 2500.0}
    r.update(kw)
    return r


def test_write_roundtrip_one_record_per_line(tmp_path):
    records = [rec("cublas"), rec("tinygemm", tflops=None), rec("squash"), rec("squash:split_k4"),
               rec("copy", case="copy 1024 MiB", suite="ceiling", params={}, tflops=None)]
    path = tmp_path / "sub" / "2026-11-24_h100-80gb-hbm3.json"
    assert harness.write_results(path, META, records) == []
    text = path.read_text()
    assert json.loads(text) == {"meta": META, "records": records}
    assert text.endswith("]}\n") and len(text.splitlines()) == 2 + len(records) + 1
    assert not list(path.parent.glob("*.tmp"))


def test_write_refuses_to_replace_a_non_regular_file(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        harness.write_results(tmp_path, META, [rec("cublas")])


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.pop("meta"), "exactly the keys 'meta' and 'records'"),
    (lambda o: o["meta"].pop("commit"), "meta must have exactly the keys"),
    (lambda o: o["meta"].update(date=""), "meta.date must be a non-empty string"),
    (lambda o: o["records"][0].pop("gbps"), r"records\[0\] must have exactly the keys"),
    (lambda o: o["records"][0].update(median_us=0.0), r"records\[0\].median_us must be a positive"),
    (lambda o: o["records"][0].update(median_us=float("nan")), r"records\[0\].median_us must be a positive"),
    (lambda o: o["records"][0].update(tflops=-1.0), r"records\[0\].tflops must be null or a positive"),
    (lambda o: o["records"][0]["params"].update(rows=3), r"unknown keys \['rows'\]"),
    (lambda o: o["records"][0]["params"].update(M=[1]), r"params.M must be an int, string or bool"),
    (lambda o: o["records"][0].update(impl="marlin"), "neither squash"),
    (lambda o: o["records"].append(dict(o["records"][0])), "duplicates suite/case/impl"),
    (lambda o: o["records"].pop(0), "has no peer record with the same suite and case"),
    (lambda o: o["records"][0].update(suite=""), r"records\[0\].suite must be a non-empty string"),
])
def test_validate_names_each_problem(mutate, message):
    obj = {"meta": dict(META), "records": [rec("cublas"), rec("squash")]}
    assert validate_results(obj) == []
    mutate(obj)
    problems = validate_results(obj)
    assert any(re.search(message, p) for p in problems), problems


def test_peer_with_case_note_pairs_with_squash():
    case = "B=1 Skv=8192 Hq=32 Hkv=8 D=128 bf16"
    obj = {"meta": META, "records": [rec("squash", case=case, suite="attn_decode", params={}),
                                     rec("sdpa_cudnn", case=case + " [kv repeated]", suite="attn_decode", params={})]}
    assert validate_results(obj) == []
    assert harness.base_case(case + " [kv repeated]") == case


@pytest.mark.parametrize("name, slug", [
    ("NVIDIA H100 80GB HBM3", "h100-80gb-hbm3"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200"),
    ("", "unknown-gpu"),
])
def test_gpu_slug(name, slug):
    assert harness.gpu_slug(name) == slug


def test_summary_ratios():
    recs = [rec("cublas", median_us=30.0), rec("tinygemm", median_us=15.0), rec("squash", median_us=10.0)]
    text = harness.summary(recs)
    assert "cublas 30.0" in text and "(3.00x)" in text and "(1.50x)" in text
    assert "squash vs cublas 3.00x (1 cases), tinygemm 1.50x (1 cases)" in text


def test_cpu_smoke_run_writes_valid_results(tmp_path, capsys):
    out = tmp_path / "bench_cpu.json"
    rc = run.main(["--device", "cpu", "--quick", "--suites", "ceiling,w8a8,attn_decode", "--out", str(out)])
    log = capsys.readouterr().out
    assert rc == 0, log
    obj = json.loads(out.read_text())
    assert validate_results(obj) == []
    assert "smoke test" in obj["meta"]["device"]
    impls = {(r["suite"], r["impl"]) for r in obj["records"]}
    assert {("ceiling", "copy"), ("ceiling", "bf16_gemm"), ("ceiling", "int8_gemm"), ("w8a8", "cublas"),
            ("w8a8", "int_mm"), ("attn_decode", "sdpa_flash")} <= impls
    assert "SKIP sdpa_cudnn" in log  # CUDA-only peers are skipped, and say so


def test_dry_run_plan_fits_the_budget(tmp_path):
    """The full default plan, estimated with an H100 roofline, stays inside the default budget
    (so a real run is not cut short by the per-suite budgets)."""
    ctx = Context(device="meta")
    timings, fatal, interrupted = run.run_suites(ctx, list(run.ORDER), 1e9, tmp_path / "plan.json", META)
    assert not fatal and not interrupted
    assert all(status == "ok" for *_, status in timings)
    assert ctx.virtual_s < run.parse_args([]).budget_s, ctx.virtual_s
    suites = {r["suite"] for r in ctx.records}
    assert suites == set(run.ORDER)


def test_cpu_interleaved_measure_records_cpu_peers_and_skips_failures(capsys):
    """The CPU suites' timer: every impl of a case recorded in the agreed format under the CPU peer
    names, a failing impl logged as a SKIP (and counted when it is squash's)."""
    ctx = Context(device="cpu")
    params = {"M": 1, "N": 16, "K": 32, "group": 128, "dtype": "bf16"}
    calls = []

    def broken():
        raise RuntimeError("no kernel")

    out = ctx.measure_interleaved(
        "cpu_woq", "w4a16 M=1 N=16 K=32 g=128 bf16", params,
        [("torch_fp32", lambda: calls.append, 1e3, 1e3), ("int4pack_cpu", lambda: calls.append, None, None),
         ("squash", broken, None, None)], rounds=3, batch_s=1e-4)
    assert set(out) == {"torch_fp32", "int4pack_cpu"} and ctx.squash_errors == 1
    assert "SKIP squash" in capsys.readouterr().out
    assert validate_results({"meta": META, "records": ctx.records}) == []
    assert {r["impl"] for r in ctx.records} == {"torch_fp32", "int4pack_cpu"}
    assert len(calls) >= 1 + 3 * 2  # warm-up + every round of both impls


def test_cpu_suites_are_selected_on_cpu_and_refused_elsewhere():
    args = run.parse_args(["--device", "cpu"])
    assert args.suites == list(run.CPU_ORDER) and not run.cpu_smoke(args)
    assert run.cpu_smoke(run.parse_args(["--device", "cpu", "--suites", "w4a16"]))
    with pytest.raises(SystemExit):
        run.parse_args(["--suites", "cpu_woq"])  # --device cuda
