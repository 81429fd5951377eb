#!/usr/bin/env bash
# The GPU check, as two device-tool calls of 6 minutes each: with the machine's start (1-2 min)
# both fit 14 of the session's 15 minutes of device time. By priority:
#
#   call 1, correctness:  bash bench/gpu_check.sh check
#     build against the prebuilt kernels -> stop at once unless the CUDA ops are registered ->
#     then side by side: the bad-input tests in one process (on a crash: native backtrace and the
#     libstdc++/libgomp the process had mapped) followed by every GPU test (pytest -m gpu, a
#     timeout per test, a skipped GPU test fails); every C++ self-check of bench/cpp;
#     compute-sanitizer memcheck and racecheck on the kernels that never ran on a GPU.
#   call 2, speed:        bash bench/gpu_check.sh speed
#     build (kept from call 1 when the machine stayed warm) -> the benchmark suites one process
#     each, each with its own time budget: ceiling, e2e_decode and the new kernels first.
#
# The device tool calls, as pasted (run scripts/prebuild_kernels.sh and scripts/fetch_gpu_wheels.sh
# here first; .prebuilt/ + .whl/ must stay under the 64 MiB carry):
#   run  command: SQUASH_COMMIT=<git rev-parse HEAD> bash bench/gpu_check.sh check
#        carry: [".prebuilt", ".whl"]   timeout_s: 360
#   run  command: SQUASH_COMMIT=<git rev-parse HEAD> bash bench/gpu_check.sh speed
#        carry: [".prebuilt", ".whl"]   timeout_s: 360
# Call 2 right after call 1 (the machine stays warm 30 s) reuses call 1's build.
#
# Dry run, on the CPU machine (no GPU; no kernel is compiled or run): the same control flow, the
# CPU build (it imports the prebuilt archive when there is one), the bad-input tests, the GPU
# tests' collection and skip verdicts, `bench.run --dry-run` per suite and the merge; the GPU
# commands are printed instead of run, and verdicts that need a GPU say "would fail":
#   GPU_CHECK_DRY_RUN=1 bash bench/gpu_check.sh check    (and ... speed)
#
# Every stage has a time limit (the smaller of its cap and what the call's budget has left after
# the later stages' minimum) and a verdict that fails when it proved nothing (bench/gpu_verdict.py,
# bench/pytest_gpu_check.py). Files stream into $OUT as they are written (a call cut short still
# returns what it proved), logs whole, at most 8 files:
#   check: <stem>_check.log (the stages in order + the summary), <stem>_check.tests.log,
#          <stem>_check.junit.xml, <stem>_check.cpp.log, <stem>_check.memcheck.log,
#          <stem>_check.racecheck.log
#   speed: <stem>.json (all suites, rewritten after each), <stem>.log
# <stem> = <YYYY-MM-DD>_<gpu-slug>. Commit them unedited to bench/results/ (README there).
#
# Knobs: GPU_CHECK_BUDGET_S (330: the call's 360 s minus a margin for the summary), MAX_JOBS (16),
# GPU_TEST_TIMEOUT_S (per GPU test, 120), SQUASH_PREBUILT_KERNELS (.prebuilt/squash_kernels-90a.tar.xz).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=${1:-}
[[ "$MODE" == check || "$MODE" == speed ]] || { echo "usage: bash bench/gpu_check.sh check|speed" >&2; exit 2; }
export DRY=${GPU_CHECK_DRY_RUN:-0}
export OUT=${OUT:-$REPO/out/gpu_check}
mkdir -p "$OUT"
export PY=${PYTHON:-python3}
# Unbuffered output streams into the logs; a fixed hash seed makes runs repeatable across processes;
# the repo on the path lets pytest (and its xdist workers) load -p bench.pytest_gpu_check.
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export ARCHIVE=${SQUASH_PREBUILT_KERNELS:-$REPO/.prebuilt/squash_kernels-90a.tar.xz}
export CPPB=$REPO/build/gpu_check  # the bench/cpp executables
BUDGET=${GPU_CHECK_BUDGET_S:-330}
T0=$SECONDS
export STATE
STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT

# ---- helpers ---------------------------------------------------------------------------------

# dry <cmd...>: runs cmd, or in the dry run prints it (the commands that need a GPU or nvcc).
dry() { if [ "$DRY" = 1 ]; then echo "[dry run] $*"; else "$@"; fi; }
# would_fail <what>: a verdict that needs a GPU; fails the stage except in the dry run.
would_fail() {
  if [ "$DRY" = 1 ]; then echo "[dry run] would fail on a GPU machine: $*"; return 0; fi
  echo "FAIL: $*"; return 1
}
san_bin() {  # the path, or empty; san_cmd: the path, or its name for printing (dry run)
  command -v compute-sanitizer 2>/dev/null ||
    ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1
}
san_cmd() { local s; s=$(san_bin); echo "${s:-compute-sanitizer}"; }
export -f dry would_fail san_bin san_cmd

# run_stage <name> <limit_s> <log> <function>: the function under `timeout`, its output appended
# whole to <log>; "<status> <seconds> <limit>" goes to $STATE/<name> for the summary.
run_stage() {
  local name=$1 limit=$2 log=$3 fn=$4 t=$SECONDS rc st
  echo "$name" >>"$STATE/order"
  if ((limit < 10)); then
    echo "FAIL(no-time) 0 $limit" >"$STATE/$name"
    echo "=== stage $name: FAIL, no time left in the ${BUDGET} s budget" >>"$log"
    return 1
  fi
  echo "=== stage $name (limit ${limit} s, at +$((SECONDS - T0)) s) ===" >>"$log"
  STAGE_LIMIT=$limit timeout -k 10 "$limit" bash -c "$fn" </dev/null >>"$log" 2>&1
  rc=$?
  case $rc in 0) st=ok ;; 124 | 137) st=TIMEOUT ;; *) st="FAIL(rc-$rc)" ;; esac
  echo "=== stage $name: $st in $((SECONDS - t)) s" >>"$log"
  echo "$st $((SECONDS - t)) $limit" >"$STATE/$name"
  [ "$st" = ok ]
}

# left <reserve_s>: seconds of the budget left after keeping <reserve_s> for later stages.
left() { echo $((BUDGET - (SECONDS - T0) - $1)); }
# seq_stage <name> <cap_s> <reserve_s> <function>: a stage in the main log, now.
seq_stage() {
  local l
  l=$(left "$3")
  run_stage "$1" $(($2 < l ? $2 : l)) "$LOG" "$4"
}
# bg_stage <name> <log> <function> <reserve_s>: a stage in its own log, side by side with others.
bg_stage() {
  echo "=== stage $1 started at +$((SECONDS - T0)) s: output in $(basename "$2")" >>"$LOG"
  run_stage "$1" "$(left "$4")" "$2" "$3" &
}

# ---- stages (run by `bash -c` under `timeout`, so exported) ----------------------------------

stage_env() {
  if [ "$DRY" = 1 ] && ! command -v nvidia-smi >/dev/null; then
    echo "[dry run] no nvidia-smi here"
  else
    nvidia-smi || return 1
  fi
  "$PY" - <<'PY' || return 1
import importlib.util, os, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torch cuda", torch.version.cuda)
for mod in ("xdist", "pytest_timeout"):
    print(f"{mod}: {'yes' if importlib.util.find_spec(mod) else 'NO'}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}: {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
elif os.environ["DRY"] != "1":
    sys.exit("torch sees no CUDA device")
PY
  (command -v nvcc >/dev/null && nvcc --version | tail -n 2) || echo "nvcc: not on PATH"
  if [ -n "$(san_bin)" ]; then "$(san_bin)" --version | head -n 2; else echo "compute-sanitizer: not found"; fi
  echo "cores $(nproc) | $(free -g | awk '/Mem:/{print $2 " GiB RAM"}') | commit ${SQUASH_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo '<unset: pass SQUASH_COMMIT>')}"
  if [ -f "$ARCHIVE" ]; then echo "prebuilt kernels: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"; else echo "prebuilt kernels: none at $ARCHIVE"; fi
}

stage_wheels() {
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    ls /tmp/site
}

stage_build() {
  # On the GPU (torch has CUDA) the extension links the prebuilt kernels (built for 90a).
  if [ -f "$ARCHIVE" ]; then
    export SQUASH_PREBUILT_KERNELS=$ARCHIVE SQUASH_CUDA_ARCHS=90a
  elif [ "$DRY" != 1 ]; then
    echo "WARNING: no prebuilt kernels at $ARCHIVE: every kernel is compiled here (minutes)"
  fi
  # CUDAFLAGS would enter the kernels' stamp (cmake/kernels.cmake) and void the prebuilt archive.
  unset CUDAFLAGS
  MAX_JOBS=${MAX_JOBS:-16} PYTHON="$PY" bash scripts/setup.sh || return 1
  local cache
  cache=$(ext_build)CMakeCache.txt
  echo "kernels: $(grep -h '^SQUASH_KERNELS_ORIGIN' "$cache" | cut -d= -f2-) ($cache)"
  if [ "$DRY" = 1 ]; then
    # A CPU torch links no kernels: check the archive against this tree the way CMake does.
    if [ -f "$ARCHIVE" ]; then bash scripts/prebuild_kernels.sh --verify "$ARCHIVE" || return 1
    else echo "[dry run] no archive at $ARCHIVE to verify"; fi
  elif ! grep -q '^SQUASH_KERNELS_ORIGIN:INTERNAL=prebuilt' "$cache"; then
    echo "WARNING: the prebuilt kernels were not used (the CMake warning above says why): the build compiled them"
  fi
}

stage_ops() {
  "$PY" -m bench.gpu_verdict ops || would_fail "squash_ops has no CUDA ops"
}

# The bench/cpp programs: compiled (no kernels in them: they link the library) side by side with
# the build, then linked against the library the extension was built with.
BENCHES="norm_bench gemv_bench pk_bench w8a8_bench decode_bench prefill_bench"
export BENCHES
stage_cpp_compile() {
  mkdir -p "$CPPB"
  local b pids=() rc=0
  for b in $BENCHES; do
    dry nvcc -O3 -std=c++17 --expt-relaxed-constexpr --use_fast_math -gencode=arch=compute_90a,code=sm_90a \
      -Icsrc/kernels -Ibench/cpp -c "bench/cpp/$b.cu" -o "$CPPB/$b.o" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

ext_build() { ls -d build/cp3*/ 2>/dev/null | head -n 1; }  # the extension's build folder (pyproject)
kernel_lib() {  # the libsquash_kernels.a the extension linked: prebuilt, or compiled when refused
  local dir lib
  dir=$(ext_build)
  [ -n "$dir" ] || return 0
  lib=${dir}libsquash_kernels.a
  grep -q '^SQUASH_KERNELS_ORIGIN:INTERNAL=prebuilt' "${dir}CMakeCache.txt" && lib=${dir}prebuilt_kernels/libsquash_kernels.a
  [ -f "$lib" ] && echo "$lib"
}
export -f ext_build kernel_lib

cpp_link() {  # cpp_link <bench>
  local lib
  lib=$(kernel_lib)
  [ -n "$lib" ] || { would_fail "no libsquash_kernels.a under build/"; return; }
  dry nvcc -gencode=arch=compute_90a,code=sm_90a "$CPPB/$1.o" "$lib" -o "$CPPB/$1"
}
export -f cpp_link

# cpp_run <tool|-> <bench> <args...>: one bench self-check, its whole output, then its verdict.
cpp_run() {
  local tool=$1 b=$2 log rc
  shift 2
  log=$(mktemp)
  local cmd=("$CPPB/$b" "$@")
  [ "$tool" != - ] && cmd=("$(san_cmd)" --tool "$tool" --error-exitcode 1 --print-limit 50 "${cmd[@]}")
  echo "--- ${cmd[*]}"
  if [ "$DRY" = 1 ]; then echo "[dry run] ${cmd[*]}"; rm -f "$log"; return 0; fi
  timeout $((STAGE_LIMIT - 10)) "${cmd[@]}" 2>&1 | tee "$log"  # streamed: a cut-short run keeps its lines
  rc=${PIPESTATUS[0]}
  echo "--- exit $rc"
  local targs=()
  [ "$tool" != - ] && targs=(--tool "$tool")
  "$PY" -m bench.gpu_verdict cpp "$log" "${targs[@]}" && ((rc == 0))
  rc=$?
  rm -f "$log"
  return $rc
}
export -f cpp_run

stage_cpp_link() {  # $STATE/linked tells the sanitizer stages they may start
  local rc=0 b
  for b in $BENCHES; do cpp_link "$b" || rc=1; done
  echo "$rc" >"$STATE/linked"
  return $rc
}

stage_cpp() {  # every self-check of bench/cpp (gemv_bench's is its --quick spot check)
  local rc=0
  cpp_run - norm_bench --check || rc=1
  cpp_run - gemv_bench --quick || rc=1
  cpp_run - pk_bench --check || rc=1
  cpp_run - w8a8_bench --check || rc=1
  cpp_run - decode_bench --check || rc=1
  cpp_run - prefill_bench --check || rc=1
  return $rc
}

# The kernels that never ran on a GPU (issue 11): the prepacked tensor-core GEMM, W8A8, prefill
# flash attention, the changed decode kernel (C++ --quick checks), and the CUTLASS mixed-input
# GEMMs (reached only through the op: their GPU tests, small shapes under SQUASH_SANITIZE).
stage_sanitize() {  # stage_sanitize <memcheck|racecheck>: the jobs side by side, logs whole in turn
  local tool=$1 rc=0 j pids=() tmp
  tmp=$(mktemp -d)
  [ "$DRY" = 1 ] || [ -n "$(san_bin)" ] || { echo "FAIL: compute-sanitizer not found"; return 1; }
  sanitize_job() {
    case $2 in
      pk) cpp_run "$1" pk_bench --check --quick ;;
      w8a8) cpp_run "$1" w8a8_bench --check-small ;;
      decode) cpp_run "$1" decode_bench --quick ;;
      prefill) cpp_run "$1" prefill_bench --quick ;;
      cutlass)  # every config forced; not the fallback test, whose cuBLAS kernels are not ours
        local cmd=("$(san_cmd)" --tool "$1" --target-processes all --error-exitcode 1 --print-limit 50
                   "$PY" -m pytest -q -p no:cacheprovider -p bench.pytest_gpu_check -m gpu
                   -k "test_gpu_weight_only_cutlass and not refuses" tests/test_gemm.py)
        echo "--- ${cmd[*]}"
        [ "$DRY" = 1 ] && { echo "[dry run] ${cmd[*]}"; return 0; }
        SQUASH_SANITIZE=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 GPU_CHECK_STRICT=1 \
          timeout $((STAGE_LIMIT - 10)) "${cmd[@]}" 2>&1 | tee "$3.out"
        local prc=${PIPESTATUS[0]}
        echo "--- exit $prc"
        "$PY" -m bench.gpu_verdict pytest "$3.out" --tool "$1" && ((prc == 0))
        ;;
    esac
  }
  # The C++ programs must be linked first (stage cpp_link; waited for within this stage's limit).
  while [ ! -f "$STATE/linked" ]; do sleep 1; done
  [ "$(cat "$STATE/linked")" = 0 ] || echo "the bench/cpp programs did not all link: their jobs fail"
  # Side by side, each line tagged with its job, streamed into the stage's log.
  for j in pk w8a8 decode prefill cutlass; do
    { sanitize_job "$tool" "$j" "$tmp/$j" 2>&1 | sed -u "s/^/[$tool $j] /"; echo "${PIPESTATUS[0]}" >"$tmp/$j.rc"; } &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for j in pk w8a8 decode prefill cutlass; do
    [ "$(cat "$tmp/$j.rc")" = 0 ] || { echo "$tool $j: FAIL"; rc=1; }
  done
  rm -rf "$tmp"
  return $rc
}
stage_memcheck() { stage_sanitize memcheck; }
stage_racecheck() { stage_sanitize racecheck; }

stage_tests() {
  local rc=0 prc cur=$STATE/current maps=$STATE/maps
  # 1. The bad-input tests, all in one process (the 2026-11-24 SIGSEGVs killed whole workers).
  echo "--- bad-input tests, one process"
  GPU_CHECK_CURRENT=$cur GPU_CHECK_MAPS=$maps PYTHONFAULTHANDLER=1 \
    "$PY" -m pytest -q -rfE -p no:cacheprovider -p no:xdist -p bench.pytest_gpu_check -k bad_input tests
  prc=$?
  [ -f "$maps" ] && cat "$maps"
  if ((prc >= 128)); then
    rc=1
    echo "--- CRASH (exit $prc) in $(cat "$cur"): native backtrace and shared libraries"
    if command -v cuda-gdb >/dev/null; then
      timeout 120 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" \
        --args "$PY" -m pytest -q -p no:cacheprovider -p no:xdist "$(cat "$cur")"
    else
      echo "no cuda-gdb here: no native backtrace"
    fi
  elif ((prc != 0)); then
    rc=1
  fi
  # 2. Every GPU test; a timeout per test (a hung kernel fails its test, not the call); a skipped
  # GPU test fails (plugin); 8 workers: a test that crashes its worker fails, the rest run on.
  echo "--- every GPU test"
  local par=() to=()
  "$PY" -c "import xdist" 2>/dev/null && par=(-n 8)
  if "$PY" -c "import pytest_timeout" 2>/dev/null; then
    to=(--timeout "${GPU_TEST_TIMEOUT_S:-120}" --timeout-method thread)
  else
    would_fail "pytest-timeout is not installed: no per-test timeout" || rc=1
  fi
  GPU_CHECK_STRICT=$((1 - DRY)) "$PY" -m pytest -q -rfEs -p no:cacheprovider -p bench.pytest_gpu_check \
    "${par[@]}" "${to[@]}" -m gpu --junitxml="$JUNIT" tests
  prc=$?
  if [ "$DRY" = 1 ] && ((prc == 0 || prc == 5)); then prc=0; fi
  ((prc == 0)) || rc=1
  return $rc
}

# bench_suite <suite>: one suite in its own process and budget; the results merged into <stem>.json.
bench_suite() {
  local suite=$1 args=(--require-squash)
  [ "$DRY" = 1 ] && args=(--dry-run)
  "$PY" -m bench.run "${args[@]}" --suites "$suite" --budget-s $((STAGE_LIMIT - 15)) --out "$STATE/part-$suite.json"
  local rc=$?
  "$PY" -m bench.gpu_verdict merge "$OUT/$STEM.json" "$STATE"/part-*.json || rc=1
  return $rc
}
export -f stage_env stage_wheels stage_build stage_ops stage_cpp_compile stage_cpp_link stage_cpp stage_sanitize \
  stage_memcheck stage_racecheck stage_tests bench_suite

# ---- run -------------------------------------------------------------------------------------

DATE=$(date -u +%F)
SLUG=$(timeout 60 "$PY" -c 'import torch; from bench.harness import gpu_slug; print(gpu_slug(torch.cuda.get_device_name(0)))' 2>/dev/null)
[ -n "$SLUG" ] || SLUG=$([ "$DRY" = 1 ] && echo dry-run || echo unknown-gpu)
export STEM="${DATE}_${SLUG}"
if [ "$MODE" = check ]; then LOG=$OUT/${STEM}_check.log; else LOG=$OUT/$STEM.log; fi
export LOG JUNIT=$OUT/${STEM}_check.junit.xml
: >"$LOG"
tail -n +1 -F "$LOG" 2>/dev/null & TAIL=$!  # the device tool returns stdout's end: mirror the main log
echo "gpu_check $MODE: $(date -u '+%F %T') UTC, budget ${BUDGET} s, out $OUT, stem $STEM$([ "$DRY" = 1 ] && echo ', DRY RUN')" >>"$LOG"

seq_stage env 30 300 stage_env
if ls .whl/*.whl >/dev/null 2>&1 && [ "$DRY" != 1 ]; then
  seq_stage wheels 60 300 stage_wheels && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

if [ "$MODE" = check ]; then
  bg_stage cpp_compile "$OUT/${STEM}_check.cpp.log" stage_cpp_compile 200
  CC_PID=$!
  seq_stage build 150 150 stage_build
  if ! seq_stage ops 60 140 stage_ops; then
    echo "gpu_check: STOP: the CUDA ops are not registered; nothing else can be proven" >>"$LOG"
    STOP=1
  fi
  wait "$CC_PID"
  if [ -z "${STOP:-}" ]; then
    bg_stage tests "$OUT/${STEM}_check.tests.log" stage_tests 10
    P1=$!
    # The benches are linked first; the sanitizer stages wait for that, the checks follow it.
    echo "=== stages cpp_link, cpp started at +$((SECONDS - T0)) s: output in ${STEM}_check.cpp.log" >>"$LOG"
    { run_stage cpp_link "$(left 10)" "$OUT/${STEM}_check.cpp.log" stage_cpp_link ||
        { [ -f "$STATE/linked" ] || echo 1 >"$STATE/linked"; }
      run_stage cpp "$(left 10)" "$OUT/${STEM}_check.cpp.log" stage_cpp; } &
    P2=$!
    bg_stage memcheck "$OUT/${STEM}_check.memcheck.log" stage_memcheck 10
    P3=$!
    bg_stage racecheck "$OUT/${STEM}_check.racecheck.log" stage_racecheck 10
    P4=$!
    wait "$P1" "$P2" "$P3" "$P4"
  fi
else
  seq_stage build 150 170 stage_build
  if ! seq_stage ops 60 160 stage_ops; then
    echo "gpu_check: STOP: the CUDA ops are not registered; the squash records would be CPU references" >>"$LOG"
  else
    # cap and the minimum kept for each later suite: the new kernels and e2e_decode first.
    SUITES=(ceiling:15 e2e_decode:60 w4a16:45 w8a16:30 w8a8:30 attn_fwd:30 attn_decode:25 norm_quant:20 norm:20)
    for i in "${!SUITES[@]}"; do
      later=$(((${#SUITES[@]} - i - 1) * 20))
      seq_stage "bench_${SUITES[$i]%%:*}" "${SUITES[$i]##*:}" "$later" "bench_suite ${SUITES[$i]%%:*}"
    done
  fi
fi

# ---- summary ---------------------------------------------------------------------------------
{
  echo ""
  echo "=== gpu_check $MODE summary: $((SECONDS - T0)) s of the ${BUDGET} s budget$([ "$DRY" = 1 ] && echo ' (DRY RUN)') ==="
  printf '%-18s %-16s %6s %6s\n' stage status time limit
} >>"$LOG"
FAILED=${STOP:-0}
while read -r name; do
  st=MISSING secs=- limit=-
  [ -f "$STATE/$name" ] && read -r st secs limit <"$STATE/$name"
  printf '%-18s %-16s %5ss %5ss\n' "$name" "$st" "$secs" "$limit" >>"$LOG"
  [ "$st" = ok ] || FAILED=1
done <"$STATE/order"
grep -h "VERDICT FAIL\|^gpu_check: FAIL\|WARNING: the prebuilt" "$OUT"/*.log 2>/dev/null | sort -u | sed 's/^/  /' >>"$LOG"
echo "files in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')" >>"$LOG"
echo "gpu_check $MODE: exit $FAILED" >>"$LOG"
sleep 1
kill "$TAIL" 2>/dev/null
exit "$FAILED"
