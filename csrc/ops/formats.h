// Weight formats (docs/FORMATS.md): argument validation for the format ops (defined in
// formats_checks.cpp), shared pieces of the int4 checks that w4a16_gemm reuses, and the CPU
// dequantizers that the CPU GEMMs call (defined in formats_cpu.cpp).
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "ops/message.h"

namespace squash {

// "squash::<op>: <arg> must be <symbolic> = [<expected>] <dtype_desc>, got shape [...]".
void check_shape_is(const char* op, const char* arg, const at::Tensor& t,
                    at::IntArrayRef expected, const char* symbolic, const std::string& dtype_desc);

// group_size must be 32, 64, 128, -1 (per-channel) or K itself, and divide K; K must be even.
// Returns the effective group size g (K for -1).
int64_t check_int4_group_size(const char* op, int64_t group_size, int64_t K);

// The int4 weight of logical shape [N, K]: qweight uint8 [N, K/2], scales [N, K/g] of one of
// scale_dtypes, zeros (optional) uint8 [N, K/g]; all on `device`. Contiguity: see callers.
void check_int4_weight(const char* op, const at::Tensor& qweight, const at::Tensor& scales,
                       const std::optional<at::Tensor>& zeros, int64_t N, int64_t K, int64_t g,
                       std::initializer_list<at::ScalarType> scale_dtypes);

// Zero points are 4-bit: every value of zeros must be 0..15 (docs/FORMATS.md). Reads the values
// (a device sync on a GPU): the load-time ops call it on any device, the GEMMs on the CPU only.
void check_int4_zeros_values(const char* op, const at::Tensor& zeros);

void check_quantize_int8_weight_args(const at::Tensor& weight);
void check_dequantize_int8_weight_args(const at::Tensor& qweight, const at::Tensor& scales);
// Returns the effective group size.
int64_t check_quantize_int4_weight_args(const at::Tensor& weight, int64_t group_size);
int64_t check_dequantize_int4_weight_args(const at::Tensor& qweight, const at::Tensor& scales,
                                          const std::optional<at::Tensor>& zeros,
                                          int64_t group_size);
void check_pack_int4_args(const at::Tensor& values);
void check_unpack_int4_args(const at::Tensor& packed);

namespace cpu {

// clamp(rne(v), lo, hi) for integer bounds with |lo|, |hi| <= 2^21. Adding and subtracting
// 1.5 * 2^23 rounds |v| < 2^22 to an integer under the default round-to-nearest-even mode, like
// std::nearbyint but inline; larger |v| (and +-inf) keep their sign and a magnitude >= 2^21, so
// they clamp correctly; NaN goes to lo. Written with comparisons in this order so that GCC
// vectorizes the loops (nearbyintf and fminf/fmaxf are libm calls without -ffast-math; an add
// after the clamp blocked if-conversion): quantize_activation_int8 128x384 fp32 took 0.23 ms
// with those, 0.07 ms with the comparisons, less once vectorized (single thread, this machine).
inline float rne_clamp(float v, float lo, float hi) {
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23
  v = (v + kMagic) - kMagic;  // not folded: IEEE semantics (this library is built without -ffast-math)
  v = v > lo ? v : lo;
  return v < hi ? v : hi;
}

// max |x[k]| over k < n in float32 (NaN ignored), with 8 independent accumulators so the loop
// vectorizes (the compiler does not reassociate a float max reduction on its own).
template <typename T>
inline float absmax(const T* x, int64_t n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) {
      const float a = std::fabs(static_cast<float>(x[k + j]));
      acc[j] = a > acc[j] ? a : acc[j];
    }
  for (; k < n; ++k) {
    const float a = std::fabs(static_cast<float>(x[k]));
    acc[0] = a > acc[0] ? a : acc[0];
  }
  float m = acc[0];
  for (int j = 1; j < 8; ++j) m = acc[j] > m ? acc[j] : m;
  return m;
}
// Unchecked CPU dequantizers (callers validate): float32 [N, K] = q * s, resp. (q - z) * s.
// Any strides; scales may be float32/float16/bfloat16 (converted to float32 first).
at::Tensor dequantize_int8(const at::Tensor& qweight, const at::Tensor& scales);
at::Tensor dequantize_int4(const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& zeros, int64_t g);
// q[k] = clamp(rne(x[k] * inv), -127, 127). A plain function with by-value arguments: inside a
// capturing lambda, int8 stores may alias the captured variables (char types alias anything),
// which forces reloads and stopped GCC from vectorizing (measured 3x slower for float rows).
template <typename T>
inline void quantize_row_int8(const T* x, int8_t* q, float inv, int64_t n) {
  for (int64_t k = 0; k < n; ++k)
    q[k] = static_cast<int8_t>(rne_clamp(static_cast<float>(x[k]) * inv, -127.f, 127.f));
}

}  // namespace cpu

}  // namespace squash
