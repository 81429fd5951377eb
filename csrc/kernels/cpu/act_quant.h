// Per-row int8 quantization of activations (quantize_activation_int8) on the CPU, torch-free:
// rows [r0, r1) of x [rows, K] (row stride ldx) into q [rows, K] and one scale per row, with the
// rounding, NaN and tiny-row rule of common/row_quant.h.
#pragma once
#include <cstdint>

#include "common/row_quant.h"
#include "cpu/convert.h"
#include "cpu/isa.h"

namespace squash::cpu_kernels {

struct ActQuantParams {
  const void* x = nullptr;
  int8_t* q = nullptr;
  float* scales = nullptr;
  int64_t K = 0, ldx = 0;
  Dtype dtype = Dtype::kF32;
  quant::QuantMode mode = quant::QuantMode::kDynamic;  // kDynamic or kStatic
  float static_scale = 0.f;
};

void act_quant_rows(const ActQuantParams& p, int64_t r0, int64_t r1, Isa isa);
void act_quant_rows_scalar(const ActQuantParams& p, int64_t r0, int64_t r1);
void act_quant_rows_avx2(const ActQuantParams& p, int64_t r0, int64_t r1);

}  // namespace squash::cpu_kernels
