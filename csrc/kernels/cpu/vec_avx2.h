// AVX2 helpers shared by the *_avx2.cpp kernels (include only from files built with -mavx2
// -mfma -mf16c): 8 floats to / from the storage dtypes, with the rounding of convert.h.
#pragma once
#include <immintrin.h>

#include "cpu/convert.h"

namespace squash::cpu_kernels::avx2 {

// bf16 of 8 floats, round to nearest even, NaN -> 0x7fc0: bf16_from_float, 8 lanes at a time.
inline __m128i bf16x8(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
  // packus works within 128-bit lanes: lanes 0-3 come from the low half, 4-7 from the high half.
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

// The largest of the 8 lanes.
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp of 8 lanes for x <= 0 (softmax's exp(s - max)): Cephes' expf (range reduction by ln 2 in
// two parts, degree-5 polynomial, <= 2 ulp against the float64 exp); x < -87.3 (where exp(x)
// leaves the normal floats) gives 0, NaN stays NaN.
inline __m256 exp8_nonpositive(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(lo, x);  // max_ps returns its second operand when one is NaN: NaN stays
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.f));
  // 2^n for n in [-126, 0]: the biased exponent n + 127 in [1, 127] is a normal float.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// The sum of the 8 lanes, pairwise.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 elements of type t at p, as float32.
inline __m256 load8(Dtype t, const void* p) {
  switch (t) {
    case Dtype::kF16: return _mm256_cvtph_ps(_mm_loadu_si128(static_cast<const __m128i*>(p)));
    case Dtype::kBF16:
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p))), 16));
    default: return _mm256_loadu_ps(static_cast<const float*>(p));
  }
}

// 8 floats rounded once to type t (round to nearest even), stored at p.
inline void store8(Dtype t, void* p, __m256 v) {
  switch (t) {
    case Dtype::kF16:
      _mm_storeu_si128(static_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      break;
    case Dtype::kBF16: _mm_storeu_si128(static_cast<__m128i*>(p), bf16x8(v)); break;
    default: _mm256_storeu_ps(static_cast<float*>(p), v); break;
  }
}

// v rounded to type t and back to float32 (what a store + load of t gives).
inline __m256 round_to(Dtype t, __m256 v) {
  switch (t) {
    case Dtype::kF16: return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    case Dtype::kBF16:
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bf16x8(v)), 16));
    default: return v;
  }
}

inline size_t dtype_size(Dtype t) { return t == Dtype::kF32 ? 4 : 2; }

inline const void* offset(const void* p, Dtype t, int64_t i) {
  return static_cast<const char*>(p) + i * static_cast<int64_t>(dtype_size(t));
}
inline void* offset(void* p, Dtype t, int64_t i) { return static_cast<char*>(p) + i * static_cast<int64_t>(dtype_size(t)); }

// q[i] = clamp(rne(v[i]), -127, 127) for 8 lanes, NaN -> 0, as 8 int8 in the low 64 bits.
inline __m128i quantize8(__m256 v) {
  __m256 r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
  r = _mm256_and_ps(r, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN lanes -> +0
  const __m256i i32 = _mm256_cvtps_epi32(r);
  const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
  return _mm_packs_epi16(i16, i16);
}

}  // namespace squash::cpu_kernels::avx2
