// AVX2 + FMA path of the W4A16 / W8A16 CPU kernels (woq.h); built with -mavx2 -mfma -mf16c.
//
// One micro-kernel for both formats: a tile of MR activation rows x one 16-column panel, the
// weight codes decoded in registers once per k (two 8-float vectors) and reused across the MR rows,
// float32 accumulators in registers over one group, the group's scale (and zero point) applied
// once per group:
//  - int4: sum_k x (q - z) s = s * sum_k x q - z s * sum_k x ("group-sum"): the inner loop is
//    zero-extend, and/shift, convert, FMA; the row sums of x per group are computed once per call. Dequantizing instead with one FMA per 8 values (w = q s - z s) costs two more ops per
//    k and keeps 4 more registers live: 1.29 ms vs 0.86-0.95 ms for 8192x2048 at M=1 (one
//    thread, shared machine, best of 25; the FMA version also had spilled accumulators).
//  - int8: one group spanning K, the per-channel scale applied to the sum.
#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/woq.h"

namespace squash::cpu_kernels::woq_detail {
namespace {

// Independent accumulator sets over k (k mod KS): an FMA has 4 cycles of latency and Zen 3 issues
// two per cycle, so >= 8 accumulator vectors keep both FMA pipes busy; MR rows give 2 MR, the
// k-split the rest (MR = 3 has 6: 12 would not fit the 16 ymm registers with the decode's).
template <int MR>
constexpr int kSplits = MR == 1 ? 4 : (MR == 2 ? 2 : 1);

// Row tile of the register micro-kernel: 4 rows x 2 vectors = 8 accumulators + 2 weight vectors
// + the broadcast + the nibble mask. 6 rows (12 accumulators, low nibble by two shifts to free
// the mask's register) measured 2x slower at M=16 and M=64 (4096x4096, one thread, same process
// pairs alternated 3 times: 10-20 ms vs 21-25 ms at M=16, 54-61 ms vs 107-119 ms at M=64; GCC 12
// still spilled one accumulator) and no faster at M=1.
constexpr int kMaxRows = 4;

struct Int4Decode {
  const uint8_t* w;    // panel start [K, 8]
  const float* s;      // [G, 16]
  const uint8_t* z;    // [G, 16] or nullptr
  const float* xsum;   // [rows of the tile, G]: sum of x over each group
  int64_t group, groups;

  void decode(int64_t k, __m256& w0, __m256& w1) const {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k * 8)));
    w0 = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15)));
    w1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
  }
  // t += s * a - z * s * xsum for row r of the tile, columns [8h, 8h + 8).
  __m256 group_end(int64_t g, int r, int h, __m256 a, __m256 t) const {
    const __m256 sv = _mm256_loadu_ps(s + g * kWoqPanel + 8 * h);
    __m256 zv = _mm256_set1_ps(8.f);
    if (z) {  // a zero point above 15 (edited after prepacking) is NaN: its output channel shows it
      zv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g * kWoqPanel + 8 * h))));
      zv = _mm256_blendv_ps(zv, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()),
                            _mm256_cmp_ps(zv, _mm256_set1_ps(15.f), _CMP_GT_OQ));
    }
    const __m256 xs = _mm256_set1_ps(-xsum[r * groups + g]);
    return _mm256_fmadd_ps(a, sv, _mm256_fmadd_ps(_mm256_mul_ps(zv, sv), xs, t));
  }
};

struct Int8Decode {
  const int8_t* w;  // panel start [K, 16]
  const float* s;   // [16]
  int64_t group, groups;

  void decode(int64_t k, __m256& w0, __m256& w1) const {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * kWoqPanel));
    w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(b, b)));
  }
  __m256 group_end(int64_t, int, int h, __m256 a, __m256 t) const {
    return _mm256_fmadd_ps(a, _mm256_loadu_ps(s + 8 * h), t);
  }
};

// Fully unrolled loops over the compile-time row / split counts: without the pragmas GCC 12 kept
// the accumulator array in memory (a store per FMA; measured 3x slower at M=64).
#define SQUASH_UNROLL _Pragma("GCC unroll 16")

// out rows [0, MR) x the panel's `cols` columns (+ bias) for rows of x starting at `x`.
// `tot` [kMaxRows, 16] (heap scratch) holds the running sums across groups: kept in registers,
// its 8 vectors plus the 8 accumulators made GCC spill accumulators inside the k loop.
template <int MR, typename Decode>
void tile(const Decode& d, const float* x, int64_t ldx, const float* bias, float* out, int64_t ldo, int cols,
          float* tot) {
  constexpr int KS = kSplits<MR>;
  for (int i = 0; i < MR * kWoqPanel; ++i) tot[i] = 0.f;
  for (int64_t g = 0; g < d.groups; ++g) {
    __m256 acc[KS][MR][2];
    SQUASH_UNROLL for (int s = 0; s < KS; ++s)
      SQUASH_UNROLL for (int r = 0; r < MR; ++r) acc[s][r][0] = acc[s][r][1] = _mm256_setzero_ps();
    const int64_t k1 = (g + 1) * d.group;
    int64_t k = g * d.group;
    for (; k + KS <= k1; k += KS) {
      SQUASH_UNROLL for (int s = 0; s < KS; ++s) {
        __m256 w0, w1;
        d.decode(k + s, w0, w1);
        SQUASH_UNROLL for (int r = 0; r < MR; ++r) {
          const __m256 xv = _mm256_broadcast_ss(x + r * ldx + k + s);
          acc[s][r][0] = _mm256_fmadd_ps(xv, w0, acc[s][r][0]);
          acc[s][r][1] = _mm256_fmadd_ps(xv, w1, acc[s][r][1]);
        }
      }
    }
    for (; k < k1; ++k) {  // only one group spanning a K that is not a multiple of KS
      __m256 w0, w1;
      d.decode(k, w0, w1);
      SQUASH_UNROLL for (int r = 0; r < MR; ++r) {
        const __m256 xv = _mm256_broadcast_ss(x + r * ldx + k);
        acc[0][r][0] = _mm256_fmadd_ps(xv, w0, acc[0][r][0]);
        acc[0][r][1] = _mm256_fmadd_ps(xv, w1, acc[0][r][1]);
      }
    }
    SQUASH_UNROLL for (int r = 0; r < MR; ++r)
      SQUASH_UNROLL for (int h = 0; h < 2; ++h) {
        __m256 a = acc[0][r][h];
        SQUASH_UNROLL for (int s = 1; s < KS; ++s) a = _mm256_add_ps(a, acc[s][r][h]);
        float* t = tot + r * kWoqPanel + 8 * h;
        _mm256_storeu_ps(t, d.group_end(g, r, h, a, _mm256_loadu_ps(t)));
      }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < cols; ++c) out[r * ldo + c] = tot[r * kWoqPanel + c] + (bias ? bias[c] : 0.f);
}

// Runtime row count -> template parameter, in one place.
template <typename Decode>
void tile_rows(int mr, const Decode& d, const float* x, int64_t ldx, const float* bias, float* out,
               int64_t ldo, int cols, float* tot) {
  switch (mr) {
    case 1: return tile<1>(d, x, ldx, bias, out, ldo, cols, tot);
    case 2: return tile<2>(d, x, ldx, bias, out, ldo, cols, tot);
    case 3: return tile<3>(d, x, ldx, bias, out, ldo, cols, tot);
    default: return tile<kMaxRows>(d, x, ldx, bias, out, ldo, cols, tot);
  }
}

// Loop order: blocks of panels whose weights fit in ~256 KiB (L2 is 1 MiB per core here), then
// row tiles, then the panels of the block: each panel is read from memory once and from L2 for the
// other row tiles, each row tile of x stays in L1/L2 across the block's panels. `make(p, m)` is
// the decoder of panel p for the row tile starting at row m.
template <typename MakeDecode>
void run(const WoqProblem& pr, int64_t n, int64_t panel_bytes, int64_t p0, int64_t p1, MakeDecode make) {
  const int64_t block = std::max<int64_t>(1, (256 << 10) / panel_bytes);
  std::vector<float> tot(kMaxRows * kWoqPanel);
  for (int64_t pb = p0; pb < p1; pb += block) {
    const int64_t pe = std::min(p1, pb + block);
    for (int64_t m = 0; m < pr.m; m += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, pr.m - m));
      for (int64_t p = pb; p < pe; ++p) {
        const int cols = static_cast<int>(std::min<int64_t>(kWoqPanel, n - p * kWoqPanel));
        tile_rows(mr, make(p, m), pr.x + m * pr.ldx, pr.ldx, pr.bias ? pr.bias + p * kWoqPanel : nullptr,
                  pr.out + m * pr.ldo + p * kWoqPanel, pr.ldo, cols, tot.data());
      }
    }
  }
}

// sum of x[0, n) with 8-wide partial sums (n % 8 tail in scalar).
float row_sum(const float* x, int64_t n) {
  __m256 a = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(x + k));
  alignas(32) float t[8];
  _mm256_store_ps(t, a);
  float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; k < n; ++k) s += x[k];
  return s;
}

}  // namespace

void int4_group_sums(const WoqInt4Weight& w, const WoqProblem& pr, float* xsum) {
  const int64_t groups = w.k / w.group;
  for (int64_t r = 0; r < pr.m; ++r)
    for (int64_t g = 0; g < groups; ++g) xsum[r * groups + g] = row_sum(pr.x + r * pr.ldx + g * w.group, w.group);
}

void w4a16_avx2(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  const int64_t groups = w.k / w.group;
  // Group sums of x for every row, once per call. Recomputed per block of panels with a scalar
  // loop they cost 0.86-0.93 ms -> 0.76-0.81 ms at M=1 and 11.9-13.7 ms -> 7.4-7.6 ms at M=16
  // (2048x8192, 8192x2048, 4096x4096; one thread, best of 25, the kernel alone, runs alternated).
  std::vector<float> xsum(pr.m * groups);
  int4_group_sums(w, pr, xsum.data());
  run(pr, w.n, w.k * 8, p0, p1, [&](int64_t p, int64_t m) {
    return Int4Decode{w.packed + p * w.k * 8, w.scales + p * groups * kWoqPanel,
                      w.zeros ? w.zeros + p * groups * kWoqPanel : nullptr, xsum.data() + m * groups, w.group, groups};
  });
}

void w8a16_avx2(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  run(pr, w.n, w.k * kWoqPanel, p0, p1,
      [&](int64_t p, int64_t) { return Int8Decode{w.packed + p * w.k * kWoqPanel, w.scales + p * kWoqPanel, w.k, 1}; });
}

}  // namespace squash::cpu_kernels::woq_detail
