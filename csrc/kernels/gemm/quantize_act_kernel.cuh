// Per-token int8 activation quantization kernel (quantize_activation_int8), one block per row,
// with the row rule of common/row_quant.h (shared with the CPU op, so q and scales match it bit
// for bit, NaN, inf, zero and subnormal rows included). Dynamic: pass 1 reduces absmax and "has a
// NaN" over the row, pass 2 re-reads the row (L1/L2-resident: a row is at most a few tens of KB)
// and writes q. Static: a single pass that writes q and notes NaN for the scale. Its .cu file is
// built with -ftz=false (cmake/kernels.cmake): the rule needs subnormals. Free of launch syntax.
#pragma once
#include <cstdint>

#include "common/row_quant.h"
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

// Block-wide max of v and of the NaN flag f (0 or 1), both returned to every thread.
__device__ __forceinline__ void block_max2(float& v, float& f) {
  __shared__ float warp_max[2][kQuantThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
    f = fmaxf(f, __shfl_xor_sync(0xFFFFFFFFu, f, off));
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    warp_max[0][warp] = v;
    warp_max[1][warp] = f;
  }
  __syncthreads();
  v = warp_max[0][0];
  f = warp_max[1][0];
#pragma unroll
  for (int w = 1; w < kQuantThreads / 32; ++w) {
    v = fmaxf(v, warp_max[0][w]);
    f = fmaxf(f, warp_max[1][w]);
  }
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

  // fmaxf ignores NaN (returns the other operand), as the rule's absmax does.
  float amax = 0.0f, nan = 0.0f;
  quant::RowQuant rq;
  if (static_scale != nullptr) {
    rq = quant::row_quant(quant::QuantMode::kStatic, 0.0f, *static_scale);
  } else {
    for (int64_t k = threadIdx.x * kStep; k < K; k += kQuantThreads * kStep) {
      if constexpr (VEC) {
        float v[8];
        load8<T>(xr + k, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          amax = fmaxf(amax, fabsf(v[j]));
          nan = isnan(v[j]) ? 1.0f : nan;
        }
      } else {
        const float v = Cvt<T>::to_float(xr[k]);
        amax = fmaxf(amax, fabsf(v));
        nan = isnan(v) ? 1.0f : nan;
      }
    }
    block_max2(amax, nan);
    rq = quant::row_quant(quant::QuantMode::kDynamic, amax, 0.0f);
  }

  // NaN is noted here in both modes (dynamic: already reduced, noting it again changes nothing);
  // static needs it for the scale.
  for (int64_t k = threadIdx.x * kStep; k < K; k += kQuantThreads * kStep) {
    if constexpr (VEC) {
      float v[8];
      load8<T>(xr + k, v);
      uint32_t lo = 0, hi = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        lo |= (static_cast<uint32_t>(rq.quantize(v[j])) & 0xFFu) << (8 * j);
        hi |= (static_cast<uint32_t>(rq.quantize(v[4 + j])) & 0xFFu) << (8 * j);
        nan = isnan(v[j]) || isnan(v[4 + j]) ? 1.0f : nan;
      }
      *reinterpret_cast<uint2*>(qr + k) = make_uint2(lo, hi);
    } else {
      const float v = Cvt<T>::to_float(xr[k]);
      qr[k] = rq.quantize(v);
      nan = isnan(v) ? 1.0f : nan;
    }
  }
  if (static_scale != nullptr) block_max2(amax, nan);  // for the NaN flag (amax is unused)
  if (threadIdx.x == 0) scales[row] = quant::row_scale(rq, nan > 0.0f);
}

}  // namespace squash::gemm
