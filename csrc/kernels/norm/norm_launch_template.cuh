// Host launchers of the norm kernels (norm_kernel.cuh, which stays free of launch syntax so that
// scripts/emulate/norm_emulate.cpp runs its kernels on the host): norm_launch_typed<T, W> picks
// the kernel for a config that norm_select_config validated. Explicitly instantiated once per
// (T, W) in norm_<types>.cu and declared in norm_dispatch.h.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "norm_dispatch.h"
#include "norm_kernel.cuh"

namespace squash::norm {

constexpr int64_t kMaxGridBlocks = 0x7fffffff;

template <typename T, typename W, int VEC, int NV>
cudaError_t launch_rows(const NormParams& p, const NormConfig& c, cudaStream_t stream) {
  using Traits = RowKernelTraits<T, W, VEC, NV>;
  const RowGeom g{static_cast<int>(p.hidden / VEC), c.threads_per_row, c.threads_per_row / 32,
                  c.rows_per_block};
  const int threads = g.tpr * g.rpb;
  if (g.tpr % 32 != 0 || threads > Traits::kMaxThreads ||
      static_cast<int64_t>(g.tpr) * NV < g.nvec || g.rpb < 1)
    return cudaErrorInvalidConfiguration;
  const int64_t blocks = std::min<int64_t>(ceil_div(p.rows, g.rpb), kMaxGridBlocks);
  norm_rows_kernel<T, W, VEC, NV><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p, g);
  return cudaGetLastError();
}

template <typename T, typename W, int VEC>
cudaError_t launch_fallback(const NormParams& p, const NormConfig& c, cudaStream_t stream) {
  const RowGeom g{static_cast<int>(p.hidden / VEC), kFallbackThreads, kFallbackThreads / 32, 1};
  if (c.threads_per_row != kFallbackThreads || c.rows_per_block != 1)
    return cudaErrorInvalidConfiguration;
  const int64_t blocks = std::min<int64_t>(p.rows, kMaxGridBlocks);
  norm_fallback_kernel<T, W, VEC>
      <<<static_cast<unsigned>(blocks), kFallbackThreads, 0, stream>>>(p, g);
  return cudaGetLastError();
}

template <typename T, typename W, int VEC>
cudaError_t launch_vec(const NormParams& p, const NormConfig& c, cudaStream_t stream) {
  if (c.fallback) return launch_fallback<T, W, VEC>(p, c, stream);
  switch (c.nv) {
    case 1: return launch_rows<T, W, VEC, 1>(p, c, stream);
    case 2: return launch_rows<T, W, VEC, 2>(p, c, stream);
    case 4: return launch_rows<T, W, VEC, 4>(p, c, stream);
    case 8: return launch_rows<T, W, VEC, 8>(p, c, stream);
    default: return cudaErrorInvalidConfiguration;
  }
}

template <typename T, typename W>
cudaError_t norm_launch_typed(const NormParams& p, const NormConfig& c, cudaStream_t stream) {
  constexpr int kMaxVec = 16 / static_cast<int>(sizeof(T));
  switch (c.vec) {
    case 8:
      if constexpr (kMaxVec >= 8) return launch_vec<T, W, 8>(p, c, stream);
      break;
    case 4: return launch_vec<T, W, 4>(p, c, stream);
    case 2: return launch_vec<T, W, 2>(p, c, stream);
    case 1: return launch_vec<T, W, 1>(p, c, stream);
    default: break;
  }
  return cudaErrorInvalidConfiguration;
}

}  // namespace squash::norm
