#!/usr/bin/env bash
# CPU emulation of the attention kernels (see emu_shim.h): builds decode_emu.cpp and
# prefill_emu.cpp with g++ against the CUDA headers and the real kernel sources, and runs their
# check cases, the two programs side by side (~1 minute on 2 idle cores, builds included).
# Usage: bench/cpp/emu/run.sh [--all]   (--all: every decode case of decode_check.h, slower)
set -euo pipefail
cd "$(dirname "$0")/../../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
out=build/emu
mkdir -p "$out"
build() {
  g++ -std=c++20 -O2 -w -I"$CUDA_HOME/include" -Icsrc/kernels -Ibench/cpp -Ibench/cpp/emu \
    "bench/cpp/emu/$1.cpp" -o "$out/$1"
}
build decode_emu &
build prefill_emu
wait $!
"$out/decode_emu" "$@" >"$out/decode.log" 2>&1 &
decode=$!
status=0
"$out/prefill_emu" || status=1
wait $decode || status=1
cat "$out/decode.log"
exit $status
