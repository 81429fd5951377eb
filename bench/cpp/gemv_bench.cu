// Torch-free microbenchmark of the weight-only GEMM kernels (csrc/kernels/gemm): every GEMV and
// tensor-core config and split count that can run each case, the heuristic's pick, the dequantize kernel of
// the large-M path, and the device copy bandwidth as the ceiling. Reports median us, GB/s
// (weights + scales + zeros + x + out, each once) and TFLOP/s (2*M*N*K), and spot-checks the
// outputs against a float64 host reference (a wrong kernel fails loudly, exit code 1).
//
// Build (from the repository root; not part of CMake):
//   mkdir -p build && nvcc -std=c++17 -O3 --expt-relaxed-constexpr --use_fast_math \
//     -gencode=arch=compute_90a,code=sm_90a -Icsrc/kernels \
//     bench/cpp/gemv_bench.cu csrc/kernels/gemm/*.cu -o build/gemv_bench
// Run: build/gemv_bench [--dtype bf16|f16] [--quick] [--all-m] [--iters N]
//   default: the TARGETS shapes (N x K) at M = 1, 4, 16; --quick: 4096x4096 and 8192x28672 at
//   M = 1; --all-m: M = 1, 2, 4, 8, 16, 32, 64.
// Weights rotate over enough copies to exceed 4x the L2, so every launch reads them from HBM.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gemm/heuristics.h"
#include "gemm/woq_gemm.h"
#include "bench_util.cuh"

using namespace squash::gemm;

namespace {

// Deterministic pseudo-random bytes on the device (a hash of the index), fast for 100s of MB.
__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
    p[i] = static_cast<uint8_t>(h);
  }
}

float half_bits_to_float(uint16_t b, bool bf16) {
  if (bf16) {
    uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

uint16_t float_to_half_bits(float f, bool bf16) {
  uint16_t b;
  if (bf16) {
    __nv_bfloat16 h = __float2bfloat16_rn(f);
    std::memcpy(&b, &h, 2);
  } else {
    __half h = __float2half_rn(f);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

struct Problem {
  int bits, M, N, K, group;  // group: effective (K per-channel)
  bool bf16;
};

struct Buffers {
  std::vector<uint8_t*> qweight;  // rotating copies
  float* scales = nullptr;
  uint8_t* zeros = nullptr;
  void* x = nullptr;
  void* out = nullptr;
  float* workspace = nullptr;
  void* dense = nullptr;  // dequantize output [N, K]
  size_t weight_bytes = 0;
};

// Float64 reference for a few output channels; returns the number of mismatches.
int spot_check(const Problem& pr, const Buffers& b, int copy) {
  const int G = pr.K / pr.group;
  const size_t row_bytes = size_t(pr.K) * pr.bits / 8;
  std::vector<uint16_t> x(size_t(pr.M) * pr.K), out(size_t(pr.M) * pr.N);
  CK(cudaMemcpy(x.data(), b.x, x.size() * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(out.data(), b.out, out.size() * 2, cudaMemcpyDeviceToHost));
  const double u = pr.bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  int bad = 0;
  std::mt19937 rng(7);
  for (int t = 0; t < 48; ++t) {
    const int n = t < 2 ? (t == 0 ? 0 : pr.N - 1) : static_cast<int>(rng() % pr.N);
    std::vector<uint8_t> row(row_bytes);
    std::vector<float> s(G);
    std::vector<uint8_t> z(G, 8);
    CK(cudaMemcpy(row.data(), b.qweight[copy] + size_t(n) * row_bytes, row_bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(s.data(), b.scales + size_t(n) * G, G * 4, cudaMemcpyDeviceToHost));
    if (pr.bits == 4) CK(cudaMemcpy(z.data(), b.zeros + size_t(n) * G, G, cudaMemcpyDeviceToHost));
    for (int m = 0; m < pr.M; ++m) {
      double ref = 0, mag = 0;
      for (int k = 0; k < pr.K; ++k) {
        int q;
        if (pr.bits == 4) q = ((k & 1) ? row[k / 2] >> 4 : row[k / 2] & 15) - z[k / pr.group];
        else q = static_cast<int8_t>(row[k]);
        const double w = double(q) * s[k / pr.group];
        const double xv = half_bits_to_float(x[size_t(m) * pr.K + k], pr.bf16);
        ref += xv * w;
        mag += std::fabs(xv * w);
      }
      const double got = half_bits_to_float(out[size_t(m) * pr.N + n], pr.bf16);
      if (!(std::fabs(got - ref) <= u * std::fabs(ref) + 1e-5 * mag + 1e-6)) {
        if (bad < 3) std::printf("    MISMATCH m=%d n=%d got %.6f ref %.6f\n", m, n, got, ref);
        ++bad;
      }
    }
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  bool bf16 = true, quick = false, all_m = false;
  int iters = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dtype" && i + 1 < argc) bf16 = std::string(argv[++i]) != "f16";
    else if (a == "--quick") quick = true;
    else if (a == "--all-m") all_m = true;
    else if (a == "--iters" && i + 1 < argc) iters = std::max(5, std::atoi(argv[++i]));
    else { std::fprintf(stderr, "usage: %s [--dtype bf16|f16] [--quick] [--all-m] [--iters N]\n", argv[0]); return 2; }
  }
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int arch = prop.major * 10 + prop.minor;
  std::printf("device: %s, %d SMs, L2 %d MB, sm_%d; dtype %s\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, arch, bf16 ? "bf16" : "f16");

  // Ceiling: device-to-device copy of 1 GiB, bytes read + written.
  {
    const size_t bytes = size_t(1) << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    const double us = bench_util::time_us(1, 10, [&](int) { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
    std::printf("ceiling copy: %.1f us, %.0f GB/s (read + write)\n", us, 2.0 * bytes / us * 1e-3);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }

  const std::vector<std::pair<int, int>> shapes_all = {
      {4096, 4096}, {4096, 14336}, {14336, 4096}, {8192, 28672}, {28672, 8192}};
  const std::vector<std::pair<int, int>> shapes_quick = {{4096, 4096}, {8192, 28672}};
  const auto& shapes = quick ? shapes_quick : shapes_all;
  const std::vector<int> Ms = all_m  ? std::vector<int>{1, 2, 4, 8, 16, 32, 64}
                             : quick ? std::vector<int>{1}
                                     : std::vector<int>{1, 4, 16};

  int failures = 0;
  std::printf("%-5s %6s %6s %3s %-10s %6s %10s %9s %8s %s\n", "bits", "N", "K", "M", "config",
              "splits", "median_us", "GB/s", "TFLOP/s", "");
  for (int bits : {4, 8}) {
    for (auto [N, K] : shapes) {
      const int group = bits == 4 ? 128 : K;
      const int G = K / group;
      Buffers b;
      b.weight_bytes = size_t(N) * K * bits / 8;
      const int copies = static_cast<int>(std::min<size_t>(
          16, std::max<size_t>(1, (4 * size_t(prop.l2CacheSize)) / b.weight_bytes + 1)));
      for (int c = 0; c < copies; ++c) {
        uint8_t* w;
        CK(cudaMalloc(&w, b.weight_bytes));
        fill_bytes<<<1024, 256>>>(w, b.weight_bytes, 17u + c);
        b.qweight.push_back(w);
      }
      // Scales f32 in [0.005, 0.02) (int4) / [0.0005, 0.002) (int8); zeros 0..15; x in [-1, 1).
      std::vector<float> hs(size_t(N) * G);
      std::vector<uint8_t> hz(size_t(N) * G);
      std::mt19937 rng(bits * 1000 + N + K);
      std::uniform_real_distribution<float> us(0.5f, 2.0f), ux(-1.0f, 1.0f);
      for (auto& v : hs) v = us(rng) * (bits == 4 ? 0.01f : 0.001f);
      for (auto& v : hz) v = static_cast<uint8_t>(rng() & 15);
      CK(cudaMalloc(&b.scales, hs.size() * 4));
      CK(cudaMemcpy(b.scales, hs.data(), hs.size() * 4, cudaMemcpyHostToDevice));
      if (bits == 4) {
        CK(cudaMalloc(&b.zeros, hz.size()));
        CK(cudaMemcpy(b.zeros, hz.data(), hz.size(), cudaMemcpyHostToDevice));
      }
      const int maxM = 64;
      std::vector<uint16_t> hx(size_t(maxM) * K);
      for (auto& v : hx) v = float_to_half_bits(ux(rng), bf16);
      CK(cudaMalloc(&b.x, hx.size() * 2));
      CK(cudaMemcpy(b.x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMalloc(&b.out, size_t(maxM) * N * 2));
      CK(cudaMalloc(&b.workspace, woq_gemv_workspace_bytes(maxM, N, 8)));

      for (int M : Ms) {
        WoqGemmParams p;
        p.x = b.x; p.scales = b.scales; p.zeros = b.zeros; p.out = b.out; p.workspace = b.workspace;
        p.M = M; p.N = N; p.K = K; p.group = group; p.ldx = K; p.ldo = N; p.bits = bits;
        p.dtype = bf16 ? DType::kBF16 : DType::kF16;
        p.scales_f32 = true;
        p.qweight = b.qweight[0];
        const double bytes = double(b.weight_bytes) + double(N) * G * 4 + (bits == 4 ? double(N) * G : 0) +
                             double(M) * K * 2 + double(M) * N * 2;
        const double flops = 2.0 * M * N * double(K);
        const WoqPlan plan = choose_woq_plan(M, N, K, bits, prop.multiProcessorCount, arch,
                                             woq_gemv_supported(p), woq_mma_supported(p));
        // Every GEMV and tensor-core config that can hold M, at splits 1, 2, 4 and the heuristic's.
        struct Variant { bool mma; int cfg; };
        std::vector<Variant> variants;
        for (int c = 0; c < static_cast<int>(GemvConfig::kCount); ++c)
          if (gemv_config_info(static_cast<GemvConfig>(c)).max_m >= M) variants.push_back({false, c});
        for (int c = 0; c < static_cast<int>(MmaConfig::kCount); ++c)
          if (mma_config_info(static_cast<MmaConfig>(c)).max_m >= M) variants.push_back({true, c});
        for (const Variant v : variants) {
          const bool heur_here = plan.path == (v.mma ? WoqPath::kMma : WoqPath::kGemv) &&
                                 (v.mma ? static_cast<int>(plan.mma) : static_cast<int>(plan.gemv)) == v.cfg;
          std::vector<int> split_list = {1, 2, 4};
          if (heur_here && std::find(split_list.begin(), split_list.end(), plan.splits) == split_list.end())
            split_list.push_back(plan.splits);
          const char* name = v.mma ? mma_config_info(static_cast<MmaConfig>(v.cfg)).name
                                   : gemv_config_info(static_cast<GemvConfig>(v.cfg)).name;
          for (int splits : split_list) {
            CK(cudaMemset(b.out, 0xFF, size_t(M) * N * 2));  // NaN poison before the check
            const double t = bench_util::time_us(copies, iters, [&](int i) {
              WoqGemmParams q = p;
              q.qweight = b.qweight[i];
              CK(v.mma ? woq_mma(q, static_cast<MmaConfig>(v.cfg), splits, nullptr)
                       : woq_gemv(q, static_cast<GemvConfig>(v.cfg), splits, nullptr));
            });
            // The last timed launch used copy (iters - 1) % copies.
            const int bad = spot_check({bits, M, N, K, group, bf16}, b, (iters - 1) % copies);
            failures += bad != 0;
            const bool pick = heur_here && plan.splits == splits;
            std::printf("int%-2d %6d %6d %3d %-10s %6d %10.2f %9.0f %8.2f %s%s\n", bits, N, K, M, name,
                        splits, t, bytes / t * 1e-3, flops / t * 1e-6, pick ? "<- heuristic" : "",
                        bad ? " WRONG" : "");
          }
        }
      }
      // Dequantize (large-M path, before cuBLAS): reads the quantized weight, writes N*K*2.
      {
        CK(cudaMalloc(&b.dense, size_t(N) * K * 2));
        WoqGemmParams p;
        p.scales = b.scales; p.zeros = b.zeros; p.N = N; p.K = K; p.group = group; p.bits = bits;
        p.dtype = bf16 ? DType::kBF16 : DType::kF16;
        p.scales_f32 = true;
        const double t = bench_util::time_us(copies, iters, [&](int i) {
          WoqGemmParams q = p;
          q.qweight = b.qweight[i];
          CK(woq_dequantize(q, b.dense, nullptr));
        });
        const double bytes = double(b.weight_bytes) + double(N) * K * 2 + double(N) * G * (bits == 4 ? 5 : 4);
        std::printf("int%-2d %6d %6d %3s %-10s %6s %10.2f %9.0f %8s\n", bits, N, K, "-", "dequant", "-", t,
                    bytes / t * 1e-3, "-");
        CK(cudaFree(b.dense));
      }
      for (auto w : b.qweight) CK(cudaFree(w));
      CK(cudaFree(b.scales));
      if (b.zeros) CK(cudaFree(b.zeros));
      CK(cudaFree(b.x));
      CK(cudaFree(b.out));
      CK(cudaFree(b.workspace));
    }
  }
  std::printf("%s\n", failures ? "SOME OUTPUTS WRONG" : "all outputs checked: ok");
  return failures ? 1 : 0;
}
