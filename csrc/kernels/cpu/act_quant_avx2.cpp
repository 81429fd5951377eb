// AVX2 path of act_quant.h: absmax and NaN in one pass over 8 lanes, then the 8-lane quantizer.
#include <immintrin.h>

#include <cmath>

#include "cpu/act_quant.h"
#include "cpu/vec_avx2.h"

namespace squash::cpu_kernels {

void act_quant_rows_avx2(const ActQuantParams& p, int64_t r0, int64_t r1) {
  const int64_t K8 = p.K & ~int64_t{7};
  const Dtype t = p.dtype;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t off = r * p.ldx;
    __m256 amax = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) {
      const __m256 v = avx2::load8(t, avx2::offset(p.x, t, off + k));
      amax = _mm256_max_ps(_mm256_andnot_ps(sign, v), amax);  // NaN lanes keep amax (maxps returns its second operand)
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float absmax = avx2::hmax(amax);
    bool has_nan = !_mm256_testz_ps(nan, nan);
    for (int64_t k = K8; k < p.K; ++k) {
      const float a = std::fabs(load_as(t, p.x, off + k));
      absmax = a > absmax ? a : absmax;
      has_nan |= std::isnan(a);
    }
    const quant::RowQuant rq = quant::row_quant(p.mode, absmax, p.static_scale);
    const __m256 pre = _mm256_set1_ps(rq.prescale), inv = _mm256_set1_ps(rq.inv);
    int8_t* q = p.q + r * p.K;
    for (int64_t k = 0; k < K8; k += 8)
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k),
                       avx2::quantize8(_mm256_mul_ps(_mm256_mul_ps(avx2::load8(t, avx2::offset(p.x, t, off + k)), pre), inv)));
    for (int64_t k = K8; k < p.K; ++k) q[k] = rq.quantize(load_as(t, p.x, off + k));
    p.scales[r] = quant::row_scale(rq, has_nan);
  }
}

}  // namespace squash::cpu_kernels
