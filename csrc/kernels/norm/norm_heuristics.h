// Launch heuristics of the norm kernels: pure host/device-agnostic functions of the row shape.
// Not yet tuned on a GPU: bench/cpp/norm_bench.cu --sweep prints every config per shape so the
// rule below can be replaced by measured choices (record the GPU and numbers here when it is).
#pragma once
#include <cstdint>

#include "norm_params.h"

namespace squash::norm {

// Row kernels hold nv*vec elements per thread; the register cap follows from the block size
// (65536 registers / threads): <= 16 elements per thread fit 64 registers (1024 threads), more
// need up to ~128 (256 threads). The kernel's __launch_bounds__ uses this same function.
constexpr int row_kernel_max_threads(int nv, int vec) { return nv * vec <= 16 ? 1024 : 256; }

constexpr int kFallbackThreads = 512;  // one row per block, looping over the row
constexpr int kTargetRowThreads = 128;  // preferred threads per row (4 warps) and per block

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int round_up32(int64_t n) { return static_cast<int>(ceil_div(n, 32) * 32); }

// Threads per row for nv vectors per thread, or 0 when the row does not fit that kernel.
inline int row_threads_for(int64_t nvec, int nv, int vec) {
  const int64_t t = round_up32(ceil_div(nvec, nv));
  return t <= row_kernel_max_threads(nv, vec) ? static_cast<int>(t) : 0;
}

inline void finish_row_config(NormConfig& c, int tpr) {
  c.fallback = false;
  c.threads_per_row = tpr;
  // Small rows: several rows (one warp or more each) per block so blocks are not tiny.
  c.rows_per_block = tpr < kTargetRowThreads ? kTargetRowThreads / tpr : 1;
}

inline void make_fallback_config(NormConfig& c) {
  c.nv = 0;
  c.fallback = true;
  c.threads_per_row = kFallbackThreads;
  c.rows_per_block = 1;
}

// Default choice for a row of `hidden` elements read in vectors of `vec` elements:
//  1. the fewest vectors per thread (nv in 1,2,4,8) that give <= 128 threads per row: rows up to
//     1024*vec elements (8192 bf16 at 16-byte vectors) use 4 warps or fewer per row, each thread
//     with nv independent 16-byte loads in flight (x and residual both);
//  2. else the largest nv whose block can hold the row (16384 bf16: nv 8, 256 threads);
//  3. else the L2 re-read fallback (rows beyond the register budget: > 16384 for 16-bit types).
// Untested alternative to compare in the sweep: fewer registers per thread (nv 8 takes 127)
// with more threads per row, e.g. 8192 bf16 as nv 4 x 256 threads.
inline NormConfig choose_norm_config(int64_t hidden, int vec) {
  NormConfig c;
  c.vec = vec;
  const int64_t nvec = hidden / vec;
  for (int nv = 1; nv <= 8; nv *= 2) {
    const int tpr = row_threads_for(nvec, nv, vec);
    if (tpr != 0 && tpr <= kTargetRowThreads) {
      c.nv = nv;
      finish_row_config(c, tpr);
      return c;
    }
  }
  for (int nv = 8; nv >= 1; nv /= 2) {
    const int tpr = row_threads_for(nvec, nv, vec);
    if (tpr != 0) {
      c.nv = nv;
      finish_row_config(c, tpr);
      return c;
    }
  }
  make_fallback_config(c);
  return c;
}

}  // namespace squash::norm
