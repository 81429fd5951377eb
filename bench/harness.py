"""Timing, records and the results file of the squash_ops benchmarks.

Results format (TARGETS.md, bench/results/README.md): one JSON object
``{"meta": {device, torch, cuda, commit, date}, "records": [{suite, case, impl, params,
median_us, tflops, gbps}, ...]}``. `validate_results` is the one definition of that format; the
writer, `bench.run` and tests/test_bench_format.py all use it.

How a CUDA time is taken (`Timer`):
- warm-up: one untimed call (compilation, autotuning, lazy module loading), then one call timed
  by wall clock; a call slower than `long_call_s` is recorded from that single call.
- launch overhead is hidden, not measured: a spin kernel (`torch.cuda._sleep`) is queued first
  and lasts longer than the CPU needs to enqueue every rep, so the GPU then runs the reps back
  to back (the same effect as CUDA-graph replay, without capture restrictions on the callee).
- one CUDA event between consecutive reps; the result is the median of the per-rep intervals.
- cold L2: suites give each rep its own copy of the inputs, rotating through enough copies that
  the bytes touched between two uses of one copy exceed `COLD_BYTES` (4x the 50 MB L2 of an
  H100; FlashInfer's trick), so memory-bound cases read DRAM as they would in a model.
On the CPU: the smoke test of the GPU suites times calls one by one with `time.perf_counter`;
the CPU suites (bench/suites/cpu_*.py) time all impls of a case interleaved (`Context.
measure_interleaved`): rounds in which every impl runs one batch of calls, so a burst of load on
the shared machine hits every impl alike; median_us is the median over rounds of the per-call time
(the log also shows the best round).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

# ---- the results format (TARGETS.md) ------------------------------------------------------

META_KEYS = ("device", "torch", "cuda", "commit", "date")
RECORD_KEYS = ("suite", "case", "impl", "params", "median_us", "tflops", "gbps")
PARAM_KEYS = frozenset({
    "M", "N", "K", "group", "dtype", "batch", "seqlen_q", "seqlen_k", "heads_q", "heads_kv",
    "head_dim", "causal", "hidden", "tokens",
})
PEERS = frozenset({
    "cublas", "tinygemm", "int8pack", "int_mm", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient",
    "sdpa_math", "torch_norm", "compiled", "copy", "bf16_gemm", "int8_gemm",
    # CPU peers (TARGETS.md "CPU")
    "torch_fp32", "torch_bf16", "torch_dynamic_int8", "ort_fp32", "ort_int8", "int4pack_cpu",
})
# A peer that could not run a case natively may be timed on a variant of it; the case string
# then ends with this note (e.g. GQA decode with K/V repeated outside the timed region).
CASE_NOTE = re.compile(r" \[[^\]]*\]$")

L2_BYTES = 50 * 2**20
COLD_BYTES = 4 * L2_BYTES


def base_case(case: str) -> str:
    """The case without a peer's trailing ' [note]' (used to pair records across impls)."""
    return CASE_NOTE.sub("", case)


def is_squash(impl: str) -> bool:
    return impl == "squash" or impl.startswith("squash:")


def _sig(v: float) -> float:
    """4 significant digits (a positive time or rate never rounds to 0)."""
    return float(f"{v:.4g}")


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def validate_results(obj: Any) -> list[str]:
    """Problems with a results object (empty list: it is in the TARGETS.md format)."""
    if not isinstance(obj, dict) or set(obj) != {"meta", "records"}:
        return ["top level must be an object with exactly the keys 'meta' and 'records'"]
    problems = []
    meta, records = obj["meta"], obj["records"]
    if not isinstance(meta, dict) or set(meta) != set(META_KEYS):
        problems.append(f"meta must have exactly the keys {list(META_KEYS)}")
    else:
        problems += [f"meta.{k} must be a non-empty string" for k in META_KEYS
                     if not isinstance(meta[k], str) or not meta[k]]
    if not isinstance(records, list):
        return problems + ["records must be a list"]
    seen = set()
    for i, r in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(r, dict) or set(r) != set(RECORD_KEYS):
            problems.append(f"{where} must have exactly the keys {list(RECORD_KEYS)}")
            continue
        for k in ("suite", "case", "impl"):
            if not isinstance(r[k], str) or not r[k]:
                problems.append(f"{where}.{k} must be a non-empty string")
        impl = r["impl"] if isinstance(r["impl"], str) else ""
        if not (is_squash(impl) or impl in PEERS):
            problems.append(f"{where}.impl {impl!r} is neither squash[:variant] nor a peer of TARGETS.md")
        params = r["params"]
        if not isinstance(params, dict):
            problems.append(f"{where}.params must be an object")
        else:
            extra = set(params) - PARAM_KEYS
            if extra:
                problems.append(f"{where}.params has unknown keys {sorted(extra)}")
            for k, v in params.items():
                if not isinstance(v, (int, str, bool)):
                    problems.append(f"{where}.params.{k} must be an int, string or bool")
        if not _positive_number(r["median_us"]):
            problems.append(f"{where}.median_us must be a positive finite number")
        for k in ("tflops", "gbps"):
            if r[k] is not None and not _positive_number(r[k]):
                problems.append(f"{where}.{k} must be null or a positive finite number")
        key = (r["suite"], r["case"], r["impl"])
        if key in seen:
            problems.append(f"{where} duplicates suite/case/impl {key}")
        seen.add(key)
    peer_cases = {(r["suite"], base_case(r["case"])) for r in records
                  if isinstance(r, dict) and isinstance(r.get("impl"), str) and not is_squash(r["impl"])
                  and isinstance(r.get("case"), str)}
    for i, r in enumerate(records):
        if (isinstance(r, dict) and isinstance(r.get("impl"), str) and is_squash(r["impl"])
                and (r.get("suite"), r.get("case")) not in peer_cases):
            problems.append(f"records[{i}] (squash, {r.get('suite')}, {r.get('case')!r}) has no peer record "
                            "with the same suite and case")
    return problems


def dumps_results(meta: dict, records: list[dict]) -> str:
    """The results JSON, one record per line (readable diffs of committed result files)."""
    lines = ['{"meta": ' + json.dumps(meta, sort_keys=False) + ",", ' "records": [']
    lines += ["  " + json.dumps(r) + ("," if i + 1 < len(records) else "") for i, r in enumerate(records)]
    lines.append("]}")
    return "\n".join(lines) + "\n"


def write_results(path: str | os.PathLike, meta: dict, records: list[dict]) -> list[str]:
    """Writes the results atomically (a reader never sees half a file); returns format problems.

    The file is written even when there are problems (a measured run is never thrown away);
    the caller reports them.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # e.g. /dev/null: os.replace would swap it for a file
        raise ValueError(f"results path {path} exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps_results(meta, records)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return validate_results(json.loads(text))


# ---- meta ----------------------------------------------------------------------------------

def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3' (lowercase, non-alphanumerics -> '-')."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    s = re.sub(r"^nvidia-", "", s)
    return s or "unknown-gpu"


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """HEAD's sha (+'-dirty' if tracked files differ), else $SQUASH_COMMIT, else 'unknown'."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        if sha:
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("SQUASH_COMMIT") or "unknown"


def cpu_model() -> tuple[str, list[str]]:
    """(CPU model name, the SIMD flags that matter to the CPU kernels) from /proc/cpuinfo."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"]
    return name, [f for f in wanted if f in flags]


def cpu_slug() -> str:
    """'AMD EPYC 7B13 64-Core Processor' -> 'cpu-amd-epyc-7b13-64-core-processor'."""
    return "cpu-" + (re.sub(r"[^a-z0-9]+", "-", cpu_model()[0].lower()).strip("-") or "unknown")


def make_meta(device: str, smoke: bool) -> dict:
    if device == "cuda":
        dev = torch.cuda.get_device_name(torch.cuda.current_device())
    elif device == "cpu" and not smoke:
        name, flags = cpu_model()
        dev = (f"{cpu_slug()} ({name}; {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
               f"{' '.join(flags) or 'no AVX2'})")
    else:
        dev = f"{device} (smoke test: tiny shapes, not a benchmark)" if smoke else device
    return {
        "device": dev,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def dtype_name(dt: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
            torch.int8: "int8"}[dt]


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- timing --------------------------------------------------------------------------------

class Timer:
    """Median time of `call(i)` (i = rep index, used by suites to rotate input copies)."""

    def __init__(self, device: str, target_s: float = 0.04, min_reps: int = 5, max_reps: int = 100,
                 long_call_s: float = 0.25):
        self.device = device
        self.target_s, self.min_reps, self.max_reps = target_s, min_reps, max_reps
        self.long_call_s = long_call_s
        self._cycles_per_s: float | None = None

    def __call__(self, call: Callable[[int], Any]) -> tuple[float, int]:
        if self.device == "cuda":
            return self._time_cuda(call)
        return self._time_cpu(call)

    def _time_cpu(self, call):
        call(0)
        t0 = time.perf_counter()
        call(1)
        t = time.perf_counter() - t0
        n = max(2, min(10, int(0.005 / max(t, 1e-9))))
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            call(2 + i)
            times.append(time.perf_counter() - t0)
        return statistics.median(times), n

    def _sleep(self, seconds: float) -> None:
        if not hasattr(torch.cuda, "_sleep"):  # private API; without it launch gaps may show
            return
        if self._cycles_per_s is None:  # calibrate the spin kernel once (second run: warm)
            for _ in range(2):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                torch.cuda._sleep(1_000_000)
                b.record()
                b.synchronize()
            self._cycles_per_s = 1_000_000 / max(a.elapsed_time(b) * 1e-3, 1e-6)
        torch.cuda._sleep(int(seconds * self._cycles_per_s))

    def _time_cuda(self, call):
        sync = torch.cuda.synchronize
        call(0)
        sync()
        t0 = time.perf_counter()
        call(1)
        sync()
        t_wall = time.perf_counter() - t0
        if t_wall > self.long_call_s:
            return t_wall, 1
        # Probe: GPU time per call and CPU enqueue time per call, behind a spin kernel.
        k = 3
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(k + 1)]
        self._sleep(min(0.05, 2 * k * t_wall + 0.002))
        t0 = time.perf_counter()
        ev[0].record()
        for j in range(k):
            call(2 + j)
            ev[j + 1].record()
        t_cpu = (time.perf_counter() - t0) / k
        sync()
        t_gpu = ev[0].elapsed_time(ev[k]) * 1e-3 / k
        n = int(max(self.min_reps, min(self.max_reps, self.target_s / max(t_gpu, 1e-7))))
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        self._sleep(min(0.25, 1.5 * n * t_cpu + 0.002))
        ev[0].record()
        for i in range(n):
            call(2 + k + i)
            ev[i + 1].record()
        sync()
        times = [ev[i].elapsed_time(ev[i + 1]) * 1e-3 for i in range(n)]
        return statistics.median(times), n


# ---- the run context that suites measure through --------------------------------------------

class DeviceLost(RuntimeError):
    """The CUDA context is unusable (a sticky error such as an illegal address)."""


@dataclass
class Context:
    device: str                      # "cuda", "cpu", or "meta" (dry run: nothing is executed)
    quick: bool = False
    timer: Timer | None = None
    records: list[dict] = field(default_factory=list)
    skips: int = 0
    squash_errors: int = 0
    deadline: float = math.inf       # of the current suite, on `now()`'s clock
    # dry run: a virtual clock advanced by roofline estimates
    virtual_s: float = 0.0
    est_copy_gbps: float = 2500.0
    last_error: str | None = None    # the reason of the latest failed measure()
    _budget_noted: bool = False

    @property
    def dry_run(self) -> bool:
        return self.device == "meta"

    @property
    def tiny(self) -> bool:
        """CPU smoke test: tiny shapes."""
        return self.device == "cpu"

    def now(self) -> float:
        return self.virtual_s if self.dry_run else time.perf_counter()

    def begin_suite(self, deadline: float) -> None:
        self.deadline, self._budget_noted = deadline, False

    def out_of_time(self) -> bool:
        if self.now() <= self.deadline:
            return False
        if not self._budget_noted:
            log("SKIP suite budget: the suite's time is spent; its remaining cases are left out")
            self._budget_noted = True
        self.skips += 1
        return True

    def has_squash(self, op: str) -> bool:
        """The squash op has a kernel for this device (so the squash impl is measured)."""
        if self.dry_run:  # estimate the full run: as if every op had its CUDA kernel
            return True
        if "squash_ops" not in sys.modules:
            return False
        key = {"cuda": "CUDA", "cpu": "CPU"}[self.device]
        try:
            return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"squash::{op}", key))
        except RuntimeError:
            return False

    def copies(self, nbytes: int, max_copies: int = 64) -> int:
        """How many copies of an input set of `nbytes` keep every rep's reads cold in L2."""
        if self.device != "cuda":
            return 1
        return max(1, min(max_copies, math.ceil(COLD_BYTES / max(nbytes, 1))))

    def note_compile(self, estimate_s: float = 2.0) -> None:
        """A suite created a new torch.compile function (dry run: costs compile time)."""
        if self.dry_run:
            self.virtual_s += estimate_s

    def skip(self, impl: str, case: str, reason: str) -> None:
        reason = " ".join(str(reason).split())
        if len(reason) > 200:
            reason = reason[:197] + "..."
        log(f"SKIP {impl} {case}: {reason}")
        self.skips += 1

    def measure(self, suite: str, case: str, impl: str, params: dict, setup: Callable[[], Callable[[int], Any]],
                flops: float | None = None, nbytes: float | None = None) -> dict | None:
        """Times `setup()`'s call and records it; any exception is logged as a SKIP.

        `setup` builds what the impl needs (packing, compiling) and returns `call(i)`, which
        runs rep i (rotating input copies by i). `flops`/`nbytes` give tflops/gbps (None: null).
        """
        if self.out_of_time():
            return None
        if self.dry_run:
            return self._estimate(suite, case, impl, params, flops, nbytes)
        call = None
        try:
            call = setup()
            seconds, reps = self.timer(call)
        except Exception as e:  # noqa: BLE001  (any failure of one impl must not stop the run)
            del call
            self.last_error = f"{type(e).__name__}: {e}"
            self.skip(impl, case, self.last_error)
            if is_squash(impl):
                self.squash_errors += 1
            self._check_device()
            return None
        del call
        rec = self._record(suite, case, impl, params, seconds, flops, nbytes)
        extra = "".join([f" {rec['tflops']:9.4g} TFLOP/s" if rec["tflops"] else "",
                         f" {rec['gbps']:9.4g} GB/s" if rec["gbps"] else ""])
        log(f"{suite:<11} {case:<44} {impl:<15} {rec['median_us']:11.5g} us{extra}  (reps {reps})")
        return rec

    def measure_interleaved(self, suite: str, case: str, params: dict, impls: list[tuple], rounds: int = 7,
                            batch_s: float = 0.02) -> dict[str, dict]:
        """CPU: times every impl of one case in interleaved rounds and records each.

        impls: [(impl, setup, flops, nbytes)], setup as in `measure`. Each impl is set up and
        warmed up (one call), its batch size chosen so a batch lasts ~`batch_s`; then `rounds`
        rounds run one batch of every impl in turn. An impl whose setup or call fails is logged as
        a SKIP and left out. Returns {impl: record}.
        """
        if self.out_of_time():
            return {}
        calls, batch, times = {}, {}, {}
        for impl, setup, _, _ in impls:
            try:
                call = setup()
                t0 = time.perf_counter()
                call(0)
                t = time.perf_counter() - t0
                calls[impl], batch[impl], times[impl] = call, max(1, min(50, int(batch_s / max(t, 1e-9)))), []
            except Exception as e:  # noqa: BLE001
                self.last_error = f"{type(e).__name__}: {e}"
                self.skip(impl, case, self.last_error)
                self.squash_errors += is_squash(impl)
        for r in range(rounds):
            for impl, call in list(calls.items()):
                try:
                    n = batch[impl]
                    t0 = time.perf_counter()
                    for i in range(n):
                        call(1 + r * n + i)
                    times[impl].append((time.perf_counter() - t0) / n)
                except Exception as e:  # noqa: BLE001
                    self.last_error = f"{type(e).__name__}: {e}"
                    self.skip(impl, case, self.last_error)
                    self.squash_errors += is_squash(impl)
                    del calls[impl]
        out = {}
        for impl, _, flops, nbytes in impls:
            if impl not in calls:
                continue
            seconds = statistics.median(times[impl])
            rec = out[impl] = self._record(suite, case, impl, params, seconds, flops, nbytes)
            extra = "".join([f" {rec['tflops'] * 1e3:9.4g} GFLOP/s" if rec["tflops"] else "",
                             f" {rec['gbps']:9.4g} GB/s" if rec["gbps"] else ""])
            log(f"{suite:<11} {case:<44} {impl:<13} {rec['median_us']:11.5g} us (best {min(times[impl]) * 1e6:.5g})"
                f"{extra}  ({rounds} rounds x {batch[impl]})")
        return out

    def _estimate(self, suite, case, impl, params, flops, nbytes):
        # Roofline guess of one call on an H100 plus the harness's fixed costs per measurement.
        peak = 1.2e15 if impl in ("int_mm", "int8_gemm") or (is_squash(impl) and suite == "w8a8") else 6.5e14
        t = max((nbytes or 0) / (self.est_copy_gbps * 1e9), (flops or 0) / peak) + 4e-6
        n = max(5, min(100, int(0.04 / t)))
        self.virtual_s += (5 + n) * t + 1.5 * n * 30e-6 + 0.005
        return self._record(suite, case, impl, params, t, flops, nbytes)

    def _record(self, suite, case, impl, params, seconds: float, flops, nbytes) -> dict:
        """Appends and returns one record of the results format for a call of ``seconds``."""
        rec = {"suite": suite, "case": case, "impl": impl, "params": params, "median_us": _sig(seconds * 1e6),
               "tflops": _sig(flops / seconds * 1e-12) if flops else None,
               "gbps": _sig(nbytes / seconds * 1e-9) if nbytes else None}
        self.records.append(rec)
        return rec

    def _check_device(self) -> None:
        if self.device != "cuda":
            return
        try:
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001
            raise DeviceLost(f"CUDA context unusable after the failure above: {e}") from e
        torch.cuda.empty_cache()

    def free(self) -> None:
        """Between shapes: give cached blocks back so large suites do not fragment memory."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


# ---- tensors -------------------------------------------------------------------------------

def rand(ctx: Context, shape, dtype: torch.dtype) -> torch.Tensor:
    """Random inputs (never zeros): normal floats, full-range int8, uint8 bytes."""
    if dtype == torch.int8:
        return torch.randint(-127, 128, shape, dtype=dtype, device=ctx.device)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=dtype, device=ctx.device)
    return torch.randn(shape, dtype=dtype, device=ctx.device)


def rotating(ctx: Context, make: Callable[[], Any], nbytes: int, max_copies: int = 64) -> list:
    """`ctx.copies(nbytes)` independent results of `make()` (input sets to rotate through)."""
    return [make() for _ in range(ctx.copies(nbytes, max_copies))]


# ---- the summary printed at the end of a run --------------------------------------------------

def summary(records: list[dict]) -> str:
    """Per suite and case: squash's speed-up over each peer (if squash ran), else the peers'
    times; then per suite the geometric mean of squash's speed-up over each peer."""
    out = []
    suites: dict[str, dict[str, dict[str, dict]]] = {}
    for r in records:
        suites.setdefault(r["suite"], {}).setdefault(base_case(r["case"]), {})[r["impl"]] = r
    geo_lines = []
    for suite, cases in suites.items():
        out.append(f"== {suite} ==  (median us; 'x' = squash speed-up over that peer)")
        width = max(len(c) for c in cases)
        ratios: dict[str, list[float]] = {}
        for case, impls in cases.items():
            sq = impls.get("squash")
            parts = []
            for impl in sorted(impls, key=lambda i: (not is_squash(i), i)):
                r = impls[impl]
                metric = (f" {r['gbps']:.0f}GB/s" if r["gbps"] else "") + (
                    f" {r['tflops']:.0f}TF" if r["tflops"] and r["tflops"] >= 1 else "")
                part = f"{impl} {r['median_us']:.1f}{metric}"
                if sq and not is_squash(impl):
                    x = r["median_us"] / sq["median_us"]
                    ratios.setdefault(impl, []).append(x)
                    part += f" ({x:.2f}x)"
                parts.append(part)
            out.append(f"  {case:<{width}}  " + " | ".join(parts))
        if ratios:
            geo = ", ".join(f"{p} {math.exp(sum(map(math.log, v)) / len(v)):.2f}x ({len(v)} cases)"
                            for p, v in sorted(ratios.items()))
            geo_lines.append(f"  {suite:<11} squash vs {geo}")
        else:
            geo_lines.append(f"  {suite:<11} no squash records ({len(cases)} cases, peers only)")
    out.append("== geometric-mean speed-up of squash per suite ==")
    out += geo_lines
    return "\n".join(out)
