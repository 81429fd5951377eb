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

// Split-K: this block's chunks [begin, end) of the ceil(K / chunk) chunks of K, blockIdx.y of
// gridDim.y splits (block-uniform, so __syncthreads inside the chunk loop is reached by all).
struct ChunkRange {
  int begin, end;
};
__device__ __forceinline__ ChunkRange split_k_chunks(int K, int chunk) {
  const int num_chunks = (K + chunk - 1) / chunk;
  const int per_split = (num_chunks + gridDim.y - 1) / gridDim.y;
  const int begin = blockIdx.y * per_split;
  return {begin, min(num_chunks, begin + per_split)};
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

// ---- int4 zero points outside 0..15 ----
// The CPU ops and the load-time ops refuse a zero point above 15; the CUDA GEMMs read zero points
// on the device and would need a sync to refuse one. Instead (like a bad static activation scale,
// common/row_quant.h) it shows as NaN: every kernel turns a zero point z > 15 into a NaN where it
// converts z, once per group and lane, so every weight of that group dequantizes to NaN and every
// output element summing over it - the output channel n of the group, for every token - is NaN,
// whatever x and the scale are (NaN * 0 is NaN). Per channel, not per token row: that is where a
// zero point acts, and the conversion already happens there, so the check costs a compare and a
// select per group load, nothing per weight.
constexpr uint32_t kInt4MaxZero = 15u;
constexpr uint32_t kNaNBits = 0x7FC00000u;  // float32 quiet NaN

// 2^23 + z for an int4 zero point z in 0..15; NaN for z > 15.
__device__ __forceinline__ float magic_zero(uint32_t z) {
  return __uint_as_float(z <= kInt4MaxZero ? (kMagicBits | z) : kNaNBits);
}

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


// ---- 16-bit pairs for the tensor-core path (A operand of mma.m16n8k16) ----

__device__ __forceinline__ __half2 bits_as_half2(uint32_t b) {
  __half2 h;
  std::memcpy(&h, &b, sizeof(h));
  return h;
}
__device__ __forceinline__ __nv_bfloat162 bits_as_bf162(uint32_t b) {
  __nv_bfloat162 h;
  std::memcpy(&h, &b, sizeof(h));
  return h;
}
template <typename H2>
__device__ __forceinline__ uint32_t pair_bits(H2 h) {
  uint32_t b;
  std::memcpy(&b, &h, sizeof(b));
  return b;
}

// 16-bit magic for the int4 pairs: OR-ing a nibble into the mantissa of 1024 (fp16, 10 mantissa
// bits) or 128 (bf16, 7 mantissa bits) gives exactly base + q; subtracting base + z is exact too,
// so q - z in -15..15 is exact in either type (Marlin's "lop3 + sub" dequant).
template <typename T>
struct Int4Magic;
template <>
struct Int4Magic<__half> {
  static constexpr uint32_t kBase = 0x6400u;  // 1024.0
  static constexpr uint32_t kNaN2 = 0x7E007E00u;  // (NaN, NaN)
};
template <>
struct Int4Magic<__nv_bfloat16> {
  static constexpr uint32_t kBase = 0x4300u;  // 128.0
  static constexpr uint32_t kNaN2 = 0x7FC07FC0u;
};

// Packed (base + z, base + z) for a zero point z in 0..15; (NaN, NaN) for z > 15 (see magic_zero).
template <typename T>
__device__ __forceinline__ uint32_t int4_magic_zero2(uint32_t z) {
  const uint32_t h = Int4Magic<T>::kBase | z;
  return z <= kInt4MaxZero ? h | (h << 16) : Int4Magic<T>::kNaN2;
}

__device__ __forceinline__ uint32_t hsub2_bits(uint32_t a, uint32_t b, __half) {
  return pair_bits(__hsub2(bits_as_half2(a), bits_as_half2(b)));
}
__device__ __forceinline__ uint32_t hsub2_bits(uint32_t a, uint32_t b, __nv_bfloat16) {
  return pair_bits(__hsub2(bits_as_bf162(a), bits_as_bf162(b)));
}

// One int4 word (8 nibbles e0..e7, e_j at bits 4j..4j+3) -> four packed pairs of T holding
// exactly q - z: P[i] = (e_i - z, e_{i+4} - z) (low half first). The pairing (i, i+4) is what
// one mask extracts; the x operand is staged in the same order (see woq_mma_kernel.cuh).
template <typename T>
__device__ __forceinline__ void int4_pairs(uint32_t word, uint32_t magic_z2, uint32_t (&P)[4]) {
  const uint32_t base2 = Int4Magic<T>::kBase | (Int4Magic<T>::kBase << 16);
#pragma unroll
  for (int i = 0; i < 4; ++i)
    P[i] = hsub2_bits(((word >> (4 * i)) & 0x000F000Fu) | base2, magic_z2, T{});
}

// One int8 word (bytes e0..e3, two's complement) -> two packed pairs of T holding exactly q:
// P[0] = (e0, e1), P[1] = (e2, e3). fp16: bytes biased by 128 go into the mantissa of 1024
// (exact up to 2047). bf16 cannot hold 128 + 255 exactly, so go through the fp32 magic and an
// exact conversion (|q| <= 128 fits bf16's 8 significant bits).
__device__ __forceinline__ void int8_pairs(uint32_t word, __half, uint32_t (&P)[2]) {
  const uint32_t u = word ^ 0x80808080u;
  P[0] = hsub2_bits(__byte_perm(u, 0x64646464u, 0x4140u), 0x64806480u, __half{});  // 1152 = 1024 + 128
  P[1] = hsub2_bits(__byte_perm(u, 0x64646464u, 0x4342u), 0x64806480u, __half{});
}
__device__ __forceinline__ void int8_pairs(uint32_t word, __nv_bfloat16, uint32_t (&P)[2]) {
  float w[4];
  dequant_int8_word(word, kMagic + 128.0f, w);
  P[0] = pair_bits(__floats2bfloat162_rn(w[0], w[1]));
  P[1] = pair_bits(__floats2bfloat162_rn(w[2], w[3]));
}

// D = A * B + D, m16n8k16, fp32 accumulators; A: 4 regs (16x16 row-major fragment), B: 2 regs
// (16x8 col-major fragment) of packed T pairs. Fragment layouts: PTX ISA "Matrix Fragments for
// mma.m16n8k16 with floating point type" (group g = lane / 4, t = lane % 4):
//   a0: (row g, k 2t..2t+1)  a1: (row g+8, k 2t..2t+1)  a2: (row g, k 2t+8..9)  a3: (row g+8, k 2t+8..9)
//   b0: (k 2t..2t+1, col g)  b1: (k 2t+8..9, col g)
//   d0, d1: (row g, col 2t, 2t+1)  d2, d3: (row g+8, col 2t, 2t+1)
// scripts/emulate supplies a host version with these semantics.
#ifndef SQUASH_HOST_EMULATION
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

}  // namespace squash::gemm
