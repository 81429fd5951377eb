#!/usr/bin/env bash
# Builds and runs the host emulation of the GEMM kernels (no GPU needed; see cuda_host_shim.h):
# gemm_emulate (canonical-layout GEMV / mma / dequantize, activation quantizer), norm_emulate (the
# norm kernels' int8 output: NaN, zero, inf and tiny rows) and pk_emulate (the prepacked
# tensor-core GEMM). `bash scripts/emulate/run.sh quick` runs a subset of gemm_emulate and
# pk_emulate (norm_emulate always runs whole, ~10 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
build() {  # build <program> <flags...>
  local prog=$1
  shift
  g++ -std=c++20 -pthread "$@" -Icsrc/kernels -Iscripts/emulate -Ibench/cpp -isystem "$CUDA_HOME/include" \
    "scripts/emulate/$prog.cpp" -o "$out/$prog"
}
# pk_emulate runs under AddressSanitizer: its cp.async copies are host memcpys from the test's
# exact-size buffers into an exact-size shared-memory buffer, so any out-of-bounds global or
# shared access of the kernel is reported.
(build gemm_emulate -O2 && build norm_emulate -O2) & gemm_pid=$!
build pk_emulate -O1 -g -fsanitize=address & pk_pid=$!
wait "$gemm_pid"
wait "$pk_pid"
status=0
for prog in gemm_emulate norm_emulate pk_emulate; do
  echo "== $prog"
  "$out/$prog" "$@" || status=1
done
exit $status
