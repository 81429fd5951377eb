// The float64 reference of the int8 row rule (common/row_quant.h), written from its contract and
// not from its code, for the emulation drivers of the activation quantizer (gemm_emulate.cpp) and
// the norm kernels (norm_emulate.cpp): given a row's exact y, the kernel's q and scale must be
//   scale: NaN if y holds a NaN or the static scale is not in (0, FLT_MAX]; else absmax / 127
//          rounded to float32 (dynamic; absmax ignores NaN) or the static scale;
//   q:     clamp(rne(y * 127 / absmax), -127, 127) (static: y / scale), 0 where that is NaN
//          (a NaN y, or inf * 0 in a row whose absmax is inf), 0 for an all-zero row, 0 for a
//          static scale outside (0, FLT_MAX].
// The kernels compute y * inv in float32 (and the norm kernels y itself), so q may differ by one
// from the float64 rounding where v lies within `window` of a tie, and only there; a dynamic
// scale within scale_rtol (0: exactly, when the kernel's float32 y is exact).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>

namespace emu {

// Mismatches of one row (prints the first few, prefixed by what).
inline int check_row_rule(const char* what, const double* y, int n, const int8_t* q, float scale,
                          const float* static_scale, double window,
                          double scale_rtol = 0.0) {
  bool has_nan = false;
  double absmax = 0.0;
  for (int k = 0; k < n; ++k) {
    has_nan |= std::isnan(y[k]);
    if (!std::isnan(y[k])) absmax = std::fmax(absmax, std::fabs(y[k]));
  }
  int bad = 0;
  auto report = [&](int k, const char* msg, double got, double want) {
    if (bad++ < 3) std::printf("    %s k=%d %s: got %.9g want %.9g\n", what, k, msg, got, want);
  };
  const bool bad_static = static_scale && !(*static_scale > 0 && std::isfinite(*static_scale));
  const double s_ref = has_nan || bad_static ? NAN : static_scale ? *static_scale : static_cast<float>(absmax / 127.0);
  const bool scale_ok = std::isnan(s_ref) ? std::isnan(scale)
                                            : scale == s_ref || std::fabs(scale - s_ref) <= scale_rtol * s_ref;
  if (!scale_ok) report(-1, "scale", scale, s_ref);
  const double inv = bad_static ? 0.0 : static_scale ? 1.0 / *static_scale : absmax > 0 ? 127.0 / absmax : 0.0;
  for (int k = 0; k < n; ++k) {
    const double v = y[k] * inv;
    const double q_ref = std::isnan(v) ? 0.0 : std::fmin(127.0, std::fmax(-127.0, std::nearbyint(v)));
    const bool near_tie = std::fabs(v - std::floor(v) - 0.5) <= window;
    if (q[k] != q_ref && !(near_tie && std::fabs(q[k] - q_ref) == 1.0)) report(k, "q", q[k], q_ref);
  }
  return bad;
}

}  // namespace emu
