// The int8 quantization rule of one row, in one place for every quantizer of activations: the
// CPU kernels (cpu/act_quant*, cpu/norm_rows_avx2.cpp, the scalar path in ops/norm_cpu.cpp) and
// the CUDA kernels (gemm/quantize_act_kernel.cuh, norm/norm_kernel.cuh). Torch-free; plain C++
// on the host, __host__ __device__ under nvcc, so the two devices cannot drift apart.
//
// dynamic: s = absmax / 127, inv = 127 / absmax; static: s = scale, inv = 1 / scale;
// q = clamp(rne(y * inv), -127, 127), all in IEEE float32:
// - a row holding NaN gets s = NaN (absmax ignores NaN; a NaN element gets q = 0): the NaN shows
//   downstream (a W8A8 output row becomes NaN, as in float), where a finite scale would hide it;
// - an inf in the row (dynamic) gives s = inf and inv = 0, so every q is 0 and the W8A8 output
//   row is NaN (0 * inf); static: an inf element clamps to +-127;
// - an all-zero row gets s = 0, q = 0;
// - a static scale outside (0, FLT_MAX] (0, negative, inf, NaN) gives every row s = NaN and
//   q = 0: the CPU ops refuse such a scale, the CUDA ops read it on the device without a sync,
//   so there the garbage shows as NaN instead (a W8A8 output of NaN);
// - absmax below 127 / FLT_MAX (where 127 / absmax overflows) is handled by scaling y and absmax
//   by 2^64 first, so a tiny (even subnormal) row still quantizes within half a step of y / s.
// IEEE includes subnormals: the CUDA files that use this rule are compiled with -ftz=false
// (SQUASH_IEEE_KERNELS_REGEX, cmake/kernels.cmake); --use_fast_math would otherwise flush
// subnormals, turning a tiny row into zeros. Divisions are __fdiv_rn on the device: fast math's
// '/' is an approximate reciprocal.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SQUASH_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SQUASH_HOST_DEVICE inline
#endif

namespace squash::quant {

enum class QuantMode { kNone, kDynamic, kStatic };

SQUASH_HOST_DEVICE float nan_float() { return __builtin_nanf(""); }

SQUASH_HOST_DEVICE float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// clamp(rne(v), -127, 127), NaN -> 0. Clamping first is exact (the bounds are integers) and
// keeps +-inf in range; rne = round half to even.
SQUASH_HOST_DEVICE int8_t quantize_int8(float v) {
  if (!(v == v)) return 0;
  const float c = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
#ifdef __CUDA_ARCH__
  return static_cast<int8_t>(__float2int_rn(c));
#else
  return static_cast<int8_t>(__builtin_nearbyintf(c));  // default rounding mode: half to even
#endif
}

struct RowQuant {
  float inv = 0.f;  // y is multiplied by prescale, then by inv
  float prescale = 1.f;
  float scale = 0.f;  // of a row without NaN (row_scale)
  SQUASH_HOST_DEVICE int8_t quantize(float y) const { return quantize_int8(y * prescale * inv); }
};

// absmax: the largest |y| of the row, NaN ignored (dynamic only).
SQUASH_HOST_DEVICE RowQuant row_quant(QuantMode mode, float absmax, float static_scale) {
  RowQuant r;
  if (mode == QuantMode::kStatic) {
    if (static_scale > 0.0f && static_scale <= 3.40282347e38f) {  // (0, FLT_MAX]; false for NaN
      r.scale = static_scale;
      r.inv = div_rn(1.0f, static_scale);
    } else {
      r.scale = nan_float();  // inv = 0: q = 0
    }
  } else {
    r.scale = div_rn(absmax, 127.0f);
    if (absmax > 0.0f) {
      r.inv = div_rn(127.0f, absmax);
      if (r.inv > 3.0e38f) {  // 127 / absmax overflowed or nearly: rescale (exact, a power of 2)
        r.prescale = 18446744073709551616.0f;  // 2^64
        r.inv = div_rn(127.0f, absmax * r.prescale);
      }
    }
  }
  return r;
}

// The scale stored for the row: NaN when the row holds a NaN.
SQUASH_HOST_DEVICE float row_scale(const RowQuant& r, bool has_nan) {
  return has_nan ? nan_float() : r.scale;
}

}  // namespace squash::quant
