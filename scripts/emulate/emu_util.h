// Small helpers shared by the emulation drivers (gemm_emulate.cpp, pk_emulate.cpp): dtype
// conversions, names, the zero points above 15 and the pass/fail tally.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>

namespace emu {

template <typename T>
float tof(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return v;
}
template <typename T>
T fromf(float v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return v;
}
template <typename T>
const char* tname() {
  return std::is_same_v<T, __half> ? "f16" : std::is_same_v<T, __nv_bfloat16> ? "bf16" : "f32";
}

// Relative half-ulp of the output dtype: the bound of the one final rounding.
template <typename T>
double half_ulp() {
  return std::is_same_v<T, __half> ? 1.0 / 2048 : std::is_same_v<T, __nv_bfloat16> ? 1.0 / 256 : 1.0 / (1 << 24);
}

// Zero points above 15 for the int4 checks of gemm_common.cuh's rule (a group with one has NaN
// weights, its output channel is NaN): three groups of [N, G] zeros (first, middle and last
// channel; last, first and middle group).
struct BadZero {
  int n, g;
  uint8_t value;
};
inline std::array<BadZero, 3> bad_zeros(int N, int G) {
  return {{{0, G - 1, 16}, {N / 2, 0, 255}, {N - 1, G / 2, 128}}};
}

// An output element of a channel holding such a zero point: must be NaN (the first misses printed).
inline void expect_nan_channel(float got, int m, int n, int& bad) {
  if (std::isnan(got)) return;
  if (bad < 3) std::printf("    m=%d n=%d: zero point > 15 in the channel, got %g, not NaN\n", m, n, got);
  ++bad;
}

struct Tally {
  int checks = 0, failures = 0;
  void record(bool ok) {
    ++checks;
    failures += ok ? 0 : 1;
  }
  int finish() const {
    std::printf("%d/%d checks passed\n", checks - failures, checks);
    return failures ? 1 : 0;
  }
};

}  // namespace emu
