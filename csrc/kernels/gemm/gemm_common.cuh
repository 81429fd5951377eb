// Device helpers shared by the weight-only GEMM kernels: dtype conversion and the exact
// integer -> float dequantization tricks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

// Dynamic shared memory declaration; a macro only so that scripts/emulate (which runs kernel
// bodies as host threads) can substitute a host buffer.
#ifndef SQUASH_EXTERN_SHARED
#define SQUASH_EXTERN_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace squash::gemm {

// Two packed fp16 (low half = first element) -> fp32. memcpy, not a pointer cast: a cast would
// break strict aliasing (the host build of scripts/emulate miscompiled it); nvcc emits a move.
__device__ __forceinline__ float2 half2_bits_to_float2(uint32_t bits) {
  __half2 h;
  std::memcpy(&h, &bits, sizeof(h));
  return __half22float2(h);
}

template <typename T>
struct Cvt;

template <>
struct Cvt<__half> {
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
  // 4 consecutive elements (8 bytes, 8-byte aligned) -> fp32.
  static __device__ __forceinline__ float4 load4(const __half* p) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    const float2 a = half2_bits_to_float2(raw.x);
    const float2 b = half2_bits_to_float2(raw.y);
    return make_float4(a.x, a.y, b.x, b.y);
  }
};

template <>
struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
  // bf16 is the top half of an fp32: widening is exact and only moves bits.
  static __device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xFFFF0000u),
                       __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xFFFF0000u));
  }
};

template <>
struct Cvt<float> {
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};

// The fp32 with bits 0x4B000000 is 2^23; OR-ing an integer u < 2^23 into its mantissa gives
// exactly 2^23 + u. Subtracting 2^23 + z (also exact) gives u - z exactly: an int -> float
// conversion in one byte-permute and one FADD (I2F runs at a quarter of the FADD rate).
constexpr uint32_t kMagicBits = 0x4B000000u;
constexpr float kMagic = 8388608.0f;  // 2^23

// byte j of v (j compile-time) placed in the mantissa of 2^23: __byte_perm selector nibbles
// (byte3..byte0) = 7 (0x4B of kMagicBits), 4, 4 (zero bytes of kMagicBits), j.
template <int J>
__device__ __forceinline__ float magic_byte(uint32_t v) {
  static_assert(J >= 0 && J < 4, "byte index");
  return __uint_as_float(__byte_perm(v, kMagicBits, 0x7440u | J));
}

// 2^23 + z for a zero point z in 0..255.
__device__ __forceinline__ float magic_zero(uint32_t z) { return __uint_as_float(kMagicBits | z); }

// Eight int4 weights of one 32-bit word (element 2j in the low nibble of byte j, 2j+1 in the
// high nibble) -> w[e] = q_e - z exactly, with magic_z = 2^23 + z.
__device__ __forceinline__ void dequant_int4_word(uint32_t word, float magic_z, float (&w)[8]) {
  const uint32_t lo = word & 0x0F0F0F0Fu;
  const uint32_t hi = (word >> 4) & 0x0F0F0F0Fu;
  w[0] = magic_byte<0>(lo) - magic_z;
  w[1] = magic_byte<0>(hi) - magic_z;
  w[2] = magic_byte<1>(lo) - magic_z;
  w[3] = magic_byte<1>(hi) - magic_z;
  w[4] = magic_byte<2>(lo) - magic_z;
  w[5] = magic_byte<2>(hi) - magic_z;
  w[6] = magic_byte<3>(lo) - magic_z;
  w[7] = magic_byte<3>(hi) - magic_z;
}

// Four int8 weights of one 32-bit word (element j in byte j, two's complement) -> q_j exactly:
// flipping the sign bit maps q to q + 128 in 0..255; pass magic_z = 2^23 + 128.
__device__ __forceinline__ void dequant_int8_word(uint32_t word, float magic_z, float (&w)[4]) {
  const uint32_t u = word ^ 0x80808080u;
  w[0] = magic_byte<0>(u) - magic_z;
  w[1] = magic_byte<1>(u) - magic_z;
  w[2] = magic_byte<2>(u) - magic_z;
  w[3] = magic_byte<3>(u) - magic_z;
}

}  // namespace squash::gemm
