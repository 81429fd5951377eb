// Dequantize kernels of the large-M path: canonical int4/int8 layout -> dense fp16/bf16 [N, K]
// (the binding hands the result to cuBLAS), and the scale layout kernel of the CUTLASS path. Free
// of launch syntax (scripts/emulate runs them on the host). An int4 zero point above 15 gives NaN
// weights (dequantize) or a NaN scale and zero (CUTLASS layout) for its group: gemm_common.cuh.
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
      const uint32_t z = p.zeros != nullptr ? p.zeros[si] : 8u;
      v = magic_byte<0>(static_cast<uint32_t>(nib)) - magic_zero(z);  // nib - z exactly; NaN for z > 15
    } else {
      v = static_cast<float>(static_cast<int8_t>(q[n * p.K + k]));
    }
    w[i] = Cvt<T>::from_float(v * dq_scale<T>(p, si));
  }
}

// CUTLASS's scale layout (woq_cutlass.h), one thread per (group, n): scales_t[g, n] = scales[n, g]
// as float32; zeros_t[g, n] = -zero[n, g] * that (zero 8 when absent). A zero point above 15
// makes both NaN, so every weight of the group, q * s + z', is NaN. Threads of a warp take
// consecutive n, so the writes coalesce; the reads stride by `groups` (a few hundred KB at most,
// once per call or at load).
template <typename T>
__global__ void woq_cutlass_scales_kernel(const T* scales, const uint8_t* zeros, int N, int groups,
                                          float* scales_t, float* zeros_t) {
  const int64_t total = static_cast<int64_t>(N) * groups;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t g = i / N, n = i % N;
    const int64_t src = n * groups + g;
    const uint32_t z = zeros ? zeros[src] : 8u;
    const float s = z <= kInt4MaxZero ? static_cast<float>(scales[src]) : __uint_as_float(kNaNBits);
    scales_t[i] = s;
    if (zeros_t) zeros_t[i] = -static_cast<float>(z) * s;
  }
}

}  // namespace squash::gemm
