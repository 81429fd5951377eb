#!/usr/bin/env bash
# Builds the torch-free CUDA kernel library (CMake target squash_kernels, the extension's own
# flags) on this machine, without torch, into one xz archive that the lent GPU machine links
# instead of compiling the kernels (CMake: SQUASH_PREBUILT_KERNELS=<archive>):
#
#   bash scripts/prebuild_kernels.sh            # SQUASH_CUDA_ARCHS (default 90a: the lent H100/H200)
#   -> .prebuilt/squash_kernels-<archs>.tar.xz  = libsquash_kernels.a + squash_kernels.stamp
#   bash scripts/prebuild_kernels.sh --verify [ARCHIVE]
#                                               # does ARCHIVE match this tree? (compiles nothing)
#
# The stamp (cmake/kernels.cmake) holds a hash of the kernel sources, the flags, the archs, the
# nvcc release and the CUTLASS version; a build whose stamp differs compiles the kernels instead.
# MAX_JOBS compile jobs (default 1: the CUTLASS 3.x files need up to 4 GB each, BUILD_NOTES).
# Needs nvcc, CMake >= 3.26, ninja and third_party/cutlass (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${SQUASH_CUDA_ARCHS:-90a}
tag=${ARCHS//;/+}
B=build/prebuilt-$tag
OUT_FILE=.prebuilt/squash_kernels-$tag.tar.xz
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
[ -d third_party/cutlass/include ] || { echo "prebuild_kernels: no third_party/cutlass; run scripts/setup.sh" >&2; exit 1; }
mkdir -p build

verify() {  # verify <archive>: CMake's own check (cmake/kernels.cmake) in a configure-only build
  local log=build/prebuilt-verify.log rc=0
  cmake -S . -B build/prebuilt-verify -G Ninja -DSQUASH_KERNELS_ONLY=ON -DCMAKE_BUILD_TYPE=Release \
    "-DSQUASH_CUDA_ARCHS=$ARCHS" "-DSQUASH_PREBUILT_KERNELS=$(realpath "$1")" >"$log" 2>&1 || rc=$?
  grep -A 12 "squash_ops" "$log"
  return $rc
}
if [ "${1:-}" = --verify ]; then
  verify "${2:-$OUT_FILE}"
  exit
fi

start=$SECONDS
cmake -S . -B "$B" -G Ninja -DSQUASH_KERNELS_ONLY=ON -DCMAKE_BUILD_TYPE=Release "-DSQUASH_CUDA_ARCHS=$ARCHS" >"$B.configure.log" 2>&1 ||
  { cat "$B.configure.log"; exit 1; }
cp "$B/squash_kernels.stamp" "$B/stamp.before"
# ninja prints one line per finished file, so a long build shows its progress.
cmake --build "$B" --target squash_kernels -j "${MAX_JOBS:-1}"
# The stamp is written at configure time: configure again and insist that the sources it hashed
# are still the ones compiled (an edit during a long build would otherwise be stamped wrongly).
cmake "$B" >/dev/null
cmp -s "$B/stamp.before" "$B/squash_kernels.stamp" ||
  { echo "prebuild_kernels: kernel sources changed during the build; run it again" >&2; exit 1; }
build_s=$((SECONDS - start))

mkdir -p .prebuilt
# -T1: one core, like the build.
tar -C "$B" -cf - libsquash_kernels.a squash_kernels.stamp | xz -9 -T1 >"$OUT_FILE.tmp"
mv "$OUT_FILE.tmp" "$OUT_FILE"
echo "prebuild_kernels: $(ar t "$B/libsquash_kernels.a" | wc -l) objects, archs $ARCHS, built in ${build_s} s"
echo "prebuild_kernels: libsquash_kernels.a $(du -h "$B/libsquash_kernels.a" | cut -f1) -> $OUT_FILE $(du -h "$OUT_FILE" | cut -f1)"
sed 's/^/  stamp: /' "$B/squash_kernels.stamp"
verify "$OUT_FILE"
