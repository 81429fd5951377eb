// AVX-512 VNNI block of int8_gemm.h, for few rows of a: the binding sends M > kInt8VnniMaxRows to
// at::_int_mm (oneDNN), faster from M = 32 on (up to 1.7x at M = 256), but ~20 us a call at tiny M
// (M = 2, a MiniLM FFN linear: 22 us for 1.2 M multiply-adds, 11 us here; one Zen 5 core,
// bench/results/2026-12-02_cpu-w8a8-vnni_probe.log).
//
// Both operands stay row-major (b is nn.Linear's [N, K]): a tile of MR rows of a x NR rows of b
// holds MR * NR accumulators whose 16 lanes are partial sums along k, 64 k per step, reduced to
// one int32 each at the end (reduce16). vpdpbusd multiplies unsigned by signed bytes, so a moves
// to u8 by a ^ 0x80 = a + 128, and the products of the 128 are taken back per row of b:
// sum (a + 128) b - sum 128 b. vpdpbusd and vpsubd wrap modulo 2^32, so the difference is exact
// whenever the true sum fits in int32, as on every int32-accumulating path. -128 is exact on both
// sides (a: 0 as u8; b: vpdpbusd's signed operand), so no block needs the scalar path.
#include <immintrin.h>

#include <algorithm>

#include "cpu/int8_gemm.h"

namespace squash::cpu_kernels {
namespace {

#define SQUASH_UNROLL _Pragma("GCC unroll 16")

// acc += the 4-byte dot products of u (unsigned) and s (signed), in place. GCC 12 compiles
// _mm512_dpbusd_epi32 with a register copy of the accumulator around most of the calls (46
// moves and stack stores for 20 vpdpbusd in the 4 x 4 tile's loop, seen in the assembly): 180
// G MAC/s at M = 256, 220-320 with this form (same probe log).
__attribute__((always_inline)) inline void dpbusd(__m512i& acc, __m512i u, __m512i s) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
}

// Lane j of the result = the sum of the 16 lanes of v[j] (j < 16).
__attribute__((always_inline)) inline __m512i reduce16(__m512i v0, __m512i v1, __m512i v2, __m512i v3, __m512i v4, __m512i v5, __m512i v6,
                        __m512i v7, __m512i v8, __m512i v9, __m512i v10, __m512i v11, __m512i v12, __m512i v13,
                        __m512i v14, __m512i v15) {
  const __m512i v[16] = {v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15};
  __m512i a[8], b[4];
  SQUASH_UNROLL for (int i = 0; i < 8; ++i)  // per 128-bit lane: two partials of v[2i], two of v[2i + 1]
    a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  SQUASH_UNROLL for (int i = 0; i < 4; ++i)  // per 128-bit lane: one partial of v[4i .. 4i + 3]
    b[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
  // Add the four 128-bit lanes of each b[i] and put b[i]'s sums in lane i.
  const __m512i d01 = _mm512_add_epi32(_mm512_shuffle_i32x4(b[0], b[1], 0x44), _mm512_shuffle_i32x4(b[0], b[1], 0xEE));
  const __m512i d23 = _mm512_add_epi32(_mm512_shuffle_i32x4(b[2], b[3], 0x44), _mm512_shuffle_i32x4(b[2], b[3], 0xEE));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(d01, d23, 0x88), _mm512_shuffle_i32x4(d01, d23, 0xDD));
}

// acc[i * ldacc + j] = sum_k a[m + i, k] * b[n + j, k] for the MR x NR tile. The accumulators
// are named variables (cIJ; the ones past MR x NR stay 0 and cost nothing): with arrays of them
// GCC 12 moved every accumulator between registers and to the stack each step (48 moves and 10
// stores in a 77-instruction loop, seen in the assembly), and without always_inline it made the
// step lambda a function reading them through memory.
template <int MR, int NR>
void tile(const Int8GemmParams& p, int64_t m, int64_t n, int32_t* acc, int64_t ldacc) {
  static_assert(MR <= 4 && NR <= 4, "a 4 x 4 tile at most");
  const __m512i x80 = _mm512_set1_epi8(static_cast<char>(0x80));  // a ^ x80 = a + 128; as u8, 128
  const __m512i zero = _mm512_setzero_si512();
  const int8_t* a0 = p.a + m * p.lda;
  const int8_t* a1 = a0 + (MR > 1 ? p.lda : 0);
  const int8_t* a2 = a0 + (MR > 2 ? 2 * p.lda : 0);
  const int8_t* a3 = a0 + (MR > 3 ? 3 * p.lda : 0);
  const int8_t* b0 = p.b + n * p.ldb;
  const int8_t* b1 = b0 + (NR > 1 ? p.ldb : 0);
  const int8_t* b2 = b0 + (NR > 2 ? 2 * p.ldb : 0);
  const int8_t* b3 = b0 + (NR > 3 ? 3 * p.ldb : 0);
  __m512i c00 = zero, c01 = zero, c02 = zero, c03 = zero, c10 = zero, c11 = zero, c12 = zero, c13 = zero;
  __m512i c20 = zero, c21 = zero, c22 = zero, c23 = zero, c30 = zero, c31 = zero, c32 = zero, c33 = zero;
  __m512i r0 = zero, r1 = zero, r2 = zero, r3 = zero;  // sums of 128 b[j]
  auto step = [&](int64_t k, __mmask64 valid) __attribute__((always_inline)) {
    const __m512i bv0 = _mm512_maskz_loadu_epi8(valid, b0 + k);
    const __m512i bv1 = NR > 1 ? _mm512_maskz_loadu_epi8(valid, b1 + k) : zero;
    const __m512i bv2 = NR > 2 ? _mm512_maskz_loadu_epi8(valid, b2 + k) : zero;
    const __m512i bv3 = NR > 3 ? _mm512_maskz_loadu_epi8(valid, b3 + k) : zero;
    dpbusd(r0, x80, bv0);
    if constexpr (NR > 1) dpbusd(r1, x80, bv1);
    if constexpr (NR > 2) dpbusd(r2, x80, bv2);
    if constexpr (NR > 3) dpbusd(r3, x80, bv3);
#define SQUASH_VNNI_ROW(i)                                                                \
  if constexpr (MR > i) {                                                                 \
    const __m512i av = _mm512_xor_si512(_mm512_maskz_loadu_epi8(valid, a##i + k), x80);  \
    dpbusd(c##i##0, av, bv0);                                      \
    if constexpr (NR > 1) dpbusd(c##i##1, av, bv1);                \
    if constexpr (NR > 2) dpbusd(c##i##2, av, bv2);                \
    if constexpr (NR > 3) dpbusd(c##i##3, av, bv3);                \
  }
    SQUASH_VNNI_ROW(0)
    SQUASH_VNNI_ROW(1)
    SQUASH_VNNI_ROW(2)
    SQUASH_VNNI_ROW(3)
#undef SQUASH_VNNI_ROW
  };
  const int64_t K = p.K, K64 = K & ~int64_t{63};
  for (int64_t k = 0; k < K64; k += 64) step(k, ~__mmask64{0});
  // The last K % 64 bytes: b's missing bytes load as 0, so a's (0 ^ 0x80) add nothing.
  if (K64 < K) step(K64, (__mmask64{1} << (K - K64)) - 1);
  // Lane 4i + j of the reduction is (row i, column j) when NR = 4; the sums of other NR are
  // read back from the same lanes.
  alignas(64) int32_t sums[16];
  _mm512_store_si512(sums, reduce16(_mm512_sub_epi32(c00, r0), _mm512_sub_epi32(c01, r1), _mm512_sub_epi32(c02, r2),
                                    _mm512_sub_epi32(c03, r3), _mm512_sub_epi32(c10, r0), _mm512_sub_epi32(c11, r1),
                                    _mm512_sub_epi32(c12, r2), _mm512_sub_epi32(c13, r3), _mm512_sub_epi32(c20, r0),
                                    _mm512_sub_epi32(c21, r1), _mm512_sub_epi32(c22, r2), _mm512_sub_epi32(c23, r3),
                                    _mm512_sub_epi32(c30, r0), _mm512_sub_epi32(c31, r1), _mm512_sub_epi32(c32, r2),
                                    _mm512_sub_epi32(c33, r3)));
  SQUASH_UNROLL for (int i = 0; i < MR; ++i)
    SQUASH_UNROLL for (int j = 0; j < NR; ++j) acc[i * ldacc + j] = sums[4 * i + j];
}

// Rows [m, m + MR) against the block's columns, 4 rows of b per tile.
template <int MR>
void row_tiles(const Int8GemmParams& p, int64_t m, int64_t n0, int64_t n1, int32_t* acc, int64_t ldacc) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) tile<MR, 4>(p, m, n, acc + (n - n0), ldacc);
  switch (n1 - n) {
    case 3: tile<MR, 3>(p, m, n, acc + (n - n0), ldacc); break;
    case 2: tile<MR, 2>(p, m, n, acc + (n - n0), ldacc); break;
    case 1: tile<MR, 1>(p, m, n, acc + (n - n0), ldacc); break;
    default: break;
  }
}

}  // namespace

void int8_gemm_block_vnni(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  int8_gemm_block_tiled(p, m0, m1, n0, n1, [&](auto rows, int64_t m, int32_t* acc) {
    row_tiles<decltype(rows)::value>(p, m, n0, n1, acc, n1 - n0);
  });
}

}  // namespace squash::cpu_kernels
