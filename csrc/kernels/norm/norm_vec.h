// Register vectors for the norm kernels: N elements of a 16/32-bit float type (or int8) kept as
// raw 32-bit words, loaded and stored with one access of N*sizeof(T) bytes (16-byte accesses are
// LDG.128/STG.128). Keeping raw words instead of T arrays halves the registers of 16-bit rows
// (a __half array element would take a whole register) and is lossless: h is already rounded to
// T, so converting on each pass (one PRMT/shift or F2F) is exact.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace squash::norm {

template <typename T>
struct ElemTraits;

template <>
struct ElemTraits<__half> {
  static constexpr int kBits = 16;
  __device__ static float to_float(uint32_t bits) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  }
  __device__ static uint32_t from_float(float f) { return __half_as_ushort(__float2half_rn(f)); }
};

template <>
struct ElemTraits<__nv_bfloat16> {
  static constexpr int kBits = 16;
  __device__ static float to_float(uint32_t bits) { return __uint_as_float(bits << 16); }
  __device__ static uint32_t from_float(float f) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};

template <>
struct ElemTraits<float> {
  static constexpr int kBits = 32;
  __device__ static float to_float(uint32_t bits) { return __uint_as_float(bits); }
  __device__ static uint32_t from_float(float f) { return __float_as_uint(f); }
};

// Loads/stores BYTES contiguous bytes (aligned to min(BYTES, 16)) into/from 32-bit words.
// CG: ld.global.cg (L2, coherent) for data this kernel wrote earlier (the fallback's re-reads of
// residual_out); plain loads otherwise.
template <int BYTES, bool CG = false>
__device__ __forceinline__ void load_words(const void* p, uint32_t* w) {
  static_assert(BYTES == 1 || BYTES == 2 || BYTES == 4 || BYTES == 8 || BYTES % 16 == 0,
                "unsupported vector size");
  if constexpr (BYTES % 16 == 0) {
#pragma unroll
    for (int j = 0; j < BYTES / 16; ++j) {
      const uint4* src = static_cast<const uint4*>(p) + j;
      const uint4 r = CG ? __ldcg(src) : *src;
      w[4 * j + 0] = r.x;
      w[4 * j + 1] = r.y;
      w[4 * j + 2] = r.z;
      w[4 * j + 3] = r.w;
    }
  } else if constexpr (BYTES == 8) {
    const uint2* src = static_cast<const uint2*>(p);
    const uint2 r = CG ? __ldcg(src) : *src;
    w[0] = r.x;
    w[1] = r.y;
  } else if constexpr (BYTES == 4) {
    const unsigned int* src = static_cast<const unsigned int*>(p);
    w[0] = CG ? __ldcg(src) : *src;
  } else if constexpr (BYTES == 2) {
    const unsigned short* src = static_cast<const unsigned short*>(p);
    w[0] = CG ? __ldcg(src) : *src;
  } else {
    static_assert(!CG, "no 1-byte cg loads are needed");
    w[0] = *static_cast<const unsigned char*>(p);
  }
}

template <int BYTES>
__device__ __forceinline__ void store_words(void* p, const uint32_t* w) {
  if constexpr (BYTES % 16 == 0) {
#pragma unroll
    for (int j = 0; j < BYTES / 16; ++j)
      static_cast<uint4*>(p)[j] = make_uint4(w[4 * j], w[4 * j + 1], w[4 * j + 2], w[4 * j + 3]);
  } else if constexpr (BYTES == 8) {
    *static_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else if constexpr (BYTES == 4) {
    *static_cast<unsigned int*>(p) = w[0];
  } else if constexpr (BYTES == 2) {
    *static_cast<unsigned short*>(p) = static_cast<unsigned short>(w[0]);
  } else {
    *static_cast<unsigned char*>(p) = static_cast<unsigned char>(w[0]);
  }
}

template <typename T, int N>
struct Vec {
  static constexpr int kBits = ElemTraits<T>::kBits;
  static constexpr int kBytes = N * kBits / 8;
  static constexpr int kWords = kBytes < 4 ? 1 : kBytes / 4;
  static constexpr int kPerWord = 32 / kBits;
  static_assert(kBits == 16 || kBits == 32, "16- or 32-bit element types only");
  static_assert(N >= 1 && (N & (N - 1)) == 0, "N must be a power of two");
  static_assert(kBytes <= 32, "at most two 16-byte accesses per vector");

  uint32_t w[kWords];

  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int j = 0; j < kWords; ++j) w[j] = 0u;
  }
  template <bool CG = false>
  __device__ __forceinline__ void load(const T* p) {
    load_words<kBytes, CG>(p, w);
  }
  __device__ __forceinline__ void store(T* p) const { store_words<kBytes>(p, w); }

  // Element k (k a compile-time constant after unrolling) as float / set from float (RNE).
  __device__ __forceinline__ float get(int k) const {
    if constexpr (kBits == 32) {
      return ElemTraits<T>::to_float(w[k]);
    } else {
      const uint32_t word = w[k / kPerWord];
      return ElemTraits<T>::to_float((k & 1) ? (word >> 16) : (word & 0xffffu));
    }
  }
  __device__ __forceinline__ void set(int k, float f) {
    const uint32_t bits = ElemTraits<T>::from_float(f);
    if constexpr (kBits == 32) {
      w[k] = bits;
    } else {
      uint32_t& word = w[k / kPerWord];
      word = (k & 1) ? ((word & 0x0000ffffu) | (bits << 16)) : ((word & 0xffff0000u) | bits);
    }
  }
};

// N int8 values packed into words; set_int8 assumes the vector was cleared first.
template <int N>
struct QVec {
  static constexpr int kBytes = N;
  static constexpr int kWords = N < 4 ? 1 : N / 4;
  static_assert(N >= 1 && N <= 16 && (N & (N - 1)) == 0, "N must be a power of two <= 16");
  uint32_t w[kWords];
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int j = 0; j < kWords; ++j) w[j] = 0u;
  }
  __device__ __forceinline__ void set_int8(int k, int v) {
    w[k / 4] |= (static_cast<uint32_t>(v) & 0xffu) << (8 * (k % 4));
  }
  __device__ __forceinline__ void store(int8_t* p) const { store_words<kBytes>(p, w); }
};

}  // namespace squash::norm
