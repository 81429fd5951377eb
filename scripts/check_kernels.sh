#!/usr/bin/env bash
# Compile-checks every torch-free kernel file in csrc/kernels with nvcc, for sm_80 and sm_90a
# (a file named *_sm90.cu only for sm_90a), so kernels are proven to build on machines without
# a GPU. Runs after scripts/setup.sh (which fills third_party/cutlass). One nvcc call per file
# covers all its archs (the host side and CUTLASS's templates are parsed once), and files run
# JOBS at a time (default: all cores): the CUTLASS 3.x files take minutes each on 2 cores.
# Usage: scripts/check_kernels.sh [FILE.cu ...]   (default: every .cu file under csrc/kernels)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc; }
if ! command -v "$NVCC" >/dev/null; then
  echo "check_kernels: no nvcc on this machine; skipping the kernel compile check" >&2
  exit 0
fi
export NVCC
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export TMP_OUT=$tmp

check_one() {
  local f=$1 gencodes=() start out
  local archs="80 90a"
  [[ "$f" == *_sm90.cu ]] && archs="90a"
  for a in $archs; do gencodes+=("-gencode=arch=compute_$a,code=sm_$a"); done
  out="$TMP_OUT/$(echo "$f" | tr / _)"
  start=$(date +%s)
  if "$NVCC" -std=c++17 -O3 --expt-relaxed-constexpr -Icsrc/kernels -isystem third_party/cutlass/include \
       "${gencodes[@]}" -c "$f" -o "$out.o" 2>"$out.err"; then
    echo "check_kernels: ok   sm_${archs// /+sm_} $f ($(( $(date +%s) - start )) s)"
  else
    echo "check_kernels: FAIL sm_${archs// /+sm_} $f"; cat "$out.err"; return 1
  fi
}
export -f check_one

start=$(date +%s)
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find csrc/kernels -name '*.cu' | sort); fi
status=0
printf '%s\n' "${files[@]}" | xargs -P "${JOBS:-$(nproc)}" -I{} bash -c 'check_one "$1"' _ {} || status=1
echo "check_kernels: ${#files[@]} kernel files checked in $(( $(date +%s) - start )) s"
exit $status
