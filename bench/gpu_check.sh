#!/usr/bin/env bash
# The one command a lent GPU machine runs: environment, carried wheels, build, the full test
# suite, the benchmarks, then compute-sanitizer memcheck and racecheck over the GPU tests.
#
#   SQUASH_COMMIT=<sha of the tree sent> bash bench/gpu_check.sh     (from the repo root, $OUT set)
#
# Every stage runs under `timeout`; a failed or timed-out stage is recorded and the next stage
# still runs; the exit status is 1 if any stage failed. The stages share a wall-clock budget
# (GPU_CHECK_BUDGET_S, default 510 s, i.e. under 9 minutes with the summary): each stage's limit
# is min(its cap, what is left minus what the later stages are guaranteed). The benchmarks run
# before the sanitizers, so open-ended sanitizer runs cannot eat the benchmarks' time.
#
# Carry .whl/ (scripts/fetch_gpu_wheels.sh fills it) with the device tool.
#
# Files written to $OUT (at most 8 come back from the device tool):
#   <YYYY-MM-DD>_<gpu>.log   this whole log (all stages)      } committed unedited to
#   <YYYY-MM-DD>_<gpu>.json  benchmark results                } bench/results/
#   pytest.xml, pytest.log   the full test suite (junit xml + output)
#   memcheck.log, racecheck.log   compute-sanitizer output (only their summaries go to the log)
#
# Knobs (environment):
#   GPU_CHECK_BUDGET_S  total seconds for all stages (510)
#   BENCH_ARGS          extra arguments of `python3 -m bench.run` (e.g. "--quick", "--suites w4a16")
#   SANITIZE_K          pytest -k expression of the sanitizer runs
#                       (default "not compile and not large and not slow and not hypothesis")
#   SKIP_STAGES         stage names to leave out, e.g. "memcheck racecheck"
#   MAX_JOBS            parallel compile jobs of the build (16)
# The sanitizer runs set SQUASH_SANITIZE=1: GPU tests should read it and shrink their shapes
# (a few blocks per kernel is enough for memcheck/racecheck, which run ~100x slower), and
# PYTORCH_NO_CUDA_MEMORY_CACHING=1, so every tensor is its own cudaMalloc and an out-of-bounds
# access is caught at the tensor's edge instead of inside a cached block. Tests that ignore
# SQUASH_SANITIZE may make a sanitizer stage time out: that is reported as TIMEOUT, not as clean.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export OUT=${OUT:-$REPO/out/gpu_check}
mkdir -p "$OUT"
export PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export SANITIZE_K=${SANITIZE_K:-not compile and not large and not slow and not hypothesis}
# The pytest sanitizer runs cover the GEMM kernels (GEMV, mma, dequantize, quantize, W8A8); the
# norm, decode, prefill, prepacked GEMM and W8A8 kernels are also sanitized through their C++
# checks (stage cpp).
export SANITIZE_TESTS=${SANITIZE_TESTS:-tests/test_gemm.py}
BUDGET=${GPU_CHECK_BUDGET_S:-510}
T0=$SECONDS
LOG=$OUT/gpu_check.log
: >"$LOG"

say() { echo "$*" | tee -a "$LOG"; }

NAMES=() STATUS=() TIMES=() LIMITS=()
FAILED=0

# stage <name> <cap_s> <reserve_s> <rc that also count as ok, e.g. "5" or ""> <function>
stage() {
  local name=$1 cap=$2 reserve=$3 okrc=" $4 " fn=$5
  local left=$((BUDGET - (SECONDS - T0) - reserve))
  local limit=$((cap < left ? cap : left))
  NAMES+=("$name")
  LIMITS+=("$limit")
  if [[ " ${SKIP_STAGES:-} " == *" $name "* ]]; then
    STATUS+=("skipped") TIMES+=(0)
    say "=== stage $name: skipped (SKIP_STAGES)"
    return 0
  fi
  if ((limit < 15)); then
    STATUS+=("FAIL(no time)") TIMES+=(0)
    FAILED=1
    say "=== stage $name: FAIL, no time left in the ${BUDGET} s budget"
    return 1
  fi
  say ""
  say "=== stage $name (limit ${limit} s, at +$((SECONDS - T0)) s) ==="
  local t=$SECONDS rc
  STAGE_LIMIT=$limit timeout -k 15 "$limit" bash -c "$fn" </dev/null 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  TIMES+=($((SECONDS - t)))
  if ((rc == 0)); then
    STATUS+=("ok")
  elif [[ "$okrc" == *" $rc "* ]]; then
    STATUS+=("ok(rc $rc)")
  elif ((rc == 124 || rc == 137)); then
    STATUS+=("TIMEOUT")
    FAILED=1
    say "=== stage $name: TIMED OUT after ${limit} s"
  else
    STATUS+=("FAIL(rc $rc)")
    FAILED=1
  fi
  say "=== stage $name: ${STATUS[-1]} in $((SECONDS - t)) s"
  return "$rc"
}

# ---- stages (exported functions, run by `bash -c` under `timeout`) ---------------------------

stage_env() {
  set -o pipefail
  nvidia-smi || return 1
  "$PY" - <<'PY' || return 1
import os, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torch cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version())
assert torch.cuda.is_available(), "torch sees no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"device {p.name}: {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
print("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
PY
  (command -v nvcc >/dev/null && nvcc --version | tail -n 2) || echo "nvcc: not on PATH"
  "$(san_bin)" --version 2>/dev/null | head -n 2 || echo "compute-sanitizer: not found"
  echo "cores $(nproc) | $(free -g | awk '/Mem:/{print $2 " GiB RAM, " $7 " GiB available"}') | /tmp: $(df -h /tmp | awk 'NR==2{print $4 " free"}')"
  echo "commit ${SQUASH_COMMIT:-<unset: pass SQUASH_COMMIT=<sha>, else git decides>}"
}

stage_wheels() {
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    ls /tmp/site
}

stage_build() {
  MAX_JOBS=${MAX_JOBS:-16} PYTHON="$PY" bash scripts/setup.sh
}

stage_tests() {
  # pytest-xdist (in the GPU image) runs the suite in 8 worker processes: faster, and a test that
  # crashes its process is reported as failed while the rest still run. A crashed test is then
  # re-run alone under cuda-gdb for a native backtrace.
  set -o pipefail
  local par=() rc crashed
  "$PY" -c "import xdist" 2>/dev/null && par=(-n 8)
  "$PY" -m pytest -q -rfEs -p no:cacheprovider "${par[@]}" --junitxml="$OUT/pytest.xml" 2>&1 | tee "$OUT/pytest.log"
  rc=$?
  crashed=$(grep -oE "crashed while running '[^']+'" "$OUT/pytest.log" | head -n 1 | cut -d"'" -f2)
  # xdist prints the node id repr-escaped (\\[ for \[): undo that so pytest finds the test.
  [ -n "$crashed" ] && crashed=$("$PY" -c "import sys; print(sys.argv[1].encode().decode('unicode_escape'))" "$crashed")
  if [ -n "$crashed" ] && command -v cuda-gdb >/dev/null; then
    echo "--- native backtrace of the crashed test $crashed"
    timeout 120 cuda-gdb -batch -ex run -ex bt --args "$PY" -m pytest -q -p no:cacheprovider "$crashed" 2>&1 |
      grep -E "^#|signal|SIG" | head -n 40
  fi
  return $rc
}

stage_bench() {
  # The benchmark's own budget ends before this stage's timeout, so it finishes and writes.
  local budget=$((STAGE_LIMIT - 30))
  ((budget < 30)) && budget=30
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  "$PY" -m bench.run --budget-s "$budget" --out "$OUT/$STEM.json" ${BENCH_ARGS:-}
}

stage_cpp() {
  # The torch-free microbenchmarks of bench/cpp, linked against the kernel library the build
  # just made: each bench's self-check vs a host float64 reference, that check under
  # compute-sanitizer, then its timing table. Each bench has its own modes (see its header).
  set -o pipefail
  local lib rc=0 san
  lib=$(ls build/*/libsquash_kernels.a 2>/dev/null | head -n 1)
  [ -n "$lib" ] || { echo "no libsquash_kernels.a under build/"; return 1; }
  san=$(san_bin)
  cpp_build() {
    nvcc -O3 -std=c++17 --expt-relaxed-constexpr --use_fast_math -gencode=arch=compute_90a,code=sm_90a \
      -Icsrc/kernels -Ibench/cpp "bench/cpp/$1.cu" "$lib" -o "build/$1"
  }
  step() { echo "--- $*"; timeout 60 "$@" 2>&1 | tail -n 40 || { echo "--- FAILED: $*"; rc=1; }; }
  # CPP_TIMINGS=1 adds each bench's timing sweep (for tuning the heuristics; ~80 s).
  if cpp_build norm_bench; then
    step build/norm_bench --check
    step "$san" --tool memcheck --error-exitcode 1 build/norm_bench --check
    # No racecheck here yet: over norm_bench's 6540 check cases it outran a 90 s stage (run 2);
    # it needs a subset mode of --check first.
    [ -n "${CPP_TIMINGS:-}" ] && step build/norm_bench --quick
  else rc=1; fi
  if cpp_build gemv_bench; then  # --quick times every config and spot-checks vs float64
    [ -n "${CPP_TIMINGS:-}" ] && step build/gemv_bench --quick
  else rc=1; fi
  if cpp_build pk_bench; then  # the prepacked GEMM: every config x splits vs float64, then sanitizers
    step build/pk_bench --check
    step "$san" --tool memcheck --error-exitcode 1 build/pk_bench --check --quick
    step "$san" --tool racecheck --error-exitcode 1 build/pk_bench --check --quick
    [ -n "${CPP_TIMINGS:-}" ] && step build/pk_bench --quick
  else rc=1; fi
  if cpp_build w8a8_bench; then  # bit-exact self-check of every W8A8 config (sm80 ones on sm_90 too)
    step build/w8a8_bench --check
    step "$san" --tool memcheck --error-exitcode 1 build/w8a8_bench --check
    step "$san" --tool racecheck --error-exitcode 1 build/w8a8_bench --check-small
    [ -n "${CPP_TIMINGS:-}" ] && step build/w8a8_bench --sweep
  else rc=1; fi
  if cpp_build decode_bench; then
    step build/decode_bench --check
    step "$san" --tool memcheck --error-exitcode 1 build/decode_bench --quick
    step "$san" --tool racecheck --error-exitcode 1 build/decode_bench --quick
    [ -n "${CPP_TIMINGS:-}" ] && step build/decode_bench --bench --sweep
  else rc=1; fi
  if cpp_build prefill_bench; then  # --check: ~15 s of float64 host reference
    step build/prefill_bench --check
    step "$san" --tool memcheck --error-exitcode 1 build/prefill_bench --quick
    step "$san" --tool racecheck --error-exitcode 1 build/prefill_bench --quick
    [ -n "${CPP_TIMINGS:-}" ] && step build/prefill_bench --bench
  else rc=1; fi
  return $rc
}

san_bin() {
  command -v compute-sanitizer 2>/dev/null ||
    ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1
}

sanitize() {  # sanitize <tool>: the GPU tests (fast subset, small shapes) under compute-sanitizer
  local tool=$1 san
  san=$(san_bin)
  [ -n "$san" ] || { echo "compute-sanitizer not found" | tee "$OUT/$tool.log"; return 1; }
  echo "$san --tool $tool ... pytest -m gpu -k \"$SANITIZE_K\" (output: $OUT/$tool.log)"
  SQUASH_SANITIZE=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$san" --tool "$tool" --target-processes all --error-exitcode 1 --print-limit 50 \
    "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu -k "$SANITIZE_K" $SANITIZE_TESTS >"$OUT/$tool.log" 2>&1
  local rc=$? ours theirs
  # cuBLAS's own kernels (nvjet_*, reached through the dequantize + matmul path) report
  # racecheck hazards that are not ours: the verdict counts only reports in other kernels.
  theirs=$(grep -c "Race reported.*nvjet" "$OUT/$tool.log")
  ours=$(grep -E "Race reported|Invalid __global__|Error: " "$OUT/$tool.log" | grep -vc nvjet)
  echo "$tool: $ours report(s) in squash kernels, $theirs in cuBLAS nvjet kernels (pytest+sanitizer rc $rc)"
  if [ "$tool" = racecheck ] && ((ours == 0)) && ((rc == 1)) && ((theirs > 0)) &&
     grep -qE " passed" "$OUT/$tool.log" && ! grep -qE " failed" "$OUT/$tool.log"; then
    return 0
  fi
  return $rc
}
stage_memcheck() { sanitize memcheck; }
stage_racecheck() { sanitize racecheck; }

san_summary() {  # the sanitizer's report lines and pytest's result line, into the log
  local f=$OUT/$1.log
  [ -f "$f" ] || return 0
  say "--- $1: first sanitizer lines, then the end of $f"
  grep -m 40 '^=========' "$f" | tee -a "$LOG"
  tail -n 6 "$f" | tee -a "$LOG"
  truncate -s '<15M' "$f"
}

export -f stage_env stage_wheels stage_build stage_tests stage_cpp stage_bench san_bin sanitize stage_memcheck stage_racecheck

# ---- run -------------------------------------------------------------------------------------

say "gpu_check: $(date -u '+%F %T') UTC, budget ${BUDGET} s, repo $REPO, out $OUT"
stage env 60 0 "" stage_env

DATE=$(date -u +%F)
SLUG=$(timeout 60 "$PY" -c 'import torch; from bench.harness import gpu_slug; print(gpu_slug(torch.cuda.get_device_name(0)))' 2>/dev/null)
[ -n "$SLUG" ] || SLUG=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 |
  tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g; s/^nvidia-//')
[ -n "$SLUG" ] || SLUG=unknown-gpu
export STEM="${DATE}_${SLUG}"
mv "$LOG" "$OUT/$STEM.log" && LOG=$OUT/$STEM.log
say "gpu_check: results stem $STEM"

if ls .whl/*.whl >/dev/null 2>&1; then
  stage wheels 90 0 "" stage_wheels && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  NAMES+=("wheels") STATUS+=("n/a (no .whl/)") TIMES+=(0) LIMITS+=(0)
fi

BENCH_CAP=${BENCH_CAP:-240}  # bench.run gets --budget-s (limit - 30): 210 s by default, < 4 min in all
stage build 240 $((60 + BENCH_CAP)) "" stage_build
stage tests 180 "$BENCH_CAP" "" stage_tests
stage cpp 200 "$BENCH_CAP" "" stage_cpp
stage bench "$BENCH_CAP" 0 "" stage_bench
# pytest exit 5 = no GPU test selected: nothing to sanitize, reported as ok(rc 5).
stage memcheck 150 45 "5" stage_memcheck
san_summary memcheck
stage racecheck 150 0 "5" stage_racecheck
san_summary racecheck

# ---- summary (the device tool returns only the end of the output) ---------------------------
say ""
say "=== gpu_check highlights ==="
pytest_line() { grep -E ' in [0-9.]+s' "$1" | tail -n 1; }  # "3 passed, 2 skipped in 1.2s"
[ -f "$OUT/pytest.log" ] && say "tests:     $(pytest_line "$OUT/pytest.log")"
for t in memcheck racecheck; do
  [ -f "$OUT/$t.log" ] &&
    say "$t: $(pytest_line "$OUT/$t.log") | $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$t.log" | tail -n 1)"
done
# bench.run's per-suite geometric means, suite times and totals (the per-case table is above)
highlights=$(sed -n '/^== geometric-mean speed-up/,/^  total .* records/p' "$LOG" | sed 's/^/bench: /')
[ -n "$highlights" ] && say "$highlights"
say ""
say "=== gpu_check summary: $((SECONDS - T0)) s of the ${BUDGET} s budget ==="
printf '%-10s %-15s %7s %7s\n' stage status time limit | tee -a "$LOG"
for i in "${!NAMES[@]}"; do
  printf '%-10s %-15s %6ss %6ss\n' "${NAMES[$i]}" "${STATUS[$i]}" "${TIMES[$i]}" "${LIMITS[$i]}" | tee -a "$LOG"
done
say "files in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
say "gpu_check: exit $FAILED"
exit "$FAILED"
