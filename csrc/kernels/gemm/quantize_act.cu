// Host entry of quantize_activation_int8 (kernel in quantize_act_kernel.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "gemm/quantize_act_kernel.cuh"
#include "gemm/woq_gemm.h"

namespace squash::gemm {

namespace {

template <typename T>
cudaError_t launch_quant(const void* x, int64_t rows, int64_t K, int64_t ldx,
                         const float* static_scale, int8_t* q, float* scales,
                         cudaStream_t stream) {
  const bool vec = K % 8 == 0 && ldx % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(q) % 8 == 0;
  const T* xt = static_cast<const T*>(x);
  if (vec) {
    quantize_act_kernel<T, true>
        <<<static_cast<unsigned>(rows), kQuantThreads, 0, stream>>>(xt, K, ldx, static_scale, q, scales);
  } else {
    quantize_act_kernel<T, false>
        <<<static_cast<unsigned>(rows), kQuantThreads, 0, stream>>>(xt, K, ldx, static_scale, q, scales);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t quantize_activation_int8(const void* x, DType dtype, int64_t rows, int64_t K,
                                     int64_t ldx, const float* static_scale, int8_t* q,
                                     float* scales, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows < 0 || rows > 0x7FFFFFFF || K < 1 || ldx < K || x == nullptr || q == nullptr ||
      scales == nullptr)
    return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kF16:
      return launch_quant<__half>(x, rows, K, ldx, static_scale, q, scales, stream);
    case DType::kBF16:
      return launch_quant<__nv_bfloat16>(x, rows, K, ldx, static_scale, q, scales, stream);
    case DType::kF32:
      return launch_quant<float>(x, rows, K, ldx, static_scale, q, scales, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace squash::gemm
