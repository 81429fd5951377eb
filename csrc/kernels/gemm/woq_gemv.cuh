// Launch and dispatch of the small-M GEMV kernels (woq_gemv_kernel.cuh holds the kernels, free
// of launch syntax so scripts/emulate can run them as host code).
#pragma once
#include <cuda_runtime.h>

#include "gemm/woq_gemv_kernel.cuh"

namespace squash::gemm {

template <typename T, int BITS, int E, GemvConfig CFG>
cudaError_t launch_woq_gemv(const WoqGemmParams& p, int splits, cudaStream_t stream) {
  using Tr = GemvTraits<BITS, E, CFG>;
  auto kernel = woq_gemv_kernel<T, BITS, E, CFG>;
  if constexpr (Tr::kSmemBytes > 48 * 1024) {
    // Opt in above the 48 KB default; cheap, and per device, so set on every launch.
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
    if (e != cudaSuccess) return e;
  }
  const dim3 grid((p.N + Tr::kRowsPerBlock - 1) / Tr::kRowsPerBlock, splits);
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || splits == 1) return e;
  const int64_t total = static_cast<int64_t>(p.M) * p.N;
  const int threads = 256;
  const int blocks = static_cast<int>((total + threads - 1) / threads < 4096 ? (total + threads - 1) / threads : 4096);
  woq_splitk_reduce_kernel<T><<<blocks, threads, 0, stream>>>(p, splits);
  return cudaGetLastError();
}

// Picks the load width from K and the group, then the config: one explicit instantiation per
// (dtype, bits) in woq_gemv_<bits>_<dtype>.cu.
template <typename T, int BITS>
cudaError_t woq_gemv_dispatch(const WoqGemmParams& p, GemvConfig config, int splits,
                              cudaStream_t stream);

#define SQUASH_GEMV_CONFIG_CASE(T, BITS, E, CFG) \
  case CFG:                                      \
    return launch_woq_gemv<T, BITS, E, CFG>(p, splits, stream);

template <typename T, int BITS, int E>
cudaError_t woq_gemv_dispatch_config(const WoqGemmParams& p, GemvConfig config, int splits,
                                     cudaStream_t stream) {
  switch (config) {
    SQUASH_GEMV_CONFIG_CASE(T, BITS, E, GemvConfig::kM1)
    SQUASH_GEMV_CONFIG_CASE(T, BITS, E, GemvConfig::kM2)
    SQUASH_GEMV_CONFIG_CASE(T, BITS, E, GemvConfig::kM4)
    SQUASH_GEMV_CONFIG_CASE(T, BITS, E, GemvConfig::kM8)
    SQUASH_GEMV_CONFIG_CASE(T, BITS, E, GemvConfig::kM16)
    default:
      return cudaErrorInvalidValue;
  }
}
#undef SQUASH_GEMV_CONFIG_CASE

template <typename T, int BITS>
cudaError_t woq_gemv_dispatch(const WoqGemmParams& p, GemvConfig config, int splits,
                              cudaStream_t stream) {
  constexpr int kWide = BITS == 4 ? 32 : 16;
  if (gemv_elems_per_load(BITS, p.K, p.group) == kWide)
    return woq_gemv_dispatch_config<T, BITS, kWide>(p, config, splits, stream);
  return woq_gemv_dispatch_config<T, BITS, 8>(p, config, splits, stream);
}

}  // namespace squash::gemm

// Instantiated once each in woq_gemv_<bits>_<dtype>.cu (compile time stays bounded per file).
namespace squash::gemm {
extern template cudaError_t woq_gemv_dispatch<__half, 4>(const WoqGemmParams&, GemvConfig, int, cudaStream_t);
extern template cudaError_t woq_gemv_dispatch<__nv_bfloat16, 4>(const WoqGemmParams&, GemvConfig, int, cudaStream_t);
extern template cudaError_t woq_gemv_dispatch<__half, 8>(const WoqGemmParams&, GemvConfig, int, cudaStream_t);
extern template cudaError_t woq_gemv_dispatch<__nv_bfloat16, 8>(const WoqGemmParams&, GemvConfig, int, cudaStream_t);
}  // namespace squash::gemm
