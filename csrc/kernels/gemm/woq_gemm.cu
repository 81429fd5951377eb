// Host entry points of the weight-only GEMM (woq_gemm.h): argument checks and dispatch of the
// small-M GEMV (kernels instantiated in woq_gemv_<bits>_<dtype>.cu), the split-K workspace size,
// and the dequantize kernels of the large-M path (canonical layout -> dense fp16/bf16 [N, K],
// which the binding hands to cuBLAS).
#include <cuda_runtime.h>

#include <cstdint>

#include "gemm/gemm_common.cuh"
#include "gemm/woq_gemm.h"
#include "gemm/woq_dequant_kernel.cuh"
#include "gemm/woq_gemv.cuh"
#include "gemm/woq_mma.cuh"

namespace squash::gemm {

namespace {

bool aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

bool valid_dtype(DType d) { return d == DType::kF16 || d == DType::kBF16; }

}  // namespace

bool woq_gemv_supported(const WoqGemmParams& p) {
  if (p.bits != 4 && p.bits != 8) return false;
  if (!valid_dtype(p.dtype)) return false;
  if (p.M < 1 || p.M > kGemvMaxM || p.N < 1 || p.K < 8) return false;
  if (p.K % 8 != 0 || p.group < 8 || p.group % 8 != 0 || p.K % p.group != 0) return false;
  // x is staged 4 elements (8 bytes) at a time; the widest weight load is 16 bytes.
  if (!aligned(p.x, 8) || p.ldx < p.K || p.ldx % 4 != 0) return false;
  if (!aligned(p.qweight, 16)) return false;
  if (p.ldo < p.N || p.out == nullptr || p.scales == nullptr) return false;
  return true;
}

size_t woq_gemv_workspace_bytes(int M, int N, int splits) {
  return splits > 1 ? static_cast<size_t>(splits) * M * N * sizeof(float) : 0;
}

cudaError_t woq_gemv(const WoqGemmParams& p, GemvConfig config, int splits, cudaStream_t stream) {
  if (!woq_gemv_supported(p)) return cudaErrorInvalidValue;
  const int c = static_cast<int>(config);
  if (c < 0 || c >= static_cast<int>(GemvConfig::kCount)) return cudaErrorInvalidValue;
  if (p.M > gemv_config_info(config).max_m) return cudaErrorInvalidValue;
  if (splits < 1 || splits > 64) return cudaErrorInvalidValue;
  if (splits > 1 && p.workspace == nullptr) return cudaErrorInvalidValue;
  if (p.bits == 4) {
    return p.dtype == DType::kF16 ? woq_gemv_dispatch<__half, 4>(p, config, splits, stream)
                                  : woq_gemv_dispatch<__nv_bfloat16, 4>(p, config, splits, stream);
  }
  return p.dtype == DType::kF16 ? woq_gemv_dispatch<__half, 8>(p, config, splits, stream)
                                : woq_gemv_dispatch<__nv_bfloat16, 8>(p, config, splits, stream);
}

bool woq_mma_supported(const WoqGemmParams& p) {
  if (p.bits != 4 && p.bits != 8) return false;
  if (!valid_dtype(p.dtype)) return false;
  if (p.M < 1 || p.M > kMmaMaxM || p.N < 1 || p.K < 1) return false;
  const int kb = mma_scale_block(p.bits);
  if (p.K % kb != 0 || p.group < kb || p.group % kb != 0 || p.K % p.group != 0) return false;
  // x is staged 8 elements (16 bytes) at a time; weights are loaded 16 bytes at a time.
  if (!aligned(p.x, 16) || p.ldx < p.K || p.ldx % 8 != 0) return false;
  if (!aligned(p.qweight, 16)) return false;
  if (p.ldo < p.N || p.out == nullptr || p.scales == nullptr) return false;
  return true;
}

cudaError_t woq_mma(const WoqGemmParams& p, MmaConfig config, int splits, cudaStream_t stream) {
  if (!woq_mma_supported(p)) return cudaErrorInvalidValue;
  const int c = static_cast<int>(config);
  if (c < 0 || c >= static_cast<int>(MmaConfig::kCount)) return cudaErrorInvalidValue;
  if (p.M > mma_config_info(config).max_m) return cudaErrorInvalidValue;
  if (splits < 1 || splits > 64) return cudaErrorInvalidValue;
  if (splits > 1 && p.workspace == nullptr) return cudaErrorInvalidValue;
  if (p.bits == 4) {
    return p.dtype == DType::kF16 ? woq_mma_dispatch<__half, 4>(p, config, splits, stream)
                                  : woq_mma_dispatch<__nv_bfloat16, 4>(p, config, splits, stream);
  }
  return p.dtype == DType::kF16 ? woq_mma_dispatch<__half, 8>(p, config, splits, stream)
                                : woq_mma_dispatch<__nv_bfloat16, 8>(p, config, splits, stream);
}

template <typename T, int BITS>
cudaError_t launch_dequant(const WoqGemmParams& p, void* w_out, cudaStream_t stream) {
  const bool vec = p.K % 8 == 0 && p.group % 8 == 0 && aligned(p.qweight, 8) && aligned(w_out, 16);
  const int64_t work = static_cast<int64_t>(p.N) * (vec ? p.K / 8 : p.K);
  const int threads = 256;
  // Grid-stride loops: enough blocks to fill any GPU (32 per SM on 132 SMs), no more.
  const int64_t want = (work + threads - 1) / threads;
  const int blocks = static_cast<int>(want < 4224 ? want : 4224);
  if (vec) {
    woq_dequant_vec8_kernel<T, BITS><<<blocks, threads, 0, stream>>>(p, static_cast<T*>(w_out));
  } else {
    woq_dequant_scalar_kernel<T, BITS><<<blocks, threads, 0, stream>>>(p, static_cast<T*>(w_out));
  }
  return cudaGetLastError();
}

cudaError_t woq_dequantize(const WoqGemmParams& p, void* w_out, cudaStream_t stream) {
  if (p.bits != 4 && p.bits != 8) return cudaErrorInvalidValue;
  if (!valid_dtype(p.dtype) || p.N < 1 || p.K < 1 || p.group < 1 || p.K % p.group != 0)
    return cudaErrorInvalidValue;
  if (p.bits == 4 && p.K % 2 != 0) return cudaErrorInvalidValue;
  if (p.qweight == nullptr || p.scales == nullptr || w_out == nullptr) return cudaErrorInvalidValue;
  if (p.bits == 4) {
    return p.dtype == DType::kF16 ? launch_dequant<__half, 4>(p, w_out, stream)
                                  : launch_dequant<__nv_bfloat16, 4>(p, w_out, stream);
  }
  return p.dtype == DType::kF16 ? launch_dequant<__half, 8>(p, w_out, stream)
                                : launch_dequant<__nv_bfloat16, 8>(p, w_out, stream);
}

}  // namespace squash::gemm
