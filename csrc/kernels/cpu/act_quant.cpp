#include "cpu/act_quant.h"

#include <cmath>

namespace squash::cpu_kernels {

void act_quant_rows(const ActQuantParams& p, int64_t r0, int64_t r1, Isa isa) {
  if (isa >= Isa::kAvx2)
    act_quant_rows_avx2(p, r0, r1);
  else
    act_quant_rows_scalar(p, r0, r1);
}

void act_quant_rows_scalar(const ActQuantParams& p, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t off = r * p.ldx;
    float absmax = 0.f;
    bool has_nan = false;
    for (int64_t k = 0; k < p.K; ++k) {
      const float a = std::fabs(load_as(p.dtype, p.x, off + k));
      absmax = a > absmax ? a : absmax;
      has_nan |= std::isnan(a);
    }
    const quant::RowQuant rq = quant::row_quant(p.mode, absmax, p.static_scale);
    int8_t* q = p.q + r * p.K;
    for (int64_t k = 0; k < p.K; ++k) q[k] = rq.quantize(load_as(p.dtype, p.x, off + k));
    p.scales[r] = quant::row_scale(rq, has_nan);
  }
}

}  // namespace squash::cpu_kernels
