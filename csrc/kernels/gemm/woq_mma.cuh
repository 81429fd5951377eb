// Launch and dispatch of the tensor-core weight-only GEMM (kernel in woq_mma_kernel.cuh).
#pragma once
#include <cuda_runtime.h>

#include "gemm/woq_gemv_kernel.cuh"  // woq_splitk_reduce_kernel
#include "gemm/woq_mma_kernel.cuh"

namespace squash::gemm {

template <typename T, int BITS, MmaConfig CFG>
cudaError_t launch_woq_mma(const WoqGemmParams& p, int splits, cudaStream_t stream) {
  using Tr = MmaTraits<BITS, CFG>;
  const dim3 grid((p.N + Tr::kRowsPerBlock - 1) / Tr::kRowsPerBlock, splits);
  woq_mma_kernel<T, BITS, CFG><<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || splits == 1) return e;
  const int64_t total = static_cast<int64_t>(p.M) * p.N;
  const int64_t want = (total + 255) / 256;
  woq_splitk_reduce_kernel<T><<<static_cast<int>(want < 4096 ? want : 4096), 256, 0, stream>>>(p, splits);
  return cudaGetLastError();
}

// One explicit instantiation per (dtype, bits) in woq_mma_<bits>_<dtype>.cu.
template <typename T, int BITS>
cudaError_t woq_mma_dispatch(const WoqGemmParams& p, MmaConfig config, int splits,
                             cudaStream_t stream) {
  switch (config) {
    case MmaConfig::kM8: return launch_woq_mma<T, BITS, MmaConfig::kM8>(p, splits, stream);
    case MmaConfig::kM16: return launch_woq_mma<T, BITS, MmaConfig::kM16>(p, splits, stream);
    case MmaConfig::kM32: return launch_woq_mma<T, BITS, MmaConfig::kM32>(p, splits, stream);
    case MmaConfig::kM64: return launch_woq_mma<T, BITS, MmaConfig::kM64>(p, splits, stream);
    default: return cudaErrorInvalidValue;
  }
}

extern template cudaError_t woq_mma_dispatch<__half, 4>(const WoqGemmParams&, MmaConfig, int, cudaStream_t);
extern template cudaError_t woq_mma_dispatch<__nv_bfloat16, 4>(const WoqGemmParams&, MmaConfig, int, cudaStream_t);
extern template cudaError_t woq_mma_dispatch<__half, 8>(const WoqGemmParams&, MmaConfig, int, cudaStream_t);
extern template cudaError_t woq_mma_dispatch<__nv_bfloat16, 8>(const WoqGemmParams&, MmaConfig, int, cudaStream_t);

}  // namespace squash::gemm
