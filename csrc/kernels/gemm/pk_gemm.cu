// Host entry points of the prepacked weight-only GEMM (pk_gemm.h): dispatch to the instantiations in pk_gemm_<mode>_<dtype>.cu, and the
// packed -> dense dequantize kernel of the large-M path.
#include <cuda_runtime.h>

#include <cstdint>

#include "gemm/pk_gemm.cuh"
#include "gemm/pk_gemm.h"

namespace squash::gemm {

cudaError_t pk_gemm(const PkGemmParams& p, PkConfig config, int splits, cudaStream_t stream) {
  if (!pk_gemm_supported(p)) return cudaErrorInvalidValue;
  const int c = static_cast<int>(config);
  if (c < 0 || c >= static_cast<int>(PkConfig::kCount) || splits < 1 || splits > 64) return cudaErrorInvalidValue;
  // Splits past the number of pipeline stages would have nothing to do.
  splits = effective_splits(splits, pk_k_stages(config, p.K, p.bits));
  if (splits > 1 && (p.workspace == nullptr || p.counters == nullptr)) return cudaErrorInvalidValue;
  const bool f16 = p.dtype == DType::kF16;
  if (p.bits == 8)
    return f16 ? pk_gemm_dispatch<__half, 8, false>(p, config, splits, stream)
               : pk_gemm_dispatch<__nv_bfloat16, 8, false>(p, config, splits, stream);
  if (p.group == p.K)  // per-channel: scales applied once, in the epilogue
    return f16 ? pk_gemm_dispatch<__half, 4, false>(p, config, splits, stream)
               : pk_gemm_dispatch<__nv_bfloat16, 4, false>(p, config, splits, stream);
  return f16 ? pk_gemm_dispatch<__half, 4, true>(p, config, splits, stream)
             : pk_gemm_dispatch<__nv_bfloat16, 4, true>(p, config, splits, stream);
}

cudaError_t pk_dequantize(const PkGemmParams& p, void* w_out, cudaStream_t stream) {
  if (!pk_weights_supported(p) || w_out == nullptr || reinterpret_cast<uintptr_t>(w_out) % 16 != 0) return cudaErrorInvalidValue;
  const int64_t work = static_cast<int64_t>(p.N / 8) * ((p.K + pack::tile_k(p.bits) - 1) / pack::tile_k(p.bits)) * 32;
  const int threads = 256;
  // Grid-stride loop: enough blocks to fill any GPU (32 per SM on 132 SMs), no more.
  const int64_t want = (work + threads - 1) / threads;
  const int blocks = static_cast<int>(want < 4224 ? want : 4224);
  const bool f16 = p.dtype == DType::kF16;
  if (p.bits == 4) {
    if (f16) pk_dequant_kernel<__half, 4><<<blocks, threads, 0, stream>>>(p, static_cast<__half*>(w_out));
    else pk_dequant_kernel<__nv_bfloat16, 4><<<blocks, threads, 0, stream>>>(p, static_cast<__nv_bfloat16*>(w_out));
  } else {
    if (f16) pk_dequant_kernel<__half, 8><<<blocks, threads, 0, stream>>>(p, static_cast<__half*>(w_out));
    else pk_dequant_kernel<__nv_bfloat16, 8><<<blocks, threads, 0, stream>>>(p, static_cast<__nv_bfloat16*>(w_out));
  }
  return cudaGetLastError();
}

}  // namespace squash::gemm
