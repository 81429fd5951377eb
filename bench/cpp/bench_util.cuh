// CUDA helpers shared by the microbenchmarks (decode, prefill, gemv, pk): error checking, random
// fp16/bf16 fill on the device, the device line, median per-launch time.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,                  \
                   cudaGetErrorString(e_));                                            \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

namespace bench_util {

// Uniform values in [-1, 1) from a hash of the index, as fp16 or bf16 bits.
__global__ void fill_random(uint16_t* p, size_t n, uint32_t seed, bool bf16) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed ^ uint32_t(i >> 32) * 40503u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    const float f = (x & 0xffffff) * (2.f / 16777216.f) - 1.f;
    if (bf16) {
      const __nv_bfloat16 h = __float2bfloat16_rn(f);
      p[i] = *reinterpret_cast<const uint16_t*>(&h);
    } else {
      const __half h = __float2half_rn(f);
      p[i] = *reinterpret_cast<const uint16_t*>(&h);
    }
  }
}

inline void fill(uint16_t* p, size_t n, uint32_t seed, bool bf16) {
  fill_random<<<1024, 256>>>(p, n, seed, bf16);
  CK(cudaGetLastError());
}

inline void print_device() {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
}

// Median of per-launch times (ms) of fn(iteration), after 3 warm-up calls.
template <typename F>
float median_ms(F&& fn, int iters) {
  std::vector<cudaEvent_t> ev(iters + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < 3; ++i) fn(i);
  CK(cudaEventRecord(ev[0]));
  for (int i = 0; i < iters; ++i) {
    fn(i);
    CK(cudaEventRecord(ev[i + 1]));
  }
  CK(cudaEventSynchronize(ev[iters]));
  std::vector<float> t(iters);
  for (int i = 0; i < iters; ++i) CK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  std::nth_element(t.begin(), t.begin() + iters / 2, t.end());
  return t[iters / 2];
}

// Median microseconds per call of fn(copy_index) over iters launches (each between its own pair
// of events), after 3 warm-ups; rotating over `copies` buffers keeps the weights cold in L2.
template <typename Fn>
double time_us(int copies, int iters, Fn fn) {
  for (int i = 0; i < 3; ++i) fn(i % copies);
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(ev[2 * i]));
    fn(i % copies);
    CK(cudaEventRecord(ev[2 * i + 1]));
  }
  CK(cudaEventSynchronize(ev.back()));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) CK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[iters / 2] * 1000.0;
}

}  // namespace bench_util
