// AVX-512 BF16 path of the W4A16 / W8A16 CPU kernels (woq.h), for bf16 activations; built with
// the avx512 flags and, for this file only, VBMI (CMakeLists.txt); run only where the CPU has
// avx512bf16 (and avx512vbmi for int4: woq_bf16_kernel).
//
// The AVX2 kernel spends 5 vector ops decoding 16 weights of one k and 2 FMAs using them, so it is
// bound by its own instruction count (15 GB/s of int4 weights on one Zen 5 core against ~30 GB/s
// that the core streams). Here int4 codes are decoded four k at a time (decode_quad: 16 columns x
// 4 k = 64 weights in 4 ops: one masked vpermb puts each byte in the low half of a word in the
// order the dot products read, then a shift and two vpermw table lookups, where bf16 holds 0..15
// exactly) and multiplied with vdpbf16ps against a broadcast of the bf16 x[k .. k+3]: 32
// multiply-adds per instruction, products exact in float32 (bf16 x bf16), sums in float32 as in
// the other paths. One row, one thread, weights hot in cache: 41-46 GB/s of int4 with the widen
// + vpermw reorder before the vpermb (bench/results/2026-12-02_cpu-woq-quads_probe.log), 25-27
// for the k-pair decode; the vpermb: bench/results/2026-12-03_cpu-woq-vbmi_probe.log. (An
// OR into bf16 128 + q instead of the table lookups measured a little faster, but its float32
// sums carry terms ~17x larger and lost the float32 summation bounds of tests/test_sensitivity.py
// and test_quant_prepacked.py: not kept.) The k-pair decode stays for int8 and for a per-channel
// int4 K that is not a multiple of 4. Same group-sum form as woq_avx2.cpp: per group
// t += s * sum_k x q - z s * sum_k x, so only the codes enter the dot products. int8 codes become
// bf16 pairs through float32 (widen, convert, keep the top halves: exact for |q| <= 128), the
// per-channel scale applied to the whole sum.
// vdpbf16ps treats bf16 subnormal inputs as 0 (DAZ): an activation below 1.2e-38 contributes 0.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
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
  static constexpr int kBytesPerK = 8;
  const uint8_t* w;    // panel start [K, 8]
  const float* s;      // [G, 16]
  const uint8_t* z;    // [G, 16] or nullptr (zero point 8)
  const float* xsum;   // [rows, G]
  int64_t group, groups;
  __m512i lut;         // word i -> bf16 bits of i & 15, i < 32
  __m128i interleave;  // bytes of k and k + 1 alternated

  // Dword lane c of the result: (q[k, c], q[k + 1, c]) as bf16, c < 16.
  __m512bh decode_pair(int64_t k) const {
    const __m128i b = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * 8)), interleave);
    const __m256i wd = _mm256_cvtepu8_epi16(b);  // word 2j: byte j of k, word 2j + 1: byte j of k + 1
    const __m256i hi = _mm256_srli_epi16(wd, 4);  // columns 8..15; the low nibbles (0..7) need no mask
    return (__m512bh)_mm512_permutexvar_epi16(_mm512_inserti64x4(_mm512_castsi256_si512(wd), hi, 1), lut);
  }
  __m512 group_end(int64_t g, int r, __m512 a, __m512 t) const {
    const __m512 sv = _mm512_loadu_ps(s + g * kWoqPanel);
    __m512 zv = _mm512_set1_ps(8.f);
    if (z) {  // a zero point above 15 (edited after prepacking) is NaN: its output channel shows it
      zv = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(z + g * kWoqPanel))));
      zv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(zv, _mm512_set1_ps(15.f), _CMP_GT_OQ), zv,
                                _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
    }
    const __m512 xs = _mm512_set1_ps(-xsum[r * groups + g]);
    return _mm512_fmadd_ps(a, sv, _mm512_fmadd_ps(_mm512_mul_ps(zv, sv), xs, t));
  }

  // tile_quads' decode: k .. k + 3 of the panel (32 bytes, 64 weights) as two bf16
  // vectors, cols 0..7 (`lo`) and 8..15 (`hi`); dword 2c holds (q[k, c], q[k + 1, c]) and dword
  // 2c + 1 holds (q[k + 2, c], q[k + 3, c]), so one 64-bit broadcast of x[k .. k + 3] multiplies
  // both. 4 ops for 64 weights (one masked vpermb widens and orders the bytes) where decode_pair
  // takes 6 for 32.
  void decode_quad(int64_t k, __m512bh& lo, __m512bh& hi) const {
    const __m512i wd = _mm512_maskz_permutexvar_epi8(
        0x5555555555555555ull, quad_order,
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k * 8))));
    // vpermw reads the low 5 bits of each index: lut32 repeats the 16 entries, so the low
    // nibble needs no mask and the high one just the shift.
    lo = (__m512bh)_mm512_permutexvar_epi16(wd, lut);
    hi = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(wd, 4), lut);
  }
  __m512i quad_order;  // byte 2(4j + t) <- byte 8t + j (byte j of k + t); odd bytes zeroed
};

struct Int8Bf16 {
  static constexpr int kBytesPerK = kWoqPanel;
  const int8_t* w;  // panel start [K, 16]
  const float* s;   // [16]
  int64_t group, groups;  // one group spanning K

  // float(q) holds an int8 exactly in its top 16 bits, which are then its bf16: dword c of the
  // pair is float(q[k, c]) >> 16 (low word) and float(q[k + 1, c]) with its low word replaced
  // (high word). 6 ops for 32 weights, where interleaving bytes first and converting the two
  // halves with vcvtne2ps2bf16 took 9: M = 1 hot on one core 84-93 vs 104-113 us (2048 x 2048)
  // and 341-346 vs 408-530 us (4096 x 4096); M = 16 and 64 unchanged within noise
  // (bench/results/2026-12-02_cpu-w8a16-decode_probe.log).
  __m512bh decode_pair(int64_t k) const {
    const __m512i f0 = _mm512_castps_si512(_mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * kWoqPanel)))));
    const __m512i f1 = _mm512_castps_si512(_mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (k + 1) * kWoqPanel)))));
    return (__m512bh)_mm512_mask_blend_epi16(0xAAAAAAAA, _mm512_srli_epi32(f0, 16), f1);
  }
  __m512 group_end(int64_t, int, __m512 a, __m512 t) const { return _mm512_fmadd_ps(a, _mm512_loadu_ps(s), t); }
};

inline __m512bh pair_of(const uint16_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

#define SQUASH_UNROLL _Pragma("GCC unroll 16")

// Software prefetch of the weight stream kPrefetchBytes ahead, one per cache line of the `bytes`
// an iteration reads. At M = 1 the core's own decode work keeps too few misses in flight for the
// hardware prefetcher alone: 2 threads, weights cold, six Llama shapes x 3 A/B runs, W4A16 reached
// 93.5% of the read bound (torch.sum over the same bytes, interleaved) with it against 78.0%
// without (1.47x against 1.25x torch's int4 kernel); 1024 bytes ahead helped less; weights hot it
// costs 0-3% (bench/results/2026-12-03_cpu-woq-prefetch_probe.log).
constexpr int64_t kPrefetchBytes = 4096;
inline void prefetch_ahead(const void* p, int bytes) {
  SQUASH_UNROLL for (int c = 0; c < bytes; c += 64)
    _mm_prefetch(static_cast<const char*>(p) + c + kPrefetchBytes, _MM_HINT_T0);
}

// out[r, :cols] = tot[r] + bias for the tile's rows.
template <int MR>
void store_rows(const __m512* tot, const float* bias, float* out, int64_t ldo, int cols) {
  const __mmask16 valid = static_cast<__mmask16>((1u << cols) - 1);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(valid, bias) : _mm512_setzero_ps();
  SQUASH_UNROLL for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(out + r * ldo, valid, _mm512_add_ps(tot[r], b));
}

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
      prefetch_ahead(d.w + k * Decode::kBytesPerK, 2 * KS * Decode::kBytesPerK);
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
  store_rows<MR>(tot, bias, out, ldo, cols);
}

// The int4 tile: decode_quad's 64 weights per step, 4 * KS k per iteration (KS quads of two
// accumulators per row, for vdpbf16ps latency). Needs a group that is a multiple of 4.
template <int MR>
void tile_quads(const Int4Bf16& d, const uint16_t* x, int64_t ldx, const float* bias, float* out, int64_t ldo,
                int cols) {
  constexpr int KS = MR == 1 ? 4 : (MR == 2 ? 2 : 1);
  // Lanes 2c and 2c + 1 of a sum are column c's two halves: add them, then take the even lanes
  // of the cols 0..7 and 8..15 sums.
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  __m512 tot[MR];
  SQUASH_UNROLL for (int r = 0; r < MR; ++r) tot[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < d.groups; ++g) {
    __m512 lo[KS][MR], hi[KS][MR];
    SQUASH_UNROLL for (int s = 0; s < KS; ++s) SQUASH_UNROLL for (int r = 0; r < MR; ++r) {
      lo[s][r] = _mm512_setzero_ps();
      hi[s][r] = _mm512_setzero_ps();
    }
    const int64_t k1 = (g + 1) * d.group;
    int64_t k = g * d.group;
    auto step = [&](int s, int64_t kk) {
      __m512bh wl, wh;
      d.decode_quad(kk, wl, wh);
      SQUASH_UNROLL for (int r = 0; r < MR; ++r) {
        int64_t xv;
        std::memcpy(&xv, x + r * ldx + kk, 8);
        const __m512bh xq = (__m512bh)_mm512_set1_epi64(xv);
        lo[s][r] = _mm512_dpbf16_ps(lo[s][r], wl, xq);
        hi[s][r] = _mm512_dpbf16_ps(hi[s][r], wh, xq);
      }
    };
    for (; k + 4 * KS <= k1; k += 4 * KS) {
      prefetch_ahead(d.w + k * Int4Bf16::kBytesPerK, 4 * KS * Int4Bf16::kBytesPerK);
      SQUASH_UNROLL for (int s = 0; s < KS; ++s) step(s, k + 4 * s);
    }
    for (; k < k1; k += 4) step(0, k);
    SQUASH_UNROLL for (int r = 0; r < MR; ++r) {
      __m512 l = lo[0][r], h = hi[0][r];
      SQUASH_UNROLL for (int s = 1; s < KS; ++s) {
        l = _mm512_add_ps(l, lo[s][r]);
        h = _mm512_add_ps(h, hi[s][r]);
      }
      l = _mm512_add_ps(l, _mm512_permute_ps(l, 0xB1));  // 0xB1: swap the lanes of each pair
      h = _mm512_add_ps(h, _mm512_permute_ps(h, 0xB1));
      tot[r] = d.group_end(g, r, _mm512_permutex2var_ps(l, evens, h), tot[r]);
    }
  }
  store_rows<MR>(tot, bias, out, ldo, cols);
}

// f(std::integral_constant<int, mr>{}) for a tile of mr = 1 .. kMaxRows rows.
template <typename F>
void with_rows(int mr, F&& f) {
  switch (mr) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, kMaxRows>{});
  }
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
        with_rows(mr, [&](auto rows) {
          constexpr int MR = decltype(rows)::value;
          if constexpr (std::is_same_v<Decode, Int4Bf16>) {
            if (d.group % 4 == 0) return tile_quads<MR>(d, x, k, bias, out, pr.ldo, cols);
          }
          tile<MR>(d, x, k, bias, out, pr.ldo, cols);
        });
      }
    }
  }
}

}  // namespace

void w4a16_avx512_bf16(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  const int64_t groups = w.k / w.group;
  std::vector<float> xsum(pr.m * groups);
  int4_group_sums(w, pr, xsum.data());
  alignas(64) uint16_t lut[32], quad_order[32];
  for (int i = 0; i < 32; ++i) {
    const float f = static_cast<float>(i & 15);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    lut[i] = static_cast<uint16_t>(bits >> 16);  // exact: i & 15 has at most 4 significant bits
    quad_order[i] = static_cast<uint16_t>(8 * (i % 4) + i / 4);  // the even bytes
  }
  Int4Bf16 d{nullptr, nullptr, nullptr, nullptr, w.group, groups, _mm512_load_si512(lut),
             _mm_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), _mm512_load_si512(quad_order)};
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
