// The int8 quantization rule of one row, shared by every path of the norm and activation
// quantizers (norm_rows.h, act_quant.h).
#pragma once

namespace squash::cpu_kernels {

enum class QuantMode { kNone, kDynamic, kStatic };

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
