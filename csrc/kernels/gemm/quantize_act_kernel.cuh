// Per-token int8 activation quantization kernel (quantize_activation_int8), one block per row.
// Dynamic: pass 1 reduces absmax over the row, pass 2 re-reads the row (L1/L2-resident: a row is
// at most a few tens of KB) and writes q. Static: a single pass with inv = 1 / scale.
// Divisions use __fdiv_rn: the library builds with --use_fast_math, whose default '/' is an
// approximate reciprocal, and the contract is IEEE 127 / absmax and absmax / 127 (what the CPU
// reference computes), so q matches it exactly. Free of launch syntax.
#pragma once
#include <cstdint>

#include "gemm/gemm_common.cuh"

namespace squash::gemm {

constexpr int kQuantThreads = 128;

// 8 consecutive elements (16-byte aligned) -> fp32.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]);

template <>
__device__ __forceinline__ void load8<__half>(const __half* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = half2_bits_to_float2(words[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

template <>
__device__ __forceinline__ void load8<__nv_bfloat16>(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(words[i] << 16);
    v[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
  }
}

template <>
__device__ __forceinline__ void load8<float>(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ int quant_one(float v, float inv) {
  // clamp then round == round then clamp (the bounds are integers); rn = half to even.
  return __float2int_rn(fminf(fmaxf(v * inv, -127.0f), 127.0f));
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float warp_max[kQuantThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  float r = warp_max[0];
#pragma unroll
  for (int w = 1; w < kQuantThreads / 32; ++w) r = fmaxf(r, warp_max[w]);
  return r;
}

// VEC: K % 8 == 0, ldx % 8 == 0, x 16-byte aligned, q 8-byte aligned: 8 elements per step.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_act_kernel(const T* __restrict__ x, int64_t K, int64_t ldx,
                        const float* __restrict__ static_scale, int8_t* __restrict__ q,
                        float* __restrict__ scales) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * ldx;
  int8_t* qr = q + row * K;
  constexpr int kStep = VEC ? 8 : 1;

  float s, inv;
  if (static_scale != nullptr) {
    s = *static_scale;
    inv = __fdiv_rn(1.0f, s);
  } else {
    float amax = 0.0f;
    for (int64_t k = threadIdx.x * kStep; k < K; k += kQuantThreads * kStep) {
      if constexpr (VEC) {
        float v[8];
        load8<T>(xr + k, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
      } else {
        amax = fmaxf(amax, fabsf(Cvt<T>::to_float(xr[k])));
      }
    }
    amax = block_max(amax);
    s = __fdiv_rn(amax, 127.0f);
    inv = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
  }

  for (int64_t k = threadIdx.x * kStep; k < K; k += kQuantThreads * kStep) {
    if constexpr (VEC) {
      float v[8];
      load8<T>(xr + k, v);
      uint32_t lo = 0, hi = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        lo |= (static_cast<uint32_t>(quant_one(v[j], inv)) & 0xFFu) << (8 * j);
        hi |= (static_cast<uint32_t>(quant_one(v[4 + j], inv)) & 0xFFu) << (8 * j);
      }
      *reinterpret_cast<uint2*>(qr + k) = make_uint2(lo, hi);
    } else {
      qr[k] = static_cast<int8_t>(quant_one(Cvt<T>::to_float(xr[k]), inv));
    }
  }
  if (threadIdx.x == 0) scales[row] = s;
}

}  // namespace squash::gemm
