// AVX2 path of norm_rows.h: per row, h (after the residual add, rounded to the dtype) is kept as
// float32, the statistics run over 4 double lanes (two-pass mean / variance, as the reference),
// y = (h - mean) * rstd * w + b in double, rounded once to float32, then stored in the dtype or
// quantized. The scalar reference took 4.4 ms per MiniLM layer_norm_quant call (1100 x 384
// fp32, one Zen 3 core, torch profiler; std::nearbyint is a libm call per element).
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "cpu/norm_rows.h"
#include "cpu/vec_avx2.h"

namespace squash::cpu_kernels {
namespace {

inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// One row: h (float32) of H values into hb; returns through the p outputs.
void one_row(const NormRowsParams& p, int64_t row, float* hb, float* yb) {
  const int64_t H = p.hidden, H8 = H & ~int64_t{7}, off = row * H;
  const Dtype t = p.dtype;
  // h = x, or to_dtype(float(x) + float(r)) stored as residual_out and normalized as rounded.
  for (int64_t i = 0; i < H8; i += 8) {
    __m256 h = avx2::load8(t, avx2::offset(p.x, t, off + i));
    if (p.residual) {
      h = _mm256_add_ps(h, avx2::load8(t, avx2::offset(p.residual, t, off + i)));
      if (p.residual_out) avx2::store8(t, avx2::offset(p.residual_out, t, off + i), h);
      h = avx2::round_to(t, h);
    }
    _mm256_storeu_ps(hb + i, h);
  }
  for (int64_t i = H8; i < H; ++i) {
    float h = load_as(t, p.x, off + i);
    if (p.residual) {
      h = round_as(t, h + load_as(t, p.residual, off + i));
      if (p.residual_out) store_as(t, p.residual_out, off + i, h);
    }
    hb[i] = h;
  }

  // Statistics in double, two accumulators of 4 lanes (each 8 floats widen to 2 x 4 doubles).
  double mean = 0.0;
  if (p.kind == NormKind::kLayer) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (int64_t i = 0; i < H8; i += 8) {
      s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm_loadu_ps(hb + i)));
      s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm_loadu_ps(hb + i + 4)));
    }
    double sum = hsum(_mm256_add_pd(s0, s1));
    for (int64_t i = H8; i < H; ++i) sum += hb[i];
    mean = sum / static_cast<double>(H);
  }
  const __m256d vmean = _mm256_set1_pd(mean);
  __m256d q0 = _mm256_setzero_pd(), q1 = q0;
  for (int64_t i = 0; i < H8; i += 8) {
    const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(hb + i)), vmean);
    const __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(hb + i + 4)), vmean);
    q0 = _mm256_add_pd(q0, _mm256_mul_pd(d0, d0));
    q1 = _mm256_add_pd(q1, _mm256_mul_pd(d1, d1));
  }
  double sq = hsum(_mm256_add_pd(q0, q1));
  for (int64_t i = H8; i < H; ++i) sq += (hb[i] - mean) * (hb[i] - mean);
  const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(H) + p.eps);

  // y in double, rounded once to float32; absmax and NaN tracked for the quantizer.
  const __m256d vrstd = _mm256_set1_pd(rstd);
  for (int64_t i = 0; i < H8; i += 4) {
    __m256d v = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(hb + i)), vmean), vrstd);
    if (p.weight) v = _mm256_mul_pd(v, _mm256_loadu_pd(p.weight + i));
    if (p.bias) v = _mm256_add_pd(v, _mm256_loadu_pd(p.bias + i));
    _mm_storeu_ps(yb + i, _mm256_cvtpd_ps(v));
  }
  for (int64_t i = H8; i < H; ++i) {
    double v = (hb[i] - mean) * rstd;
    if (p.weight) v *= p.weight[i];
    if (p.bias) v += p.bias[i];
    yb[i] = static_cast<float>(v);
  }
  if (p.out) {
    for (int64_t i = 0; i < H8; i += 8) avx2::store8(t, avx2::offset(p.out, t, off + i), _mm256_loadu_ps(yb + i));
    for (int64_t i = H8; i < H; ++i) store_as(t, p.out, off + i, yb[i]);
  }
  if (p.mode == quant::QuantMode::kNone) return;
  __m256 amax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < H8; i += 8) {
    const __m256 y = _mm256_loadu_ps(yb + i);
    amax = _mm256_max_ps(_mm256_andnot_ps(sign, y), amax);  // NaN lanes keep amax (maxps returns its second operand)
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
  }
  float absmax = avx2::hmax(amax);
  bool has_nan = !_mm256_testz_ps(nan, nan);
  for (int64_t i = H8; i < H; ++i) {
    absmax = std::fabs(yb[i]) > absmax ? std::fabs(yb[i]) : absmax;
    has_nan |= std::isnan(yb[i]);
  }
  const quant::RowQuant r = quant::row_quant(p.mode, absmax, p.static_scale);
  const __m256 pre = _mm256_set1_ps(r.prescale), inv = _mm256_set1_ps(r.inv);
  int8_t* q = p.q + off;
  for (int64_t i = 0; i < H8; i += 8)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i),
                     avx2::quantize8(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(yb + i), pre), inv)));
  for (int64_t i = H8; i < H; ++i) q[i] = r.quantize(yb[i]);
  p.scales[row] = quant::row_scale(r, has_nan);
}

}  // namespace

void norm_rows_avx2(const NormRowsParams& p, int64_t r0, int64_t r1) {
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(2 * p.hidden + 8));
  for (int64_t row = r0; row < r1; ++row) one_row(p, row, buf.data(), buf.data() + p.hidden + 8);
}

}  // namespace squash::cpu_kernels
