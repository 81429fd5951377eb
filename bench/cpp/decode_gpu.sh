#!/usr/bin/env bash
# One call on the GPU machine for attention_decode's torch-free checks, in the order that makes a
# first failure cheapest: build (parallel nvcc), correctness vs a float64 reference, then
# compute-sanitizer memcheck + racecheck on the quick subset, then the GB/s sweep.
# Usage: bench/cpp/decode_gpu.sh [outdir]   (logs go to outdir, default $OUT or build/)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-build}}
mkdir -p build/decode_obj "$out"
NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null || NVCC=/usr/local/cuda/bin/nvcc
arch=${DECODE_ARCH:-90a}
flags=(-std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr
       "-gencode=arch=compute_$arch,code=sm_$arch" -Icsrc/kernels -Ibench/cpp)
srcs=(bench/cpp/decode_bench.cu csrc/kernels/attention/decode_launch.cu csrc/kernels/attention/decode_hd*.cu)
printf '%s\n' "${srcs[@]}" | xargs -P 8 -I{} sh -c \
  "\"$NVCC\" ${flags[*]} -c {} -o build/decode_obj/\$(basename {} .cu).o" || { echo "decode_gpu: build FAILED"; exit 1; }
"$NVCC" "-gencode=arch=compute_$arch,code=sm_$arch" build/decode_obj/*.o -o build/decode_bench || exit 1
echo "decode_gpu: built build/decode_bench"
build/decode_bench --check 2>&1 | tee "$out/decode_check.log"
check=$?
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  "$SAN" --tool $tool --error-exitcode 9 build/decode_bench --quick \
    >"$out/decode_$tool.log" 2>&1
  echo "decode_gpu: compute-sanitizer $tool rc=$? ($(tail -1 "$out/decode_$tool.log"))"
done
[ $check -eq 0 ] || { echo "decode_gpu: --check FAILED, skipping the benchmark"; exit 1; }
build/decode_bench --bench --sweep 2>&1 | tee "$out/decode_bench.log"
