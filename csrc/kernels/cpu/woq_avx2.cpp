// AVX2 + FMA path of the W4A16 / W8A16 CPU kernels (woq.h); built with -mavx2 -mfma -mf16c.
//
// One micro-kernel for both formats: a tile of MR activation rows x one 16-column panel, the
// weight decoded in registers once per k and reused across the MR rows (two 8-float vectors per
// k), float32 accumulators held in registers over the whole K. The formats differ only in the
// decode (Int4Decode / Int8Decode below):
//  - int4: w = q * s + (-z * s) (one FMA per 8 values; scale and zero term reloaded per group);
//  - int8: the raw code is accumulated and the per-channel scale applied once at the end.
#include <immintrin.h>

#include <algorithm>

#include "cpu/woq.h"

namespace squash::cpu_kernels::woq_detail {
namespace {

// Independent accumulator sets over k (k mod KS): an FMA has 4 cycles of latency and Zen 3 issues
// two per cycle, so >= 8 accumulator vectors are needed to keep both FMA pipes busy; MR rows give
// 2 MR, the k-split gives the rest.
template <int MR>
constexpr int kSplits = MR >= 4 ? 1 : (MR >= 2 ? 2 : 4);

// Row tile of the register micro-kernel: 4 rows x 2 vectors = 8 accumulators + 2 weight vectors
// + the broadcast + decode constants fit the 16 ymm registers.
constexpr int kMaxRows = 4;

struct Int4Decode {
  const uint8_t* w;  // panel start [K, 8]
  const float* s;    // [G, 16]
  const uint8_t* z;  // [G, 16] or nullptr
  int64_t group, groups;
  __m256 s0, s1, zs0, zs1;
  const __m256i mask = _mm256_set1_epi32(15);

  void begin_group(int64_t g) {
    s0 = _mm256_loadu_ps(s + g * kWoqPanel);
    s1 = _mm256_loadu_ps(s + g * kWoqPanel + 8);
    __m256 z0 = _mm256_set1_ps(8.f), z1 = z0;
    if (z) {
      z0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g * kWoqPanel))));
      z1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g * kWoqPanel + 8))));
    }
    // -(z * s) rounded once, then w = fma(q, s, -(z * s)): within an ulp of (q - z) * s.
    const __m256 neg = _mm256_set1_ps(-0.f);
    zs0 = _mm256_xor_ps(_mm256_mul_ps(z0, s0), neg);
    zs1 = _mm256_xor_ps(_mm256_mul_ps(z1, s1), neg);
  }
  void decode(int64_t k, __m256& w0, __m256& w1) const {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + k * 8)));
    w0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b, mask)), s0, zs0);
    w1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)), s1, zs1);
  }
  void finish(__m256&, __m256&) const {}
};

struct Int8Decode {
  const int8_t* w;  // panel start [K, 16]
  const float* s;   // [16]
  int64_t group, groups;

  void begin_group(int64_t) {}
  void decode(int64_t k, __m256& w0, __m256& w1) const {
    const auto* p = reinterpret_cast<const __m128i*>(w + k * kWoqPanel);
    const __m128i b = _mm_loadu_si128(p);
    w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(b, b)));
  }
  void finish(__m256& a0, __m256& a1) const {
    a0 = _mm256_mul_ps(a0, _mm256_loadu_ps(s));
    a1 = _mm256_mul_ps(a1, _mm256_loadu_ps(s + 8));
  }
};

// out rows [0, MR) x the panel's `cols` columns (+ bias) for rows of x starting at `x`.
template <int MR, typename Decode>
void tile(Decode d, const float* x, int64_t ldx, const float* bias, float* out, int64_t ldo, int cols) {
  constexpr int KS = kSplits<MR>;
  __m256 acc[KS][MR][2];
  for (int s = 0; s < KS; ++s)
    for (int r = 0; r < MR; ++r) acc[s][r][0] = acc[s][r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < d.groups; ++g) {
    d.begin_group(g);
    const int64_t k1 = (g + 1) * d.group;
    int64_t k = g * d.group;
    for (; k + KS <= k1; k += KS)
      for (int s = 0; s < KS; ++s) {
        __m256 w0, w1;
        d.decode(k + s, w0, w1);
        for (int r = 0; r < MR; ++r) {
          const __m256 xv = _mm256_broadcast_ss(x + r * ldx + k + s);
          acc[s][r][0] = _mm256_fmadd_ps(xv, w0, acc[s][r][0]);
          acc[s][r][1] = _mm256_fmadd_ps(xv, w1, acc[s][r][1]);
        }
      }
    for (; k < k1; ++k) {  // only per-channel groups of a K that is not a multiple of KS
      __m256 w0, w1;
      d.decode(k, w0, w1);
      for (int r = 0; r < MR; ++r) {
        const __m256 xv = _mm256_broadcast_ss(x + r * ldx + k);
        acc[0][r][0] = _mm256_fmadd_ps(xv, w0, acc[0][r][0]);
        acc[0][r][1] = _mm256_fmadd_ps(xv, w1, acc[0][r][1]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    __m256 a0 = acc[0][r][0], a1 = acc[0][r][1];
    for (int s = 1; s < KS; ++s) {
      a0 = _mm256_add_ps(a0, acc[s][r][0]);
      a1 = _mm256_add_ps(a1, acc[s][r][1]);
    }
    d.finish(a0, a1);
    float* o = out + r * ldo;
    if (cols == kWoqPanel && !bias) {
      _mm256_storeu_ps(o, a0);
      _mm256_storeu_ps(o + 8, a1);
    } else {
      alignas(32) float t[kWoqPanel];
      _mm256_store_ps(t, a0);
      _mm256_store_ps(t + 8, a1);
      for (int c = 0; c < cols; ++c) o[c] = t[c] + (bias ? bias[c] : 0.f);
    }
  }
}

// Runtime row count -> template parameter, in one place.
template <typename Decode>
void tile_rows(int mr, const Decode& d, const float* x, int64_t ldx, const float* bias, float* out,
               int64_t ldo, int cols) {
  switch (mr) {
    case 1: return tile<1>(d, x, ldx, bias, out, ldo, cols);
    case 2: return tile<2>(d, x, ldx, bias, out, ldo, cols);
    case 3: return tile<3>(d, x, ldx, bias, out, ldo, cols);
    default: return tile<kMaxRows>(d, x, ldx, bias, out, ldo, cols);
  }
}

// Loop order: blocks of panels whose weights fit in ~256 KiB (L2 is 1 MiB per core here), then
// row tiles, then the panels of the block: each panel is read from memory once and from L2 for the
// other row tiles, each row tile of x stays in L1/L2 across the block's panels.
template <typename MakeDecode>
void run(const WoqProblem& pr, int64_t n, int64_t panel_bytes, int64_t p0, int64_t p1, MakeDecode make) {
  const int64_t block = std::max<int64_t>(1, (256 << 10) / panel_bytes);
  for (int64_t pb = p0; pb < p1; pb += block) {
    const int64_t pe = std::min(p1, pb + block);
    for (int64_t m = 0; m < pr.m; m += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, pr.m - m));
      for (int64_t p = pb; p < pe; ++p) {
        const int cols = static_cast<int>(std::min<int64_t>(kWoqPanel, n - p * kWoqPanel));
        tile_rows(mr, make(p), pr.x + m * pr.ldx, pr.ldx, pr.bias ? pr.bias + p * kWoqPanel : nullptr,
                  pr.out + m * pr.ldo + p * kWoqPanel, pr.ldo, cols);
      }
    }
  }
}

}  // namespace

void w4a16_avx2(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  const int64_t groups = w.k / w.group;
  run(pr, w.n, w.k * 8, p0, p1, [&](int64_t p) {
    Int4Decode d{w.packed + p * w.k * 8, w.scales + p * groups * kWoqPanel,
                 w.zeros ? w.zeros + p * groups * kWoqPanel : nullptr, w.group, groups};
    return d;
  });
}

void w8a16_avx2(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  run(pr, w.n, w.k * kWoqPanel, p0, p1, [&](int64_t p) {
    return Int8Decode{w.packed + p * w.k * kWoqPanel, w.scales + p * kWoqPanel, w.k, 1};
  });
}

}  // namespace squash::cpu_kernels::woq_detail
