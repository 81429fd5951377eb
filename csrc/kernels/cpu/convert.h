// Scalar float32 -> storage conversions of the CPU kernels, bit-identical to torch's
// c10::Half / c10::BFloat16 constructors (round to nearest even; NaN stays NaN).
#pragma once
#include <cstdint>
#include <cstring>

namespace squash::cpu_kernels {

// Output element types of the CPU kernels (torch-free stand-in for at::ScalarType).
enum class Dtype : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline uint16_t bf16_from_float(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN (c10 returns this canonical NaN)
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float float_from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// GCC >= 12 and Clang have _Float16 on x86-64; its conversions are IEEE round-to-nearest-even,
// as c10::Half's.
inline uint16_t f16_from_float(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}

inline float float_from_f16(uint16_t u) {
  _Float16 h;
  std::memcpy(&h, &u, 2);
  return static_cast<float>(h);
}

inline void store_as(Dtype t, void* out, int64_t i, float v) {
  switch (t) {
    case Dtype::kF32: static_cast<float*>(out)[i] = v; break;
    case Dtype::kF16: static_cast<uint16_t*>(out)[i] = f16_from_float(v); break;
    case Dtype::kBF16: static_cast<uint16_t*>(out)[i] = bf16_from_float(v); break;
  }
}

inline float load_as(Dtype t, const void* in, int64_t i) {
  switch (t) {
    case Dtype::kF16: return float_from_f16(static_cast<const uint16_t*>(in)[i]);
    case Dtype::kBF16: return float_from_bf16(static_cast<const uint16_t*>(in)[i]);
    default: return static_cast<const float*>(in)[i];
  }
}

// v rounded to the storage type t and back (what storing and reloading it gives).
inline float round_as(Dtype t, float v) {
  switch (t) {
    case Dtype::kF16: return float_from_f16(f16_from_float(v));
    case Dtype::kBF16: return float_from_bf16(bf16_from_float(v));
    default: return v;
  }
}

}  // namespace squash::cpu_kernels
