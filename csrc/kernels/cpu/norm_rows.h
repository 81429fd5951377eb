// LayerNorm / RMSNorm rows (+ residual add, + int8 output) on the CPU, torch-free: the vector
// path of the norm ops (csrc/ops/norm_cpu.cpp holds their contract and the scalar reference,
// which takes these same parameters).
#pragma once
#include <cstdint>

#include "cpu/convert.h"

namespace squash::cpu_kernels {

enum class NormKind { kLayer, kRms };
enum class QuantMode { kNone, kDynamic, kStatic };

struct NormRowsParams {
  int64_t rows = 0;
  int64_t hidden = 0;
  const void* x = nullptr;         // [rows, hidden] of dtype, contiguous
  const void* residual = nullptr;  // null: no residual
  void* residual_out = nullptr;
  void* out = nullptr;             // dtype output (QuantMode::kNone)
  int8_t* q = nullptr;             // int8 output (quant modes)
  float* scales = nullptr;         // one per row (quant modes)
  const double* weight = nullptr;  // null: no weight (gamma-migrated form for layer_norm)
  const double* bias = nullptr;    // null: no bias
  double eps = 0.0;
  float static_scale = 0.0f;       // QuantMode::kStatic only
  Dtype dtype = Dtype::kF32;
  NormKind kind = NormKind::kLayer;
  QuantMode quant = QuantMode::kNone;
};

// Rows [r0, r1). Statistics and y in float64 like the reference (so the two agree to float64
// rounding and meet the same tests), 4 double lanes at a time.
void norm_rows_avx2(const NormRowsParams& p, int64_t r0, int64_t r1);

// The int8 quantization of one row of y (float32, n values), shared by every path of the norm
// and activation quantizers: dynamic s = absmax / 127 and inv = 127 / absmax, static s = scale
// and inv = 1 / scale; q = clamp(rne(y * inv), -127, 127).
// - a row holding NaN gets s = NaN (its NaN elements q = 0): the NaN shows downstream, where a
//   finite scale would hide it (a W8A8 output row becomes NaN, as in float);
// - an all-zero row gets s = 0, q = 0;
// - absmax below 127 / FLT_MAX (where 127 / absmax overflows) is handled by scaling y and absmax
//   by 2^64 first, so a tiny row still quantizes within half a step of y / s.
struct RowQuant {
  float inv = 0.f;       // multiply y by prescale, then by inv
  float prescale = 1.f;
  float scale = 0.f;
};
inline RowQuant row_quant(QuantMode mode, float absmax, bool has_nan, float static_scale) {
  RowQuant r;
  if (mode == QuantMode::kStatic) {
    r.scale = static_scale;
    r.inv = 1.0f / static_scale;
  } else {
    r.scale = absmax / 127.0f;
    if (absmax > 0.0f) {
      r.inv = 127.0f / absmax;
      if (r.inv > 3.0e38f) {  // 127 / absmax overflowed or nearly: rescale (exact, a power of 2)
        r.prescale = 18446744073709551616.0f;  // 2^64
        r.inv = 127.0f / (absmax * r.prescale);
      }
    }
  }
  if (has_nan) r.scale = __builtin_nanf("");
  return r;
}

}  // namespace squash::cpu_kernels
