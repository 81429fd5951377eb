#!/usr/bin/env bash
# Compile-checks every torch-free kernel file in csrc/kernels with nvcc, for sm_80 and sm_90a
# (a file named *_sm90.cu only for sm_90a), so kernels are proven to build on machines without
# a GPU. Runs after scripts/setup.sh (which fills third_party/cutlass).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc; }
if ! command -v "$NVCC" >/dev/null; then
  echo "check_kernels: no nvcc on this machine; skipping the kernel compile check" >&2
  exit 0
fi
mapfile -t files < <(find csrc/kernels -name '*.cu' | sort)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0
for f in "${files[@]}"; do
  archs="80 90a"
  [[ "$f" == *_sm90.cu ]] && archs="90a"
  for a in $archs; do
    start=$(date +%s)
    # -DNDEBUG like the Release build: with CUTLASS's device asserts left in, ptxas serializes
    # wgmma across the __assertfail call (warning C7510) in code that never ships that way.
    if "$NVCC" -std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr -Icsrc/kernels -isystem third_party/cutlass/include \
         -gencode="arch=compute_$a,code=sm_$a" -c "$f" -o "$tmp/out.o" 2>"$tmp/err"; then
      echo "check_kernels: ok   sm_$a $f ($(( $(date +%s) - start )) s)"
    else
      echo "check_kernels: FAIL sm_$a $f"; cat "$tmp/err"; status=1
    fi
  done
done
echo "check_kernels: ${#files[@]} kernel files checked"
exit $status
