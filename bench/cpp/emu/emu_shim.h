// Host emulation of the CUDA features the attention kernels use (decode_emu.cpp,
// prefill_emu.cpp): one CTA at a time, its threads as cooperative fibers that switch only at
// __syncthreads, __syncwarp, shuffles and the warp-collective PTX (ldmatrix, mma), so every
// thread runs the real kernel code with its own registers (locals on its own stack), the CTA's
// __shared__ arrays become function statics and dynamic shared memory one host buffer.
//
// Include this before the kernel headers: it defines SQUASH_HOST_EMULATION, which makes
// csrc/kernels/attention/ptx_sm80.cuh leave out its inline PTX; the host versions here follow
// the PTX ISA's definitions (fragment layouts in ptx_sm80.cuh's header comment).
//
// Beyond running the code, the emulator checks what a GPU would not report by itself:
// - cp.async: copies run at issue, or (late_copies) as late as cp.async.wait_group allows, so a
//   wait count that is too small shows up as stale data; copies still pending at exit fail.
// - shared memory races (16-byte granules, accesses through cp.async and ldmatrix): a read of
//   a cp.async destination before its wait_group, and any read/write or write/write pair of
//   different threads with no __syncthreads between them (nor a __syncwarp, within a warp);
//   a cp.async write counts at issue (against earlier accesses) and at its wait_group (for
//   later reads). Plain C++ loads/stores of shared memory are not tracked.
// - cp.async sources must lie in the ranges registered in emu::readable; ldmatrix and cp.async
//   addresses must be 16-byte aligned and inside the launch's dynamic shared memory.
// - warp-collective operations with exited lanes, barriers not reached by every thread.
// The fiber order can be reversed (reverse_order) to vary which warps run ahead.
#pragma once

#define SQUASH_HOST_EMULATION 1

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <type_traits>
#include <utility>
#include <vector>

#undef __global__
#undef __device__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "emulation error: %s\n", what);
  std::exit(3);
}

// ---- dynamic shared memory: one buffer, refilled with 0xff (NaN in fp16/bf16/fp32) per CTA ----
inline constexpr size_t kSmemCapacity = 256 * 1024;
alignas(128) inline unsigned char smem[kSmemCapacity];
inline size_t smem_limit = 0;  // the launch's dynamic shared memory bytes

// ---- global memory that cp.async may read: [begin, end) ranges set by the harness ----
inline std::vector<std::pair<const void*, const void*>> readable;

struct Copy {
  uint32_t dst;  // shared offset in smem
  const void* src;
  bool valid;  // false: zero-fill (cp.async with src-size 0)
};

struct Fiber {
  ucontext_t ctx;  // only to start the fiber; switches use _setjmp/_longjmp (no syscalls)
  jmp_buf jb;
  std::vector<char> stack;
  uint3 tidx;
  bool started = false, done = false;
  int wait = 0;  // 0: runnable, 1: at a CTA barrier, 2: at a warp barrier
  long gen = 0;  // the barrier generation it waits to see completed
  std::vector<Copy> uncommitted;
  std::deque<std::vector<Copy>> groups;  // committed, not yet complete
};

inline std::vector<Fiber> fibers;
inline int cur = -1;
inline uint3 bidx;
inline int nthreads = 0;
inline ucontext_t sched_ctx;
inline jmp_buf sched_jb;
inline long cta_gen = 0;
inline int cta_arrived = 0;
inline long warp_gen[32];
inline int warp_arrived[32];
// Per-warp exchange buffers of the collective operations.
inline float xbuf[32][32];
inline uint32_t ldm_addr[32][32];
inline uint32_t mma_a[32][32][4], mma_b[32][32][2];
// false: a cp.async copies at issue; true: as late as cp.async.wait_group allows.
inline bool late_copies = false;
// Schedule fibers from the last thread to the first (other warps run ahead).
inline bool reverse_order = false;
inline void (*body)() = nullptr;

// ---- shared-memory race detection ----
struct Access {
  int thread = -1;
  long cta = 0, warp = 0;  // barrier generations at the access
};
struct Granule {
  Access w;  // last completed write
  bool pending = false;  // a cp.async to it is in flight, issued at `issue`
  Access issue;
  long r_cta = -1;  // the CTA generation of the readers below
  std::vector<Access> readers;
};
inline std::vector<Granule> shadow(kSmemCapacity / 16);
inline long races = 0;

inline Access now() { return {cur, cta_gen, warp_gen[cur / 32]}; }
// a happened before b: same thread, a __syncthreads between, or a __syncwarp within one warp.
inline bool ordered(const Access& a, const Access& b) {
  return a.thread == b.thread || a.cta < b.cta || (a.thread / 32 == b.thread / 32 && a.warp < b.warp);
}
inline void report(const char* kind, uint32_t off, const Access& a, const Access& b) {
  if (races++ < 8)
    std::fprintf(stderr,
                 "race: %s at shared bytes [%u, %u) of block (%u, %u): thread %d (barrier %ld) "
                 "then thread %d (barrier %ld)\n",
                 kind, off & ~15u, (off & ~15u) + 16, bidx.x, bidx.y, a.thread, a.cta, b.thread,
                 b.cta);
}
inline void check_shared(uint32_t off, const char* what) {
  if (off % 16 != 0 || off + 16 > smem_limit) {
    std::fprintf(stderr, "emulation error: %s at shared offset %u (dynamic size %zu)\n", what, off,
                 smem_limit);
    std::exit(3);
  }
}
inline void on_read(uint32_t off) {
  Granule& g = shadow[off / 16];
  const Access a = now();
  if (g.pending) report("read of a cp.async destination before its wait_group", off, g.issue, a);
  else if (g.w.thread >= 0 && !ordered(g.w, a)) report("read after write", off, g.w, a);
  if (g.r_cta != a.cta) g.readers.clear(), g.r_cta = a.cta;
  for (auto& r : g.readers)
    if (r.thread == a.thread) {
      r = a;
      return;
    }
  g.readers.push_back(a);
}
inline void on_copy_issue(uint32_t off) {
  Granule& g = shadow[off / 16];
  const Access a = now();
  if (g.pending) report("cp.async over a cp.async in flight", off, g.issue, a);
  if (g.w.thread >= 0 && !ordered(g.w, a)) report("write after write", off, g.w, a);
  for (const auto& r : g.readers)
    if (!ordered(r, a)) report("write after read", off, r, a);
  g.pending = true;
  g.issue = a;
}
inline void on_copy_complete(uint32_t off) {
  Granule& g = shadow[off / 16];
  g.pending = false;
  g.w = now();
  g.readers.clear();
  g.r_cta = -1;
}

// Starts a check case: the buffers cp.async may read (vectors of any element type), race count 0.
template <typename... V>
inline void begin_case(const V&... bufs) {
  readable = {{bufs.data(), bufs.data() + bufs.size()}...};
  races = 0;
}
// Ends it: prints a failure line when races were found (their first reports went to stderr).
inline bool races_ok() {
  if (races) std::printf("FAIL: %ld shared-memory races (first ones on stderr)\n", races);
  return races == 0;
}

inline void check_readable(const void* p, size_t n) {
  const auto* c = static_cast<const char*>(p);
  for (const auto& r : readable)
    if (c >= static_cast<const char*>(r.first) && c + n <= static_cast<const char*>(r.second))
      return;
  fail("cp.async reads global memory outside every input buffer");
}

// ---- fibers and barriers ----
inline void yield_() {
  if (!_setjmp(fibers[cur].jb)) _longjmp(sched_jb, 1);
}

inline int alive() {
  int n = 0;
  for (auto& f : fibers) n += !f.done;
  return n;
}

inline int alive_in_warp(int w) {
  int n = 0;
  for (int i = w * 32; i < std::min(nthreads, w * 32 + 32); ++i) n += !fibers[i].done;
  return n;
}

inline void syncthreads() {
  if (++cta_arrived == alive()) {
    cta_arrived = 0;
    ++cta_gen;
    return;
  }
  fibers[cur].wait = 1;
  fibers[cur].gen = cta_gen;
  yield_();
}

inline void syncwarp() {
  const int w = cur / 32;
  if (alive_in_warp(w) != std::min(32, nthreads - w * 32)) fail("warp sync with exited lanes");
  if (++warp_arrived[w] == alive_in_warp(w)) {
    warp_arrived[w] = 0;
    ++warp_gen[w];
    return;
  }
  fibers[cur].wait = 2;
  fibers[cur].gen = warp_gen[w];
  yield_();
}

inline float shfl_xor(unsigned mask, float v, int off) {
  if (mask != 0xffffffffu) fail("shuffle with a partial mask");
  const int w = cur / 32, lane = cur % 32;
  xbuf[w][lane] = v;
  syncwarp();
  const float r = xbuf[w][lane ^ off];
  syncwarp();
  return r;
}

// ---- cp.async ----
inline void exec(const Copy& c) {
  if (c.valid) std::memcpy(smem + c.dst, c.src, 16);
  else std::memset(smem + c.dst, 0, 16);
}

inline void cp_async(uint32_t dst, const void* src, bool valid) {
  check_shared(dst, "cp.async destination misaligned or out of range");
  if (valid) check_readable(src, 16);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) fail("cp.async source not 16-byte aligned");
  on_copy_issue(dst);
  if (late_copies) fibers[cur].uncommitted.push_back({dst, src, valid});
  else {
    exec({dst, src, valid});
    fibers[cur].uncommitted.push_back({dst, nullptr, false});  // completes at its wait_group
  }
}

inline void commit() {
  auto& f = fibers[cur];
  f.groups.push_back(std::move(f.uncommitted));
  f.uncommitted.clear();
}

inline void wait_group(int n) {
  auto& f = fibers[cur];
  while (static_cast<int>(f.groups.size()) > n) {
    for (auto& c : f.groups.front()) {
      if (late_copies) exec(c);
      on_copy_complete(c.dst);
    }
    f.groups.pop_front();
  }
}

// ---- ldmatrix.x4 (optionally .trans): each lane gives one row address ----
inline uint16_t smem16(uint32_t off) {
  uint16_t v;
  std::memcpy(&v, smem + off, 2);
  return v;
}
template <bool kTrans>
inline void ldmatrix_x4(uint32_t (&d)[4], uint32_t addr) {
  check_shared(addr, "ldmatrix row address misaligned or out of range");
  on_read(addr);
  const int w = cur / 32, lane = cur % 32;
  ldm_addr[w][lane] = addr;
  syncwarp();
  for (int i = 0; i < 4; ++i) {
    uint32_t lo, hi;
    if (!kTrans) {  // row lane / 4, elements 2 (lane % 4) and + 1
      const uint32_t row = ldm_addr[w][8 * i + lane / 4];
      lo = smem16(row + (lane % 4) * 4);
      hi = smem16(row + (lane % 4) * 4 + 2);
    } else {  // rows 2 (lane % 4) and + 1, element lane / 4
      lo = smem16(ldm_addr[w][8 * i + (lane % 4) * 2] + (lane / 4) * 2);
      hi = smem16(ldm_addr[w][8 * i + (lane % 4) * 2 + 1] + (lane / 4) * 2);
    }
    d[i] = lo | (hi << 16);
  }
  syncwarp();
}

// ---- mma.sync.m16n8k16.row.col.f32.{f16,bf16}.f32 ----
inline const float* half_table() {  // all 65536 fp16 values as float (host conversion is slow)
  static std::vector<float> t = [] {
    std::vector<float> v(65536);
    for (uint32_t u = 0; u < 65536; ++u) {
      const uint16_t b = static_cast<uint16_t>(u);
      __half h;
      std::memcpy(&h, &b, 2);
      v[u] = __half2float(h);
    }
    return v;
  }();
  return t.data();
}
template <typename T>
inline float unpack(uint32_t reg, int hi) {
  const uint32_t bits = hi ? reg >> 16 : reg & 0xffffu;
  if constexpr (std::is_same_v<T, __half>) return half_table()[bits];
  else {
    const uint32_t f = bits << 16;
    float r;
    std::memcpy(&r, &f, 4);
    return r;
  }
}
// Lane g*4+t holds A[g (+8)][2t.. (+8)] and B[2t.. (+8)][g] (ptx_sm80.cuh); each lane computes
// its own four outputs from the whole warp's fragments, products summed exactly in double.
template <typename T>
inline void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int w = cur / 32, lane = cur % 32;
  for (int i = 0; i < 4; ++i) mma_a[w][lane][i] = a[i];
  mma_b[w][lane][0] = b0;
  mma_b[w][lane][1] = b1;
  syncwarp();
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double acc = d[i];
    for (int k = 0; k < 16; ++k) {
      const float av = unpack<T>(mma_a[w][(row % 8) * 4 + (k % 8) / 2][row / 8 + 2 * (k / 8)], k % 2);
      const float bv = unpack<T>(mma_b[w][col * 4 + (k % 8) / 2][k / 8], k % 2);
      acc += static_cast<double>(av) * bv;
    }
    d[i] = static_cast<float>(acc);
  }
  syncwarp();
}

// ---- running a CTA ----
inline void trampoline() {
  body();
  fibers[cur].done = true;
  _longjmp(sched_jb, 1);
}

inline void resume(int i) {
  auto& f = fibers[i];
  if (_setjmp(sched_jb)) return;  // back from the fiber
  if (!f.started) {
    f.started = true;
    swapcontext(&sched_ctx, &f.ctx);
  } else {
    _longjmp(f.jb, 1);
  }
}

// Runs fn() as every thread of block b (nthr threads, smem_bytes of dynamic shared memory)
// until all return.
inline void run_block(uint3 b, int nthr, void (*fn)(), size_t smem_bytes = 0) {
  if (smem_bytes > kSmemCapacity) fail("dynamic shared memory over the emulator's capacity");
  bidx = b;
  nthreads = nthr;
  body = fn;
  smem_limit = smem_bytes;
  std::memset(smem, 0xff, smem_bytes);
  for (size_t i = 0; i < (smem_bytes + 15) / 16; ++i) shadow[i] = Granule{};
  fibers.clear();
  fibers.resize(nthr);
  cta_gen = 0;
  cta_arrived = 0;
  std::fill(warp_gen, warp_gen + 32, 0);
  std::fill(warp_arrived, warp_arrived + 32, 0);
  for (int i = 0; i < nthr; ++i) {
    auto& f = fibers[i];
    f.tidx = {unsigned(i), 0, 0};
    f.stack.resize(256 * 1024);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, trampoline, 0);
  }
  for (;;) {
    bool progress = false, all_done = true;
    for (int k = 0; k < nthr; ++k) {
      const int i = reverse_order ? nthr - 1 - k : k;
      auto& f = fibers[i];
      if (f.done) continue;
      all_done = false;
      const bool runnable = f.wait == 0 || (f.wait == 1 && cta_gen != f.gen) ||
                            (f.wait == 2 && warp_gen[i / 32] != f.gen);
      if (!runnable) continue;
      f.wait = 0;
      cur = i;
      progress = true;
      resume(i);
    }
    if (all_done) break;
    if (!progress) fail("deadlock (a barrier not reached by every thread)");
  }
  for (auto& f : fibers)
    if (!f.uncommitted.empty() || !f.groups.empty()) fail("cp.async copies pending at exit");
}

}  // namespace emu

#define threadIdx (emu::fibers[emu::cur].tidx)
#define blockIdx (emu::bidx)
#define SQUASH_EXTERN_SHARED(type, name) type* name = reinterpret_cast<type*>(emu::smem)
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp() { emu::syncwarp(); }
inline float __shfl_xor_sync(unsigned mask, float v, int off) { return emu::shfl_xor(mask, v, off); }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
using std::max;
using std::min;

// The PTX wrappers of csrc/kernels/attention/ptx_sm80.cuh.
namespace squash::attention::sm80 {
inline uint32_t smem_u32(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < emu::smem || c >= emu::smem + emu::kSmemCapacity) emu::fail("not a shared-memory address");
  return static_cast<uint32_t>(c - emu::smem);
}
inline void cp_async_16(uint32_t smem, const void* gmem, bool valid) { emu::cp_async(smem, gmem, valid); }
inline void cp_async_commit() { emu::commit(); }
template <int N>
inline void cp_async_wait() { emu::wait_group(N); }
inline void ldmatrix_x4(uint32_t (&d)[4], uint32_t a) { emu::ldmatrix_x4<false>(d, a); }
inline void ldmatrix_x4_trans(uint32_t (&d)[4], uint32_t a) { emu::ldmatrix_x4<true>(d, a); }
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, __half) {
  emu::mma<__half>(d, a, b0, b1);
}
inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                      __nv_bfloat16) {
  emu::mma<__nv_bfloat16>(d, a, b0, b1);
}
inline void pdl_launch_dependents() {}
inline void pdl_wait() {}
}  // namespace squash::attention::sm80
