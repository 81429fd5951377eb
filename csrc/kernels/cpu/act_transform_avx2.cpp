// AVX2 path of act_transform.h. Stages h = 1, 2, 4 of the Hadamard transform run inside one
// 8-float vector: v' = v * sign + swap_h(v), where swap_h exchanges the lanes h apart and sign is
// +1 on the first lane of each pair, -1 on the second (a * 1 + b = a + b, b * -1 + a = a - b: the
// FMA's product is exact, so each output is rounded once, as the scalar a + b / a - b are).
// Stages h >= 8 pair whole vectors. Blocks of 2 and 4, and K % 8 tails, take the scalar row.
#include <immintrin.h>

#include <cmath>

#include "cpu/act_transform.h"
#include "cpu/vec_avx2.h"

namespace squash::cpu_kernels {

void act_transform_row_avx2(const ActTransformParams& p, int64_t r, float* buf) {
  const ActQuantParams& in = p.quant;
  const int64_t K = in.K;
  if (K % 8 || (p.block && p.block < 8)) return act_transform_row_scalar(p, r, buf);
  const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1), s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1),
               s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  for (int64_t k = 0; k < K; k += 8) {
    __m256 v = avx2::load8(in.dtype, avx2::offset(in.x, in.dtype, r * in.ldx + k));
    if (p.mul) v = _mm256_mul_ps(v, _mm256_loadu_ps(p.mul + k));
    if (p.block) {
      v = _mm256_fmadd_ps(v, s1, _mm256_permute_ps(v, 0xB1));
      v = _mm256_fmadd_ps(v, s2, _mm256_permute_ps(v, 0x4E));
      v = _mm256_fmadd_ps(v, s4, _mm256_permute2f128_ps(v, v, 1));
    }
    _mm256_storeu_ps(buf + k, v);
  }
  if (!p.block) return;
  for (int64_t h = 8; h < p.block; h *= 2)
    for (int64_t i = 0; i < K; i += 2 * h)
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(buf + j), b = _mm256_loadu_ps(buf + j + h);
        _mm256_storeu_ps(buf + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(buf + j + h, _mm256_sub_ps(a, b));
      }
  const __m256 norm = _mm256_set1_ps(static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.block))));
  for (int64_t k = 0; k < K; k += 8) _mm256_storeu_ps(buf + k, _mm256_mul_ps(_mm256_loadu_ps(buf + k), norm));
}

}  // namespace squash::cpu_kernels
