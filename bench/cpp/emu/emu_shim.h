// Host emulation of the CUDA features the decode kernels use (see decode_emu.cpp): one CTA at a
// time, its threads as cooperative fibers that switch only at __syncthreads, __syncwarp and
// shuffles, so every thread runs the real kernel code with its own registers (locals on its own
// stack) and the CTA's __shared__ arrays become function statics shared by all fibers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
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

struct Copy {
  void* dst;
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
  std::deque<std::vector<Copy>> groups;  // committed, not yet executed (late mode)
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
inline float xbuf[32][32];
// false: a cp.async copies at issue; true: as late as cp.async.wait_group allows.
inline bool late_copies = false;
inline void (*body)() = nullptr;

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

inline void exec(const Copy& c) {
  if (c.valid) std::memcpy(c.dst, c.src, 16);
  else std::memset(c.dst, 0, 16);
}

inline void cp_async(void* dst, const void* src, bool valid) {
  if (late_copies) fibers[cur].uncommitted.push_back({dst, src, valid});
  else exec({dst, src, valid});
}

inline void commit() {
  auto& f = fibers[cur];
  f.groups.push_back(std::move(f.uncommitted));
  f.uncommitted.clear();
}

inline void wait_group(int n) {
  auto& f = fibers[cur];
  while (static_cast<int>(f.groups.size()) > n) {
    for (auto& c : f.groups.front()) exec(c);
    f.groups.pop_front();
  }
}

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

// Runs fn() as every thread of block b (nthr threads) until all return.
inline void run_block(uint3 b, int nthr, void (*fn)()) {
  bidx = b;
  nthreads = nthr;
  body = fn;
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
    for (int i = 0; i < nthr; ++i) {
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
