#include "cpu/act_transform.h"

#include <cmath>

namespace squash::cpu_kernels {

void act_transform_row_scalar(const ActTransformParams& p, int64_t r, float* buf) {
  const ActQuantParams& in = p.quant;
  for (int64_t k = 0; k < in.K; ++k) {
    const float v = load_as(in.dtype, in.x, r * in.ldx + k);
    buf[k] = p.mul ? v * p.mul[k] : v;
  }
  if (!p.block) return;
  for (int64_t h = 1; h < p.block; h *= 2)
    for (int64_t i = 0; i < in.K; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = buf[j], b = buf[j + h];
        buf[j] = a + b;
        buf[j + h] = a - b;
      }
  const float norm = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.block)));
  for (int64_t k = 0; k < in.K; ++k) buf[k] = buf[k] * norm;
}

void act_transform_quant_rows(const ActTransformParams& p, int64_t r0, int64_t r1, float* buf, Isa isa) {
  ActQuantParams row = p.quant;  // one float32 row: buf
  row.x = buf, row.ldx = 0, row.dtype = Dtype::kF32;
  for (int64_t r = r0; r < r1; ++r) {
    if (isa >= Isa::kAvx2)
      act_transform_row_avx2(p, r, buf);
    else
      act_transform_row_scalar(p, r, buf);
    row.q = p.quant.q + r * p.quant.K, row.scales = p.quant.scales + r;
    act_quant_rows(row, 0, 1, isa);
  }
}

}  // namespace squash::cpu_kernels
