// AVX2 path of int8_gemm.h. AVX2 has no int8 x int8 dot product: vpmaddubsw multiplies unsigned
// by signed bytes and adds adjacent pairs into int16 with saturation. With an offset (a + 128,
// the usual u8 trick) a pair reaches 2 * 255 * 127 = 64770 and saturates: that is the int16
// overflow FBGEMM avoids with reduce_range (7-bit activations), at an accuracy cost. Here the sign
// moves onto b instead: |a| * (sign(a) * b), so each factor is at most 127 and a pair at most
// 2 * 127 * 127 = 32258 < 32767: exact. An activation of -128 is fine too (|a| = 128 as u8,
// pairs <= 2 * 128 * 127 = 32512); a weight of -128 is not (see has_min_int8).
// vpmaddwd with ones then widens the pairs to int32 sums of 4 products. That is 4 vector ops per
// 32 multiply-adds, as many as float32 FMAs need for 32: on Zen 3 (no VNNI) the int8 kernel runs
// at about the speed of MKL's float32 GEMM (0.9-1.25x, one core, MiniLM shapes); its gain is the
// 4x smaller weights and activations, not the arithmetic.
//
// A block: 4 x 2 tiles (4 rows of a x 2 rows of b, 8 accumulators of 8 int32 lanes, k advancing
// 32 bytes per step) write int32 sums into a block buffer; a vectorized epilogue then scales,
// adds the bias and converts each row (the same float32 operations, in the same order, as
// int8_gemm_store).
#include <immintrin.h>

#include <algorithm>

#include "cpu/int8_gemm.h"
#include "cpu/vec_avx2.h"

namespace squash::cpu_kernels {
namespace {

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// Lane i of the result = the sum of the 8 lanes of v_i.
inline __m256i reduce8(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i v4, __m256i v5, __m256i v6,
                       __m256i v7) {
  const __m256i s0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
  const __m256i s4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7));
  return _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                          _mm256_permute2x128_si256(s0123, s4567, 0x31));
}

// The products past the last full 32-byte step (K % 32 of them).
inline int32_t k_tail(const Int8GemmParams& p, int64_t m, int64_t n, int64_t k0) {
  const int8_t* a = p.a + m * p.lda;
  const int8_t* b = p.b + n * p.ldb;
  int32_t s = 0;
  for (int64_t k = k0; k < p.K; ++k) s += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
  return s;
}

inline __m256i dot_step(__m256i acc, __m256i aabs, __m256i av, __m256i bv, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(aabs, _mm256_sign_epi8(bv, av)), ones));
}

// Edge tiles (fewer than 4 rows or 2 columns left).
template <int MR, int NR>
void tile_edge(const Int8GemmParams& p, int64_t m, int64_t n, int32_t* acc, int64_t ldacc) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i][j] = _mm256_setzero_si256();
  const int64_t K32 = p.K & ~int64_t{31};
  for (int64_t k = 0; k < K32; k += 32)
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.a + (m + i) * p.lda + k));
      const __m256i aabs = _mm256_abs_epi8(av);
      for (int j = 0; j < NR; ++j) {
        const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.b + (n + j) * p.ldb + k));
        c[i][j] = dot_step(c[i][j], aabs, av, bv, ones);
      }
    }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i * ldacc + j] = hsum(c[i][j]) + k_tail(p, m + i, n + j, K32);
}

// The hot tile with named accumulators: GCC 12 kept the array form partly on the stack (a store
// per accumulator per step, seen in the assembly).
void tile_4x2(const Int8GemmParams& p, int64_t m, int64_t n, int32_t* acc, int64_t ldacc) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
          c31 = c00;
  const int8_t* a0 = p.a + m * p.lda;
  const int8_t* a1 = a0 + p.lda;
  const int8_t* a2 = a1 + p.lda;
  const int8_t* a3 = a2 + p.lda;
  const int8_t* b0 = p.b + n * p.ldb;
  const int8_t* b1 = b0 + p.ldb;
  const int64_t K32 = p.K & ~int64_t{31};
  for (int64_t k = 0; k < K32; k += 32) {
    const __m256i b0v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + k));
    const __m256i b1v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + k));
#define SQUASH_I8_ROW(i)                                                               \
  {                                                                                    \
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a##i + k)); \
    const __m256i aabs = _mm256_abs_epi8(av);                                          \
    c##i##0 = dot_step(c##i##0, aabs, av, b0v, ones);                                  \
    c##i##1 = dot_step(c##i##1, aabs, av, b1v, ones);                                  \
  }
    SQUASH_I8_ROW(0)
    SQUASH_I8_ROW(1)
    SQUASH_I8_ROW(2)
    SQUASH_I8_ROW(3)
#undef SQUASH_I8_ROW
  }
  // Lanes 2i, 2i + 1 of the reduction are row i's two sums.
  alignas(32) int32_t sums[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums), reduce8(c00, c01, c10, c11, c20, c21, c30, c31));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j)
      acc[i * ldacc + j] = sums[2 * i + j] + (K32 < p.K ? k_tail(p, m + i, n + j, K32) : 0);
}

template <int MR>
void row_tiles(const Int8GemmParams& p, int64_t m, int64_t n0, int64_t n1, int32_t* acc, int64_t ldacc) {
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) {
    if constexpr (MR == 4)
      tile_4x2(p, m, n, acc + (n - n0), ldacc);
    else
      tile_edge<MR, 2>(p, m, n, acc + (n - n0), ldacc);
  }
  if (n < n1) tile_edge<MR, 1>(p, m, n, acc + (n - n0), ldacc);
}

void epilogue_row(const Int8GemmParams& p, int64_t m, int64_t n0, int64_t n1, const int32_t* acc) {
  const __m256 as = _mm256_set1_ps(p.a_scale[p.a_scale_per_row ? m : 0]);
  int64_t n = n0;
  for (; n + 8 <= n1; n += 8) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + n - n0))), as);
    v = _mm256_mul_ps(v, p.b_scale_per_col ? _mm256_loadu_ps(p.b_scale + n) : _mm256_set1_ps(p.b_scale[0]));
    if (p.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(p.bias + n));
    avx2::store8(p.out_dtype, avx2::offset(p.out, p.out_dtype, m * p.ldo + n), v);
  }
  for (; n < n1; ++n) int8_gemm_store(p, m, n, acc[n - n0]);
}

// True when a row of b in [n0, n1) holds -128: the sign trick cannot negate it (sign_epi8 wraps
// -(-128) to -128). Our quantizers never produce it, imported int8 weights may.
bool has_min_int8(const Int8GemmParams& p, int64_t n0, int64_t n1) {
  const __m256i min8 = _mm256_set1_epi8(-128);
  const int64_t K32 = p.K & ~int64_t{31};
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* b = p.b + n * p.ldb;
    __m256i hit = _mm256_setzero_si256();
    for (int64_t k = 0; k < K32; k += 32)
      hit = _mm256_or_si256(hit, _mm256_cmpeq_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k)), min8));
    if (!_mm256_testz_si256(hit, hit)) return true;
    for (int64_t k = K32; k < p.K; ++k)
      if (b[k] == -128) return true;
  }
  return false;
}

}  // namespace

void int8_gemm_epilogue_avx2(const Int8GemmParams& p, const int32_t* acc, int64_t ldacc, int64_t m0, int64_t m1,
                             int64_t n0, int64_t n1) {
  for (int64_t m = m0; m < m1; ++m) epilogue_row(p, m, n0, n1, acc + (m - m0) * ldacc);
}

void int8_gemm_block_avx2(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  // The scan costs 2 vector ops per 32 bytes of b, once per block; the tiles cost 4 per 32 bytes
  // per row of a (so under 1% of the block at 96 rows, ~50% at M = 1). A block with a -128
  // weight takes the exact scalar path.
  if (has_min_int8(p, n0, n1)) return int8_gemm_block_scalar(p, m0, m1, n0, n1);
  int8_gemm_block_tiled(p, m0, m1, n0, n1, [&](auto rows, int64_t m, int32_t* acc) {
    row_tiles<decltype(rows)::value>(p, m, n0, n1, acc, n1 - n0);
  });
}

}  // namespace squash::cpu_kernels
