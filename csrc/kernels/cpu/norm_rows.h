// LayerNorm / RMSNorm rows (+ residual add, + int8 output) on the CPU, torch-free: the vector
// path of the norm ops (csrc/ops/norm_cpu.cpp holds their contract and the scalar reference,
// which takes these same parameters).
#pragma once
#include <cstdint>

#include "common/row_quant.h"
#include "cpu/convert.h"

namespace squash::cpu_kernels {

enum class NormKind { kLayer, kRms };

struct NormRowsParams {
  int64_t rows = 0;
  int64_t hidden = 0;
  const void* x = nullptr;         // [rows, hidden] of dtype, contiguous
  const void* residual = nullptr;  // null: no residual
  void* residual_out = nullptr;    // the rounded sum, or null: not stored
  void* out = nullptr;             // dtype output (mode kNone; in the quant modes too when not null)
  int8_t* q = nullptr;             // int8 output (quant modes)
  float* scales = nullptr;         // one per row (quant modes)
  const double* weight = nullptr;  // null: no weight (gamma-migrated form for layer_norm)
  const double* bias = nullptr;    // null: no bias
  double eps = 0.0;
  float static_scale = 0.0f;       // mode kStatic only
  Dtype dtype = Dtype::kF32;
  NormKind kind = NormKind::kLayer;
  quant::QuantMode mode = quant::QuantMode::kNone;
};

// Rows [r0, r1). Statistics and y in float64 like the reference (so the two agree to float64
// rounding and meet the same tests), 4 double lanes at a time.
void norm_rows_avx2(const NormRowsParams& p, int64_t r0, int64_t r1);

}  // namespace squash::cpu_kernels
