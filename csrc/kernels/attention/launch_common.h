// Host-side helpers of the attention launchers (decode_launch.cu, prefill_launch.cu): the
// alignment rules of their 16-byte copies and the (dtype, head dim) dispatch to the explicit
// instantiations.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "attention/dtype.h"

namespace squash::attention {

inline bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// The kernels move 8 elements (16 bytes) per access: the pointer and every leading stride
// (elements) of a [.., .., .., D] tensor must keep that alignment.
inline bool vector_aligned(const void* ptr, int64_t s0, int64_t s1, int64_t s2) {
  return aligned16(ptr) && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
}

// Returns f(T{}, std::integral_constant<int, D>{}) for the element type T of `dtype` and the
// head dim D in {64, 128, 256}; cudaErrorInvalidValue for any other head dim.
template <typename F>
cudaError_t dispatch_dtype_head_dim(AttentionDtype dtype, int head_dim, F&& f) {
  auto by_dim = [&](auto t) -> cudaError_t {
    switch (head_dim) {
      case 64: return f(t, std::integral_constant<int, 64>{});
      case 128: return f(t, std::integral_constant<int, 128>{});
      case 256: return f(t, std::integral_constant<int, 256>{});
      default: return cudaErrorInvalidValue;
    }
  };
  switch (dtype) {
    case AttentionDtype::kFloat16: return by_dim(__half{});
    case AttentionDtype::kBFloat16: return by_dim(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace squash::attention
