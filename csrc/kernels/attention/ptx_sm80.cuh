// The sm_80-class PTX the attention kernels use (cp.async, ldmatrix, mma.sync m16n8k16,
// griddepcontrol), as small inline wrappers. With SQUASH_HOST_EMULATION defined (the CPU
// emulator, bench/cpp/emu/emu_shim.h) the wrappers are left out and the emulator supplies host
// versions with the same semantics, so the kernels run unchanged on a machine without a GPU.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" and
// "Warp-level matrix load instruction: ldmatrix"), with lane = g * 4 + t (g = lane / 4 the row
// group, t = lane % 4 the thread in the group); a 32-bit register holds two 16-bit elements, the
// lower column / k index in its low half:
//   mma A (16x16, row-major): a0 (row g, k 2t..2t+1), a1 (row g+8, k 2t..), a2 (row g, k 2t+8..),
//                             a3 (row g+8, k 2t+8..)
//   mma B (16x8, "col"):      b0 (k 2t..2t+1, col g), b1 (k 2t+8..2t+9, col g)
//   mma C/D (16x8, fp32):     c0, c1 (row g, col 2t, 2t+1), c2, c3 (row g+8, col 2t, 2t+1)
//   ldmatrix .x4: lanes 8i..8i+7 give the addresses of the 8 rows (16 bytes each) of matrix i;
//     register i of lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of matrix i; with .trans
//     it receives elements (row 2(l%4), col l/4) and (row 2(l%4)+1, col l/4) instead.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

// Dynamic shared memory declaration; a macro so that the emulator can substitute a host buffer.
#ifndef SQUASH_EXTERN_SHARED
#define SQUASH_EXTERN_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace squash::attention::sm80 {

#ifndef SQUASH_HOST_EMULATION

// Shared-memory addresses are 32-bit offsets in the shared window (what the instructions take;
// 32-bit adds instead of 64-bit generic pointer math in the inner loops).
__device__ __forceinline__ uint32_t smem_u32(const void* smem) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(smem));
}

// 16-byte global -> shared copy that bypasses registers and L1. valid = false copies nothing and
// zero-fills the 16 bytes (src-size 0); gmem must still be a valid address.
__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 matrices of 16-bit elements from shared memory (see the layout above).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&d)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&d)[4], uint32_t a) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
               : "r"(a));
}

// d += A * B, m16n8k16, fp32 accumulators.
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

// Programmatic dependent launch (sm_90+). Both are no-ops for a grid launched without it (and
// compiled out below sm_90): launch_dependents lets the dependent grid be scheduled, wait blocks
// until the prerequisite grid has finished and its writes are visible.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

#endif  // SQUASH_HOST_EMULATION

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  cp_async_16(smem_u32(smem), gmem, valid);
}

// Two floats -> one register of two packed 16-bit values (a first, in the low half), rounded to
// nearest even.
__device__ __forceinline__ uint32_t pack2(float a, float b, __half) {
  const __half2 h = __floats2half2_rn(a, b);
  uint32_t u;
  __builtin_memcpy(&u, &h, 4);
  return u;
}
__device__ __forceinline__ uint32_t pack2(float a, float b, __nv_bfloat16) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  uint32_t u;
  __builtin_memcpy(&u, &h, 4);
  return u;
}

}  // namespace squash::attention::sm80
