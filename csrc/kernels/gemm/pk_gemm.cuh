// Launch and dispatch of the prepacked tensor-core GEMM (kernel in pk_gemm_kernel.cuh).
#pragma once
#include <cuda_runtime.h>

#include "gemm/pk_gemm_kernel.cuh"

namespace squash::gemm {

template <typename T, int BITS, bool GROUPED, PkConfig CFG>
cudaError_t launch_pk_gemm(const PkGemmParams& p, int splits, cudaStream_t stream) {
  using Tr = PkTraits<BITS, CFG>;
  const int rows = p.M < Tr::kMaxM ? p.M : Tr::kMaxM;
  const int gps = GROUPED ? Tr::kTK / p.group : 0;
  const size_t smem = Tr::smem_bytes(rows, gps, BITS == 4 && p.zeros != nullptr);
  auto* kernel = &pk_gemm_kernel<T, BITS, GROUPED, CFG>;
  if (smem > 48 * 1024) {
    // Opt-in above 48 KB (largest case: pk_m16_n16 at 16 tokens, 6 stages, ~128 KB).
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid((p.M + Tr::kMaxM - 1) / Tr::kMaxM, (p.N / pack::kTileN + Tr::kTilesN - 1) / Tr::kTilesN,
                  splits);
  kernel<<<grid, Tr::kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

// One explicit instantiation per (dtype, bits, scale mode) in pk_gemm_<mode>_<dtype>.cu.
template <typename T, int BITS, bool GROUPED>
cudaError_t pk_gemm_dispatch(const PkGemmParams& p, PkConfig config, int splits, cudaStream_t stream) {
  switch (config) {
    case PkConfig::kM16N16: return launch_pk_gemm<T, BITS, GROUPED, PkConfig::kM16N16>(p, splits, stream);
    case PkConfig::kM16N32: return launch_pk_gemm<T, BITS, GROUPED, PkConfig::kM16N32>(p, splits, stream);
    case PkConfig::kM16N64: return launch_pk_gemm<T, BITS, GROUPED, PkConfig::kM16N64>(p, splits, stream);
    case PkConfig::kM32N64: return launch_pk_gemm<T, BITS, GROUPED, PkConfig::kM32N64>(p, splits, stream);
    case PkConfig::kM64N128: return launch_pk_gemm<T, BITS, GROUPED, PkConfig::kM64N128>(p, splits, stream);
    default: return cudaErrorInvalidValue;
  }
}

#define SQUASH_PK_DISPATCH(T, BITS, GROUPED) \
  cudaError_t pk_gemm_dispatch<T, BITS, GROUPED>(const PkGemmParams&, PkConfig, int, cudaStream_t)
extern template SQUASH_PK_DISPATCH(__half, 4, true);
extern template SQUASH_PK_DISPATCH(__nv_bfloat16, 4, true);
extern template SQUASH_PK_DISPATCH(__half, 4, false);
extern template SQUASH_PK_DISPATCH(__nv_bfloat16, 4, false);
extern template SQUASH_PK_DISPATCH(__half, 8, false);
extern template SQUASH_PK_DISPATCH(__nv_bfloat16, 8, false);

}  // namespace squash::gemm
