#!/usr/bin/env bash
# CPU emulation of the attention_decode kernels (see decode_emu.cpp): makes a host-compilable copy
# of csrc/kernels/attention/decode_kernel.cuh (cp.async -> emulated copies, the launch code cut),
# builds it with g++ against the CUDA headers and runs the check cases (~40 s on 2 cores; --all:
# every case of decode_check.h, slower).
# Usage: bench/cpp/emu/run.sh [--all]   (default: the quick subset of decode_check.h)
set -euo pipefail
cd "$(dirname "$0")/../../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
out=build/decode_emu
mkdir -p "$out"
python3 - "$out/kernel_emu.h" <<'PY'
import sys
s = open("csrc/kernels/attention/decode_kernel.cuh").read()
a, b = s.index("// ---- cp.async"), s.index("}  // namespace decode_detail")
s = s[:a] + """inline void cp_async_16(void* smem, const void* gmem, bool valid) { emu::cp_async(smem, gmem, valid); }
inline void cp_async_commit() { emu::commit(); }
template <int N> inline void cp_async_wait() { emu::wait_group(N); }
inline void pdl_launch_dependents() {}
inline void pdl_wait() {}
""" + s[b:]
s = s[:s.index("// Host side:")] + "}  // namespace squash::attention\n"
assert "#include <cuda_runtime.h>" in s
s = s.replace("#include <cuda_runtime.h>", '#include "emu_shim.h"')
open(sys.argv[1], "w").write(s)
PY
g++ -std=c++20 -O1 -w -I"$CUDA_HOME/include" -Icsrc/kernels -Ibench/cpp -Ibench/cpp/emu -I"$out" \
  bench/cpp/emu/decode_emu.cpp -o "$out/decode_emu"
"$out/decode_emu" "$@"
