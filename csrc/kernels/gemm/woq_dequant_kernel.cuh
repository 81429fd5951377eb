// Dequantize kernels of the large-M path: canonical int4/int8 layout -> dense fp16/bf16 [N, K]
// (the binding hands the result to cuBLAS). Free of launch syntax (scripts/emulate runs it on the
// host).
#pragma once
#include <cstdint>
#include <cstring>

#include "gemm/gemm_common.cuh"
#include "gemm/woq_gemm.h"

namespace squash::gemm {

// Dequantize: w[n, k] = round_to_T((q - z) * s), computed in fp32 like the CPU reference.

template <typename T>
__device__ __forceinline__ float dq_scale(const WoqGemmParams& p, int64_t i) {
  return p.scales_f32 ? __ldg(static_cast<const float*>(p.scales) + i)
                      : Cvt<T>::to_float(static_cast<const T*>(p.scales)[i]);
}

// Eight consecutive weights per thread (K % 8 == 0, group % 8 == 0, so they share one group):
// one 4-byte (int4) or 8-byte (int8) load, one 16-byte store.
template <typename T, int BITS>
__global__ void woq_dequant_vec8_kernel(const WoqGemmParams p, T* __restrict__ w) {
  const int64_t per_row = p.K / 8;
  const int64_t total = static_cast<int64_t>(p.N) * per_row;
  const int groups = p.K / p.group;
  const uint8_t* __restrict__ q = static_cast<const uint8_t*>(p.qweight);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / per_row;
    const int k = static_cast<int>(i - n * per_row) * 8;
    const int64_t si = n * groups + k / p.group;
    const float s = dq_scale<T>(p, si);
    float f[8];
    if constexpr (BITS == 4) {
      const uint32_t word = __ldg(reinterpret_cast<const unsigned int*>(q + n * (p.K / 2) + k / 2));
      const uint32_t z = p.zeros != nullptr ? __ldg(p.zeros + si) : 8u;
      dequant_int4_word(word, magic_zero(z), f);
    } else {
      const uint2 words = __ldg(reinterpret_cast<const uint2*>(q + n * p.K + k));
      float a[4], b[4];
      dequant_int8_word(words.x, kMagic + 128.0f, a);
      dequant_int8_word(words.y, kMagic + 128.0f, b);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        f[j] = a[j];
        f[4 + j] = b[j];
      }
    }
    alignas(16) T out[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = Cvt<T>::from_float(f[j] * s);
    uint4 packed;
    std::memcpy(&packed, out, sizeof(packed));  // not a pointer cast: strict aliasing
    *reinterpret_cast<uint4*>(w + n * p.K + k) = packed;
  }
}

// Any shape the format allows (int4: K even; int8: any K): one weight per thread.
template <typename T, int BITS>
__global__ void woq_dequant_scalar_kernel(const WoqGemmParams p, T* __restrict__ w) {
  const int64_t total = static_cast<int64_t>(p.N) * p.K;
  const int groups = p.K / p.group;
  const uint8_t* __restrict__ q = static_cast<const uint8_t*>(p.qweight);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / p.K;
    const int k = static_cast<int>(i - n * p.K);
    const int64_t si = n * groups + k / p.group;
    float v;
    if constexpr (BITS == 4) {
      const uint32_t byte = q[n * (p.K / 2) + k / 2];
      const int nib = (k & 1) ? static_cast<int>(byte >> 4) : static_cast<int>(byte & 0xF);
      const int z = p.zeros != nullptr ? static_cast<int>(p.zeros[si]) : 8;
      v = static_cast<float>(nib - z);
    } else {
      v = static_cast<float>(static_cast<int8_t>(q[n * p.K + k]));
    }
    w[i] = Cvt<T>::from_float(v * dq_scale<T>(p, si));
  }
}

}  // namespace squash::gemm
