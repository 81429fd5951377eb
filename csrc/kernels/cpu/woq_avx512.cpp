// AVX-512 BF16 path of the W4A16 / W8A16 CPU kernels (woq.h), for bf16 activations; built with
// the avx512 flags (CMakeLists.txt) and run only where the CPU has avx512bf16.
//
// The AVX2 kernel spends 5 vector ops decoding 16 weights of one k and 2 FMAs using them, so it is
// bound by its own instruction count (15 GB/s of int4 weights on one Zen 5 core against ~30 GB/s
// that the core streams). Here one k-pair of a panel (16 columns x 2 k = 32 weights) is decoded
// into bf16 pairs with 5 ops (byte interleave, widen, and / shift, a 16-entry table lookup with
// vpermw: bf16 holds 0..15 exactly) and multiplied with vdpbf16ps against the broadcast bf16 pair
// (x[k], x[k+1]): 32 multiply-adds per instruction, products exact in float32 (bf16 x bf16), sums
// in float32 as in the other paths. Same group-sum form as woq_avx2.cpp: per group
// t += s * sum_k x q - z s * sum_k x, so only the codes enter the dot products. int8 codes become
// bf16 pairs through float32 (widen, convert, vcvtne2ps2bf16: exact for |q| <= 128), the
// per-channel scale applied to the whole sum.
// vdpbf16ps treats bf16 subnormal inputs as 0 (DAZ): an activation below 1.2e-38 contributes 0.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/woq.h"

namespace squash::cpu_kernels::woq_detail {
namespace {

// Rows per tile and independent sums over k-pairs (vdpbf16ps latency): >= 8 accumulators, of
// the 32 zmm registers. 8 rows measured 1.4-1.5x faster than 4 at M = 16 and 64 (three Llama shapes, one
// thread; bench/results/2026-12-02_cpu-amd-epyc-6_probes.log).
constexpr int kMaxRows = 8;
template <int MR>
constexpr int kSplits = MR <= 2 ? 4 : (MR <= 4 ? 2 : 1);

struct Int4Bf16 {
  const uint8_t* w;    // panel start [K, 8]
  const float* s;      // [G, 16]
  const uint8_t* z;    // [G, 16] or nullptr (zero point 8)
  const float* xsum;   // [rows, G]
  int64_t group, groups;
  __m512i lut;         // word q -> bf16 bits of q, q < 16
  __m128i interleave;  // bytes of k and k + 1 alternated

  // Dword lane c of the result: (q[k, c], q[k + 1, c]) as bf16, c < 16.
  __m512bh decode_pair(int64_t k) const {
    const __m128i b = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * 8)), interleave);
    const __m256i wd = _mm256_cvtepu8_epi16(b);  // word 2j: byte j of k, word 2j + 1: byte j of k + 1
    const __m256i lo = _mm256_and_si256(wd, _mm256_set1_epi16(15));  // columns 0..7
    const __m256i hi = _mm256_srli_epi16(wd, 4);                     // columns 8..15
    return (__m512bh)_mm512_permutexvar_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), lut);
  }
  __m512 group_end(int64_t g, int r, __m512 a, __m512 t) const {
    const __m512 sv = _mm512_loadu_ps(s + g * kWoqPanel);
    const __m512 zv = z ? _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(z + g * kWoqPanel))))
                        : _mm512_set1_ps(8.f);
    const __m512 xs = _mm512_set1_ps(-xsum[r * groups + g]);
    return _mm512_fmadd_ps(a, sv, _mm512_fmadd_ps(_mm512_mul_ps(zv, sv), xs, t));
  }
};

struct Int8Bf16 {
  const int8_t* w;  // panel start [K, 16]
  const float* s;   // [16]
  int64_t group, groups;  // one group spanning K

  __m512bh decode_pair(int64_t k) const {
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * kWoqPanel));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (k + 1) * kWoqPanel));
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpacklo_epi8(r0, r1)));  // columns 0..7
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpackhi_epi8(r0, r1)));  // columns 8..15
    return _mm512_cvtne2ps_pbh(hi, lo);  // words 0..15 from lo, 16..31 from hi
  }
  __m512 group_end(int64_t, int, __m512 a, __m512 t) const { return _mm512_fmadd_ps(a, _mm512_loadu_ps(s), t); }
};

inline __m512bh pair_of(const uint16_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

#define SQUASH_UNROLL _Pragma("GCC unroll 16")

template <int MR, typename Decode>
void tile(const Decode& d, const uint16_t* x, int64_t ldx, const float* bias, float* out, int64_t ldo, int cols) {
  constexpr int KS = kSplits<MR>;
  __m512 tot[MR];
  SQUASH_UNROLL for (int r = 0; r < MR; ++r) tot[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < d.groups; ++g) {
    __m512 acc[KS][MR];
    SQUASH_UNROLL for (int s = 0; s < KS; ++s)
      SQUASH_UNROLL for (int r = 0; r < MR; ++r) acc[s][r] = _mm512_setzero_ps();
    const int64_t k1 = (g + 1) * d.group;
    int64_t k = g * d.group;
    for (; k + 2 * KS <= k1; k += 2 * KS) {
      SQUASH_UNROLL for (int s = 0; s < KS; ++s) {
        const __m512bh wv = d.decode_pair(k + 2 * s);
        SQUASH_UNROLL for (int r = 0; r < MR; ++r)
          acc[s][r] = _mm512_dpbf16_ps(acc[s][r], wv, pair_of(x + r * ldx + k + 2 * s));
      }
    }
    for (; k < k1; k += 2) {  // a group of k-pairs that is not a multiple of KS (per channel, odd K / 2)
      const __m512bh wv = d.decode_pair(k);
      SQUASH_UNROLL for (int r = 0; r < MR; ++r) acc[0][r] = _mm512_dpbf16_ps(acc[0][r], wv, pair_of(x + r * ldx + k));
    }
    SQUASH_UNROLL for (int r = 0; r < MR; ++r) {
      __m512 a = acc[0][r];
      SQUASH_UNROLL for (int s = 1; s < KS; ++s) a = _mm512_add_ps(a, acc[s][r]);
      tot[r] = d.group_end(g, r, a, tot[r]);
    }
  }
  const __mmask16 valid = static_cast<__mmask16>((1u << cols) - 1);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(valid, bias) : _mm512_setzero_ps();
  SQUASH_UNROLL for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(out + r * ldo, valid, _mm512_add_ps(tot[r], b));
}

// Loop order as woq_avx2.cpp's run(): blocks of panels whose weights fit in ~256 KiB, then row
// tiles, then the block's panels; `set_panel(p, m)` points the decoder at panel p, row tile m.
template <typename Decode, typename SetPanel>
void run(Decode& d, const WoqProblem& pr, int64_t n, int64_t k, int64_t panel_bytes, int64_t p0, int64_t p1,
         SetPanel set_panel) {
  const int64_t block = std::max<int64_t>(1, (256 << 10) / panel_bytes);
  for (int64_t pb = p0; pb < p1; pb += block) {
    const int64_t pe = std::min(p1, pb + block);
    for (int64_t m = 0; m < pr.m; m += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, pr.m - m));
      for (int64_t p = pb; p < pe; ++p) {
        set_panel(p, m);
        const int cols = static_cast<int>(std::min<int64_t>(kWoqPanel, n - p * kWoqPanel));
        const uint16_t* x = pr.x_bf16 + m * k;
        const float* bias = pr.bias ? pr.bias + p * kWoqPanel : nullptr;
        float* out = pr.out + m * pr.ldo + p * kWoqPanel;
        switch (mr) {
          case 1: tile<1>(d, x, k, bias, out, pr.ldo, cols); break;
          case 2: tile<2>(d, x, k, bias, out, pr.ldo, cols); break;
          case 3: tile<3>(d, x, k, bias, out, pr.ldo, cols); break;
          case 4: tile<4>(d, x, k, bias, out, pr.ldo, cols); break;
          case 5: tile<5>(d, x, k, bias, out, pr.ldo, cols); break;
          case 6: tile<6>(d, x, k, bias, out, pr.ldo, cols); break;
          case 7: tile<7>(d, x, k, bias, out, pr.ldo, cols); break;
          default: tile<kMaxRows>(d, x, k, bias, out, pr.ldo, cols); break;
        }
      }
    }
  }
}

}  // namespace

void w4a16_avx512_bf16(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  const int64_t groups = w.k / w.group;
  std::vector<float> xsum(pr.m * groups);
  int4_group_sums(w, pr, xsum.data());
  alignas(64) uint16_t lut[32] = {};
  for (int q = 0; q < 16; ++q) {
    const float f = static_cast<float>(q);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    lut[q] = static_cast<uint16_t>(bits >> 16);  // exact: q has at most 4 significant bits
  }
  Int4Bf16 d{nullptr, nullptr, nullptr, nullptr, w.group, groups, _mm512_load_si512(lut),
             _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15)};
  run(d, pr, w.n, w.k, w.k * 8, p0, p1, [&](int64_t p, int64_t m) {
    d.w = w.packed + p * w.k * 8;
    d.s = w.scales + p * groups * kWoqPanel;
    d.z = w.zeros ? w.zeros + p * groups * kWoqPanel : nullptr;
    d.xsum = xsum.data() + m * groups;
  });
}

void w8a16_avx512_bf16(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  Int8Bf16 d{nullptr, nullptr, w.k, 1};
  run(d, pr, w.n, w.k, w.k * kWoqPanel, p0, p1, [&](int64_t p, int64_t) {
    d.w = w.packed + p * w.k * kWoqPanel;
    d.s = w.scales + p * kWoqPanel;
  });
}

}  // namespace squash::cpu_kernels::woq_detail
