// AVX2 + FMA path of attention_rows.h (built with -mavx2 -mfma -mf16c).
//
// Prefill-size blocks (kDirectRows query rows or more): K is transposed once into fp32 [D, Sk]
// (8 x 8 register transposes), so the scores of 4 query rows x 16 keys come from broadcast-q x K^T
// FMAs with no horizontal sums, and V is converted to fp32 once. Decode-size blocks read K and V
// in place instead: each score is a D-long dot product, 8 keys at a time reduced together. The
// softmax runs 8 keys a lane; P @ V accumulates up to 64 output columns of a row in registers over
// the keys it sees.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/attention_rows.h"
#include "cpu/vec_avx2.h"

namespace squash::cpu_kernels {
namespace {

constexpr int kRows = 4;  // query rows per score tile: 4 x 2 accumulators + 2 K^T vectors

// Below this many query rows the block reads K in place: transposing K costs as much as one row's
// dot products, and at decode's 1 query row against 2048 cached keys (32 q heads, 8 kv heads, 64,
// bf16, one thread) the transposed path took 7.1 ms against 2.1 ms for the scalar reference
// (bench/results/2026-12-02_cpu-amd-epyc-6_probes.log, /tmp/t_dec.py).
constexpr int64_t kDirectRows = 4;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Keys query row i sees: [0, n).
int64_t visible(int64_t i, const AttnBlock& a, bool causal) {
  return causal ? std::clamp<int64_t>(i + a.sk - a.sq + 1, 0, a.sk) : a.sk;
}

// kt[d * ldk + j] = k[j, d] for j < sk (columns [sk, ldk) are zero), 8 x 8 blocks in registers.
void transpose_k(const AttnBlock& a, Dtype t, int64_t D, float* kt, int64_t ldk) {
  for (int64_t j0 = 0; j0 < ldk; j0 += 8) {
    for (int64_t d0 = 0; d0 < D; d0 += 8) {
      __m256 r[8];
      for (int j = 0; j < 8; ++j)
        r[j] = j0 + j < a.sk ? avx2::load8(t, avx2::offset(a.k, t, (j0 + j) * a.k_stride + d0)) : _mm256_setzero_ps();
      // r[j] holds k[j0 + j, d0 .. d0 + 8): transpose so r[d] holds k[j0 .. j0 + 8, d0 + d].
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      const __m256 c[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                           _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                           _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                           _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
      for (int d = 0; d < 8; ++d) _mm256_storeu_ps(kt + (d0 + d) * ldk + j0, c[d]);
    }
  }
}

// scores[r * ld + j] = scale * q[i0 + r] . k[j] for r < R, j < n (rounded up to 16).
template <int R>
void score_tile(const float* q, int64_t D, const float* kt, int64_t ldk, int64_t n, float scale, float* scores,
                int64_t ld) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < n; j += 16) {
    __m256 acc[R][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m256 k0 = _mm256_loadu_ps(kt + d * ldk + j), k1 = _mm256_loadu_ps(kt + d * ldk + j + 8);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 qb = _mm256_broadcast_ss(q + r * D + d);
        acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(scores + r * ld + j, _mm256_mul_ps(acc[r][0], sc));
      _mm256_storeu_ps(scores + r * ld + j + 8, _mm256_mul_ps(acc[r][1], sc));
    }
  }
}

// Lane u of the result = the sum of the 8 lanes of v[u].
inline __m256 reduce8(const __m256* v) {
  const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// scores[j] = scale * q . k[j] for j < n, K read in place (dtype t, row stride ld).
void score_row_direct(const float* q, const void* k, int64_t ld, Dtype t, int64_t D, int64_t n, float scale,
                      float* scores) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u)
        acc[u] = _mm256_fmadd_ps(qv, avx2::load8(t, avx2::offset(k, t, (j + u) * ld + d)), acc[u]);
    }
    _mm256_storeu_ps(scores + j, _mm256_mul_ps(reduce8(acc), _mm256_set1_ps(scale)));
  }
  for (; j < n; ++j) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), avx2::load8(t, avx2::offset(k, t, j * ld + d)), acc);
    scores[j] = avx2::hsum(acc) * scale;
  }
}

// p[j] = exp(s[j] - max) in place for j < n, 0 for j in [n, round_up(n, 8)); returns (max, sum).
void softmax_row(float* s, int64_t n, float& m_out, float& l_out) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  auto valid = [&](int64_t j) {  // lanes j .. j + 8 that are < n
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - j)), lane));
  };
  __m256 mv = ninf;
  for (int64_t j = 0; j < n; j += 8) mv = _mm256_max_ps(mv, _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j), valid(j)));
  // A NaN score: max_ps keeps its second operand, so a NaN lane can be dropped from the max, but
  // exp(NaN - m) is NaN and so is the sum: the row's output and lse come out NaN, as in the reference.
  const float m = avx2::hmax(mv);
  const __m256 mb = _mm256_set1_ps(m);
  __m256 lv = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 p = _mm256_and_ps(avx2::exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), mb)), valid(j));
    _mm256_storeu_ps(s + j, p);
    lv = _mm256_add_ps(lv, p);
  }
  m_out = m;
  l_out = avx2::hsum(lv);
}

// o[d0 .. d0 + 8 NV) = sum_j p[j] v[j, d0 ..] for j < n (v of dtype t, row stride ldv).
template <int NV>
void pv_chunk(const float* p, int64_t n, const void* v, Dtype t, int64_t ldv, int64_t d0, __m256* o) {
  __m256 acc[NV];
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; ++j) {
    const __m256 pb = _mm256_broadcast_ss(p + j);
    const void* vr = avx2::offset(v, t, j * ldv + d0);
#pragma GCC unroll 8
    for (int c = 0; c < NV; ++c) acc[c] = _mm256_fmadd_ps(pb, avx2::load8(t, avx2::offset(vr, t, 8 * c)), acc[c]);
  }
#pragma GCC unroll 8
  for (int c = 0; c < NV; ++c) o[c] = acc[c];
}

// out[0, D) = (sum_j p[j] v[j]) * inv_l, v of dtype vt, out of dtype t.
void pv_row(const float* p, int64_t n, const void* v, Dtype vt, int64_t ldv, int64_t D, float inv_l, Dtype t,
            void* out) {
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    const int nv = static_cast<int>(std::min<int64_t>(8, (D - d0) / 8));
    __m256 o[8];
    switch (nv) {
      case 1: pv_chunk<1>(p, n, v, vt, ldv, d0, o); break;
      case 2: pv_chunk<2>(p, n, v, vt, ldv, d0, o); break;
      case 3: pv_chunk<3>(p, n, v, vt, ldv, d0, o); break;
      case 4: pv_chunk<4>(p, n, v, vt, ldv, d0, o); break;
      case 5: pv_chunk<5>(p, n, v, vt, ldv, d0, o); break;
      case 6: pv_chunk<6>(p, n, v, vt, ldv, d0, o); break;
      case 7: pv_chunk<7>(p, n, v, vt, ldv, d0, o); break;
      default: pv_chunk<8>(p, n, v, vt, ldv, d0, o); break;
    }
    const __m256 il = _mm256_set1_ps(inv_l);
    for (int c = 0; c < nv; ++c) avx2::store8(t, avx2::offset(out, t, d0 + 8 * c), _mm256_mul_ps(o[c], il));
  }
}

}  // namespace

void attend_block_avx2(const AttnBlock& a, Dtype t, int64_t D, float scale, bool causal, AttnScratch& s) {
  if (a.sq == 0) return;
  const bool direct = a.sq < kDirectRows;
  const int64_t ldk = round_up(std::max<int64_t>(a.sk, 1), 16);  // also the scores' row stride
  const void* v = a.v;
  Dtype vt = t;
  int64_t ldv = a.v_stride;
  if (!direct) {
    s.kt.resize(D * ldk);
    transpose_k(a, t, D, s.kt.data(), ldk);
    if (t != Dtype::kF32) {
      s.v.resize(a.sk * D);
      for (int64_t j = 0; j < a.sk; ++j)
        for (int64_t d = 0; d < D; d += 8)
          _mm256_storeu_ps(s.v.data() + j * D + d, avx2::load8(t, avx2::offset(a.v, t, j * a.v_stride + d)));
      v = s.v.data(), vt = Dtype::kF32, ldv = D;
    }
  }
  s.q.resize(kRows * D);
  s.scores.resize(kRows * ldk);
  for (int64_t i0 = 0; i0 < a.sq; i0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, a.sq - i0));
    for (int r = 0; r < rows; ++r)
      for (int64_t d = 0; d < D; d += 8)
        _mm256_storeu_ps(s.q.data() + r * D + d, avx2::load8(t, avx2::offset(a.q, t, (i0 + r) * a.q_stride + d)));
    if (direct) {
      for (int r = 0; r < rows; ++r)
        score_row_direct(s.q.data() + r * D, a.k, a.k_stride, t, D, visible(i0 + r, a, causal), scale,
                         s.scores.data() + r * ldk);
    } else {
      const int64_t n_tile = visible(i0 + rows - 1, a, causal);  // the tile's last row sees the most keys
      switch (rows) {
        case 1: score_tile<1>(s.q.data(), D, s.kt.data(), ldk, n_tile, scale, s.scores.data(), ldk); break;
        case 2: score_tile<2>(s.q.data(), D, s.kt.data(), ldk, n_tile, scale, s.scores.data(), ldk); break;
        case 3: score_tile<3>(s.q.data(), D, s.kt.data(), ldk, n_tile, scale, s.scores.data(), ldk); break;
        default: score_tile<kRows>(s.q.data(), D, s.kt.data(), ldk, n_tile, scale, s.scores.data(), ldk); break;
      }
    }
    for (int r = 0; r < rows; ++r) {
      const int64_t i = i0 + r, n = visible(i, a, causal);
      void* o = avx2::offset(a.out, t, i * a.out_stride);
      if (n == 0) {  // sees no key: out 0, lse -inf
        for (int64_t d = 0; d < D; d += 8) avx2::store8(t, avx2::offset(o, t, d), _mm256_setzero_ps());
        a.lse[i] = -std::numeric_limits<float>::infinity();
        continue;
      }
      float* p = s.scores.data() + r * ldk;
      float m, l;
      softmax_row(p, n, m, l);
      pv_row(p, n, v, vt, ldv, D, 1.f / l, t, o);  // l >= 1: the max term contributes exp(0)
      a.lse[i] = m + std::log(l);
    }
  }
}

}  // namespace squash::cpu_kernels
