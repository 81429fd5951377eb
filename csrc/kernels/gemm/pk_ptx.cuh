// Inline-PTX helpers of the prepacked GEMM (pk_gemm_kernel.cuh): asynchronous global->shared copies
// (sm_80+) and lop3. Under SQUASH_HOST_EMULATION, scripts/emulate/cuda_host_shim.h supplies host
// versions with the same semantics (cp.async copies deferred to the wait that makes them visible).
#pragma once
#include <cstdint>

namespace squash::gemm {

#ifndef SQUASH_HOST_EMULATION
// 16 bytes global -> shared, bypassing L1 (weights and x are read once per block). valid == false
// zero-fills the destination without reading src (src-size 0), so tails need no branches in the
// consumer.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
// 8 bytes (cp.async.cg only takes 16; .ca takes 4, 8 and 16).
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// (a, b, c) -> LUT(a, b, c) bitwise, LUT given as F(0xF0, 0xCC, 0xAA). Written as inline PTX so
// that "(a & b) | c" is one instruction for certain (the compiler usually finds it, Marlin does not
// rely on that either).
template <int LUT>
__device__ __forceinline__ uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, %4;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"(LUT));
  return d;
}
#endif

// (a & b) | c
constexpr int kLopAndOr = (0xF0 & 0xCC) | 0xAA;

}  // namespace squash::gemm
