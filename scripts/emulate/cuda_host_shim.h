// Runs CUDA kernel bodies on the host, one std::thread per CUDA thread (blocks one after
// another), so kernels written without launch syntax (csrc/kernels/*/..._kernel.cuh) can be
// checked for indexing and arithmetic bugs on a machine without a GPU. Emulated: threadIdx &
// co., __syncthreads (std::barrier per block), __shfl_xor_sync (per-warp barrier + exchange),
// dynamic shared memory (one host buffer, blocks run sequentially), the intrinsics the kernels
// use, and the inline PTX of the tensor-core kernels: mma.sync m16n8k16, lop3, cp.async (copies
// deferred to the cp.async.wait_group that must precede their use, so a missing wait or a
// premature read sees the NaN garbage the shared buffer starts with). Not emulated: timing,
// memory-model subtleties, warp divergence rules. Host float math is IEEE without
// flush-to-zero, like the kernels on normal inputs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define SQUASH_HOST_EMULATION 1  // kernels: use the host mma_16816 below

#undef __global__
#undef __device__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

namespace emu {
inline thread_local uint3 tl_thread{0, 0, 0};
inline thread_local uint3 tl_block{0, 0, 0};
inline thread_local dim3 tl_block_dim{1, 1, 1};
inline thread_local dim3 tl_grid_dim{1, 1, 1};
inline thread_local std::barrier<>* tl_block_barrier = nullptr;
inline thread_local std::barrier<>* tl_warp_barrier = nullptr;
inline thread_local float* tl_warp_exchange = nullptr;  // 32 floats of this thread's warp
struct MmaExchange {
  uint32_t a[32][4];
  uint32_t b[32][2];
};
inline thread_local MmaExchange* tl_mma_exchange = nullptr;  // this thread's warp
alignas(16) inline unsigned char dynamic_smem[256 * 1024];
// The block's dynamic shared memory: dynamic_smem, or (launch with smem_bytes > 0) a heap buffer
// of exactly the requested size, so that AddressSanitizer sees any access past it.
inline thread_local unsigned char* tl_smem = dynamic_smem;
}  // namespace emu

#define threadIdx (::emu::tl_thread)
#define blockIdx (::emu::tl_block)
#define blockDim (::emu::tl_block_dim)
#define gridDim (::emu::tl_grid_dim)
#define SQUASH_EXTERN_SHARED(type, name) type* name = reinterpret_cast<type*>(::emu::tl_smem)

inline void __syncthreads() { emu::tl_block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int off) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  emu::tl_warp_exchange[lane] = v;
  emu::tl_warp_barrier->arrive_and_wait();
  const float r = emu::tl_warp_exchange[lane ^ off];
  emu::tl_warp_barrier->arrive_and_wait();
  return r;
}

template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldcs(const T* p) { return *p; }
template <typename T>
inline T __ldcg(const T* p) { return *p; }

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }

inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// PTX prmt default mode: result byte i = byte (s >> 4i) & 7 of {y, x} (x = bytes 0-3),
// sign-replicated when bit 3 of that selector nibble is set.
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
  const uint64_t src = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t sel = (s >> (4 * i)) & 0xF;
    uint32_t b = (src >> (8 * (sel & 7))) & 0xFF;
    if (sel & 8) b = (b & 0x80) ? 0xFF : 0x00;
    r |= b << (8 * i);
  }
  return r;
}

// cp.async: each thread's copies queue up per commit group and run when a cp.async.wait_group
// lets them complete (the latest moment the hardware could deliver them). Invalid copies
// (src-size 0) zero-fill without reading the source.
namespace emu {
struct PendingCopy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;
};
inline thread_local std::vector<PendingCopy> tl_open_group;
inline thread_local std::vector<std::vector<PendingCopy>> tl_committed_groups;
}  // namespace emu

namespace squash::gemm {
inline void emu_cp_async(void* smem, const void* gmem, int bytes, bool valid) {
  emu::tl_open_group.push_back({smem, gmem, bytes, valid});
}
inline void cp_async16(void* smem, const void* gmem, bool valid) { emu_cp_async(smem, gmem, 16, valid); }
inline void cp_async8(void* smem, const void* gmem, bool valid) { emu_cp_async(smem, gmem, 8, valid); }
inline void cp_async_commit() {
  emu::tl_committed_groups.push_back(std::move(emu::tl_open_group));
  emu::tl_open_group.clear();
}
template <int N>
inline void cp_async_wait() {
  auto& groups = emu::tl_committed_groups;
  while (groups.size() > static_cast<size_t>(N)) {
    for (const auto& c : groups.front()) {
      if (c.valid) std::memcpy(c.dst, c.src, c.bytes);
      else std::memset(c.dst, 0, c.bytes);
    }
    groups.erase(groups.begin());
  }
}
// lop3.b32: bit i of the result is bit (a_i << 2 | b_i << 1 | c_i) of LUT.
template <int LUT>
inline uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d = 0;
  for (int i = 0; i < 32; ++i) {
    const int idx = static_cast<int>(((a >> i) & 1u) << 2 | ((b >> i) & 1u) << 1 | ((c >> i) & 1u));
    d |= ((static_cast<uint32_t>(LUT) >> idx) & 1u) << i;
  }
  return d;
}
}  // namespace squash::gemm

// fma.rn.f16x2 (cuda_fp16.hpp has no host version): exact product of two halves in float, one
// sum, one rounding to half (double rounding through float only where the sum is inexact in
// float, which the kernels' exact dequantization never hits).
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  const float2 fa = __half22float2(a), fb = __half22float2(b), fc = __half22float2(c);
  return __floats2half2_rn(std::fma(fa.x, fb.x, fc.x), std::fma(fa.y, fb.y, fc.y));
}

inline int __float2int_rn(float v) { return static_cast<int>(std::nearbyint(v)); }
inline float __fdiv_rn(float a, float b) { return a / b; }
// 1/sqrt(x) through double, rounded once more to float: the correctly rounded result except
// within ~2^-52 relative of a float rounding boundary (exact for the emulation's 1/sqrt(1)).
inline float __frsqrt_rn(float x) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x))); }
using std::isnan;  // the device's isnan is a global function
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

namespace emu {

// Runs body() as grid x block threads; blocks sequentially, the threads of a block concurrently.
// smem_bytes > 0: dynamic shared memory of exactly that size (NaN garbage), else dynamic_smem.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& body, size_t smem_bytes = 0) {
  const unsigned nthreads = block.x * block.y * block.z;
  const unsigned nwarps = (nthreads + 31) / 32;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::memset(dynamic_smem, 0xFF, sizeof(dynamic_smem));  // NaN garbage, like real smem
        std::vector<unsigned char> sized_smem(smem_bytes, 0xFF);
        unsigned char* const smem = smem_bytes > 0 ? sized_smem.data() : dynamic_smem;
        std::barrier<> block_bar(nthreads);
        std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
        std::vector<float> exchange(nwarps * 32);
        std::vector<MmaExchange> mma_exchange(nwarps);
        for (unsigned w = 0; w < nwarps; ++w)
          warp_bars.emplace_back(std::make_unique<std::barrier<>>(
              static_cast<std::ptrdiff_t>(nthreads - 32 * w < 32 ? nthreads - 32 * w : 32)));
        std::vector<std::thread> threads;
        threads.reserve(nthreads);
        for (unsigned t = 0; t < nthreads; ++t) {
          threads.emplace_back([&, t, bx, by, bz] {
            tl_thread = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            tl_block = uint3{bx, by, bz};
            tl_block_dim = block;
            tl_grid_dim = grid;
            tl_block_barrier = &block_bar;
            tl_warp_barrier = warp_bars[t / 32].get();
            tl_warp_exchange = exchange.data() + 32 * (t / 32);
            tl_mma_exchange = &mma_exchange[t / 32];
            tl_smem = smem;
            body();
          });
        }
        for (auto& th : threads) th.join();
      }
}

}  // namespace emu

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: each lane deposits its fragments, then
// computes its own 4 outputs from the whole warp's, per the PTX ISA fragment layouts (g = lane/4,
// t = lane%4; a0: (g, 2t..2t+1), a1: (g+8, 2t..), a2: (g, 2t+8..), a3: (g+8, 2t+8..);
// b0: (k 2t..2t+1, n g), b1: (k 2t+8.., n g); d0,d1: (g, 2t..2t+1), d2,d3: (g+8, 2t..)).
// Low 16 bits of a register = the lower column / k index. Products summed in double.
namespace squash::gemm {
template <typename T>
inline float emu_unpack(uint32_t bits, int half) {
  const uint16_t h = static_cast<uint16_t>(half ? bits >> 16 : bits & 0xFFFF);
  T v;
  std::memcpy(&v, &h, 2);
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return __bfloat162float(v);
}
template <typename T>
inline void emu_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  auto* ex = emu::tl_mma_exchange;
  for (int i = 0; i < 4; ++i) ex->a[lane][i] = a[i];
  ex->b[lane][0] = b0;
  ex->b[lane][1] = b1;
  emu::tl_warp_barrier->arrive_and_wait();
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = emu_unpack<T>(ex->a[l][0], h);
      A[g + 8][2 * t + h] = emu_unpack<T>(ex->a[l][1], h);
      A[g][2 * t + 8 + h] = emu_unpack<T>(ex->a[l][2], h);
      A[g + 8][2 * t + 8 + h] = emu_unpack<T>(ex->a[l][3], h);
      B[2 * t + h][g] = emu_unpack<T>(ex->b[l][0], h);
      B[2 * t + 8 + h][g] = emu_unpack<T>(ex->b[l][1], h);
    }
  }
  emu::tl_warp_barrier->arrive_and_wait();
  const int g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    double s = d[i];
    for (int k = 0; k < 16; ++k) s += static_cast<double>(A[row][k]) * B[k][col];
    d[i] = static_cast<float>(s);
  }
}
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __half) {
  emu_mma<__half>(d, a, b0, b1);
}
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                      __nv_bfloat16) {
  emu_mma<__nv_bfloat16>(d, a, b0, b1);
}
}  // namespace squash::gemm
