// Torch-free GPU self-check and microbenchmark of the prepacked weight-only GEMM
// (csrc/kernels/gemm/pk_gemm.h).
//
//   --check [--quick]  every config x split count {1, 3} (and the heuristic's pick) over int4
//       (group 128 symmetric, group 32 / 64 with zero points, per-channel) and int8, fp16 and
//       bf16, awkward shapes (N = 11008 and 24, K = 4104 / 4160 / 4224) and token counts across
//       every config boundary; outputs poisoned with NaN (plus guard columns) and compared with a
//       float64 host reference on a sample of columns; split-K counters must come back zeroed;
//       the packed -> dense dequantize kernel compared element by element. --quick: small
//       shapes only (for compute-sanitizer memcheck / racecheck). Exit code 1 on any mismatch.
//   (default) timing sweep over the TARGETS shapes (N x K) at M = 1 .. 128: the heuristic's
//       pick, every config at split counts 1, 2, 4, and the canonical-layout kernels of
//       woq_gemm.h for reference; median us, GB/s (weights + scales + x + out, each once) and
//       TFLOP/s (2 M N K). Weights rotate over enough copies to exceed 4x the L2.
//       [--quick] 2 shapes, M = 1 and 16; [--dtype bf16|f16]; [--iters N]
//
// Build (from the repository root; bench/gpu_check.sh's cpp stage links the built library):
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr --use_fast_math -gencode=arch=compute_90a,code=sm_90a \
//     -Icsrc/kernels -Ibench/cpp bench/cpp/pk_bench.cu build/<tag>/libsquash_kernels.a -o build/pk_bench
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
#include "gemm/pk_gemm.h"
#include "gemm/woq_gemm.h"
#include "pk_reference.h"
#include "bench_util.cuh"

using namespace squash::gemm;

namespace {

template <typename T>
T* dev_copy(const std::vector<T>& h) {
  T* d = nullptr;
  CK(cudaMalloc(&d, std::max<size_t>(h.size(), 1) * sizeof(T)));
  if (!h.empty()) CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

float bits_to_float(uint16_t b, bool bf16) {
  if (bf16) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

uint16_t float_to_bits(float f, bool bf16) {
  uint16_t b;
  if (bf16) {
    const __nv_bfloat16 h = __float2bfloat16_rn(f);
    std::memcpy(&b, &h, 2);
  } else {
    const __half h = __float2half_rn(f);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

const char* config_name(int c) { return c < 0 ? "heuristic" : pk_config_info(static_cast<PkConfig>(c)).name; }

// ---------------------------------------------------------------- --check

struct Format {
  int bits, group;  // group -1: per-channel
  bool zeros;
  const char* name;
};

int g_checks = 0, g_failures = 0;

// One weight set on the device, checked at every M, config and split count.
void check_format(const Format& f, int N, int K, const std::vector<int>& Ms, bool bf16, std::mt19937& rng) {
  const pkref::Weights w = pkref::make_weights(f.bits, N, K, f.group, rng);
  uint8_t* d_packed = dev_copy(w.packed);
  float* d_scales = dev_copy(w.scales_packed);
  uint8_t* d_zeros = f.zeros ? dev_copy(w.zeros_packed) : nullptr;
  const int maxM = *std::max_element(Ms.begin(), Ms.end());
  const int ldo = N + 8;  // 8 guard columns per row, poisoned, must stay NaN
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> hx(static_cast<size_t>(maxM) * K), hbias(N);
  for (auto& v : hx) v = float_to_bits(nd(rng), bf16);
  for (auto& v : hbias) v = float_to_bits(nd(rng), bf16);
  uint16_t* d_x = dev_copy(hx);
  uint16_t* d_bias = dev_copy(hbias);
  uint16_t* d_out = nullptr;
  float* d_ws = nullptr;
  int* d_counters = nullptr;
  const int max_counters = pk_blocks(PkConfig::kM16N16, maxM, N);  // the most blocks of any config
  CK(cudaMalloc(&d_out, static_cast<size_t>(maxM) * ldo * 2));
  CK(cudaMalloc(&d_ws, pk_workspace_bytes(maxM, N, 3)));
  CK(cudaMalloc(&d_counters, max_counters * sizeof(int)));
  CK(cudaMemset(d_counters, 0, max_counters * sizeof(int)));

  // Sampled output columns: both ends, both halves of the first and last n16 pair, random ones.
  std::vector<int> cols = {0, 7, 8, N - 9, N - 8, N - 1};
  for (int i = 0; i < 18; ++i) cols.push_back(static_cast<int>(rng() % N));
  const double u = bf16 ? 1.0 / 256 : 1.0 / 2048;

  for (int M : Ms) {
    // float64 reference of the sampled columns
    std::vector<double> ref(static_cast<size_t>(M) * cols.size()), mag(ref.size());
    for (int m = 0; m < M; ++m)
      for (size_t ci = 0; ci < cols.size(); ++ci) {
        double r = 0, a = 0;
        for (int k = 0; k < K; ++k) {
          const double v = bits_to_float(hx[static_cast<size_t>(m) * K + k], bf16) * pkref::weight_value(w, cols[ci], k, f.zeros);
          r += v;
          a += std::fabs(v);
        }
        ref[m * cols.size() + ci] = r + bits_to_float(hbias[cols[ci]], bf16);
        mag[m * cols.size() + ci] = a;
      }
    const PkPlan plan = choose_pk_plan(M, N, K, f.bits, 132, 90);
    for (int c = -1; c < static_cast<int>(PkConfig::kCount); ++c) {
      for (int splits : {1, 3}) {
        if (c < 0 && splits != 1) continue;
        const PkConfig cfg = c < 0 ? plan.config : static_cast<PkConfig>(c);
        const int s = c < 0 ? plan.splits : splits;
        PkGemmParams p;
        p.x = d_x; p.packed = d_packed; p.scales = d_scales; p.zeros = d_zeros; p.bias = d_bias;
        p.out = d_out; p.workspace = d_ws; p.counters = d_counters;
        p.M = M; p.N = N; p.K = K; p.group = w.g; p.ldx = K; p.ldo = ldo; p.bits = f.bits;
        p.dtype = bf16 ? DType::kBF16 : DType::kF16;
        CK(cudaMemset(d_out, 0xFF, static_cast<size_t>(M) * ldo * 2));  // NaN poison
        CK(pk_gemm(p, cfg, s, nullptr));
        CK(cudaDeviceSynchronize());
        std::vector<uint16_t> out(static_cast<size_t>(M) * ldo);
        CK(cudaMemcpy(out.data(), d_out, out.size() * 2, cudaMemcpyDeviceToHost));
        std::vector<int> counters(max_counters);
        CK(cudaMemcpy(counters.data(), d_counters, counters.size() * sizeof(int), cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int m = 0; m < M; ++m) {
          for (size_t ci = 0; ci < cols.size(); ++ci) {
            const double got = bits_to_float(out[static_cast<size_t>(m) * ldo + cols[ci]], bf16);
            const double r = ref[m * cols.size() + ci];
            // final rounding + float32 accumulation (far below 2^-20 of sum |x w| in practice)
            if (!(std::fabs(got - r) <= u * std::fabs(r) + std::ldexp(mag[m * cols.size() + ci], -20) + 1e-6)) {
              if (bad < 3) std::printf("    m=%d n=%d got %.6f ref %.6f\n", m, cols[ci], got, r);
              ++bad;
            }
          }
          for (int n = N; n < ldo; ++n)
            if (!std::isnan(bits_to_float(out[static_cast<size_t>(m) * ldo + n], bf16))) ++bad;
          for (int n = 0; n < N; ++n)  // every element written (finite)
            if (!std::isfinite(bits_to_float(out[static_cast<size_t>(m) * ldo + n], bf16))) ++bad;
        }
        for (int v : counters) bad += v != 0;
        ++g_checks;
        g_failures += bad != 0;
        if (bad || c < 0)
          std::printf("%s %-6s %s N=%d K=%d M=%d %-11s splits=%d%s\n", bad ? "FAIL" : "ok  ", f.name,
                      bf16 ? "bf16" : "f16", N, K, M, pk_config_info(cfg).name, s, c < 0 ? " (heuristic)" : "");
      }
    }
  }

  // packed -> dense, every element, vs the canonical (q - z) * s rounded once
  {
    uint16_t* d_dense = nullptr;
    CK(cudaMalloc(&d_dense, static_cast<size_t>(N) * K * 2));
    PkGemmParams p;
    p.packed = d_packed; p.scales = d_scales; p.zeros = d_zeros;
    p.N = N; p.K = K; p.group = w.g; p.bits = f.bits; p.dtype = bf16 ? DType::kBF16 : DType::kF16;
    CK(pk_dequantize(p, d_dense, nullptr));
    std::vector<uint16_t> dense(static_cast<size_t>(N) * K);
    CK(cudaMemcpy(dense.data(), d_dense, dense.size() * 2, cudaMemcpyDeviceToHost));
    int bad = 0;
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        const float r = bits_to_float(float_to_bits(static_cast<float>(pkref::weight_value(w, n, k, f.zeros)), bf16), bf16);
        bad += bits_to_float(dense[static_cast<size_t>(n) * K + k], bf16) != r;
      }
    ++g_checks;
    g_failures += bad != 0;
    std::printf("%s %-6s %s N=%d K=%d dequantize: %d mismatches\n", bad ? "FAIL" : "ok  ", f.name,
                bf16 ? "bf16" : "f16", N, K, bad);
    CK(cudaFree(d_dense));
  }
  for (void* ptr : {static_cast<void*>(d_packed), static_cast<void*>(d_scales), static_cast<void*>(d_zeros),
                    static_cast<void*>(d_x), static_cast<void*>(d_bias), static_cast<void*>(d_out),
                    static_cast<void*>(d_ws), static_cast<void*>(d_counters)})
    if (ptr) CK(cudaFree(ptr));
}

int run_check(bool quick) {
  std::mt19937 rng(99);
  const Format formats[] = {{4, 128, false, "g128"}, {4, 32, true, "g32z"}, {4, 64, true, "g64z"},
                            {4, -1, true, "chz"}, {8, -1, false, "int8"}};
  // Token counts across every config boundary (16, 32, 64) and row chunks (> 64).
  const std::vector<int> Ms = quick ? std::vector<int>{1, 17, 70} : std::vector<int>{1, 5, 16, 33, 64, 100};
  int i = 0;
  for (const Format& f : formats) {
    const bool per_channel = f.group < 0;
    const int k_big = per_channel ? 4104 : 4224;
    const int k_small = per_channel ? 4104 : (f.group == 128 ? 4224 : 4160);
    if (!quick) check_format(f, 11008, k_big, Ms, i % 2 == 1, rng);
    check_format(f, 24, k_small, Ms, i % 2 == 0, rng);
    ++i;
  }
  std::printf("%d/%d checks passed\n", g_checks - g_failures, g_checks);
  return g_failures ? 1 : 0;
}

// ---------------------------------------------------------------- timing

// Deterministic pseudo-random bytes on the device (a hash of the index), fast for 100s of MB.
__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
    p[i] = static_cast<uint8_t>(h);
  }
}

int run_timing(bool bf16, bool quick, int iters) {
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int arch = prop.major * 10 + prop.minor, sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs, L2 %d MB, sm_%d; dtype %s\n", prop.name, sms, prop.l2CacheSize >> 20, arch,
              bf16 ? "bf16" : "f16");
  {  // ceiling: device-to-device copy of 1 GiB, bytes read + written
    const size_t bytes = size_t(1) << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    const double us = bench_util::time_us(1, 10, [&](int) { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
    std::printf("ceiling copy: %.1f us, %.0f GB/s (read + write)\n", us, 2.0 * bytes / us * 1e-3);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }
  const std::vector<std::pair<int, int>> shapes =
      quick ? std::vector<std::pair<int, int>>{{4096, 4096}, {28672, 8192}}
            : std::vector<std::pair<int, int>>{{4096, 4096}, {4096, 14336}, {14336, 4096}, {8192, 28672}, {28672, 8192}};
  const std::vector<int> Ms = quick ? std::vector<int>{1, 16} : std::vector<int>{1, 2, 4, 8, 16, 32, 64, 128};
  const int maxM = *std::max_element(Ms.begin(), Ms.end());
  std::printf("%-5s %6s %6s %4s %-12s %6s %10s %9s %8s\n", "bits", "N", "K", "M", "config", "splits", "median_us",
              "GB/s", "TFLOP/s");
  for (int bits : {4, 8}) {
    for (const auto& shape : shapes) {
      const int N = shape.first, K = shape.second;
      const int group = bits == 4 ? 128 : K, G = K / group;
      const size_t wbytes = static_cast<size_t>(N) * pack::tiles_k(bits, K) * pack::tile_k(bits) * bits / 8;
      const int copies = static_cast<int>(std::min<size_t>(16, 4 * size_t(prop.l2CacheSize) / wbytes + 1));
      std::vector<uint8_t*> packed(copies);
      for (int c = 0; c < copies; ++c) {
        CK(cudaMalloc(&packed[c], wbytes));
        fill_bytes<<<1024, 256>>>(packed[c], wbytes, 17u + c);  // also valid canonical-layout bytes
      }
      std::vector<float> hs(static_cast<size_t>(N) * G, 0.01f);
      float* d_scales = dev_copy(hs);
      std::vector<uint16_t> hx(static_cast<size_t>(maxM) * K, float_to_bits(0.5f, bf16));
      uint16_t* d_x = dev_copy(hx);
      uint16_t* d_out = nullptr;
      float* d_ws = nullptr;
      int* d_counters = nullptr;
      CK(cudaMalloc(&d_out, static_cast<size_t>(maxM) * N * 2));
      CK(cudaMalloc(&d_ws, pk_workspace_bytes(maxM, N, 8)));
      CK(cudaMalloc(&d_counters, pk_blocks(PkConfig::kM16N16, maxM, N) * sizeof(int)));
      CK(cudaMemset(d_counters, 0, pk_blocks(PkConfig::kM16N16, maxM, N) * sizeof(int)));
      for (int M : Ms) {
        const double bytes = double(wbytes) + double(N) * G * 4 + double(M) * K * 2 + double(M) * N * 2;
        const double flops = 2.0 * M * N * double(K);
        const PkPlan plan = choose_pk_plan(M, N, K, bits, sms, arch);
        auto report = [&](const char* name, int splits, double t, bool pick) {
          std::printf("int%-2d %6d %6d %4d %-12s %6d %10.2f %9.0f %8.2f %s\n", bits, N, K, M, name, splits, t,
                      bytes / t * 1e-3, flops / t * 1e-6, pick ? "<- heuristic" : "");
        };
        for (int c = 0; c < static_cast<int>(PkConfig::kCount); ++c) {
          const PkConfig cfg = static_cast<PkConfig>(c);
          std::vector<int> split_list = {1, 2, 4};
          if (!plan.dequant && plan.config == cfg &&
              std::find(split_list.begin(), split_list.end(), plan.splits) == split_list.end())
            split_list.push_back(plan.splits);
          for (int splits : split_list) {
            const double t = bench_util::time_us(copies, iters, [&](int i) {
              PkGemmParams p;
              p.x = d_x; p.packed = packed[i]; p.scales = d_scales; p.out = d_out; p.workspace = d_ws;
              p.counters = d_counters; p.M = M; p.N = N; p.K = K; p.group = group; p.ldx = K; p.ldo = N;
              p.bits = bits; p.dtype = bf16 ? DType::kBF16 : DType::kF16;
              CK(pk_gemm(p, cfg, splits, nullptr));
            });
            report(config_name(c), splits, t, !plan.dequant && plan.config == cfg && plan.splits == splits);
          }
        }
        // The canonical-layout kernels' heuristic pick (woq_gemm.h), on the same bytes.
        WoqGemmParams q;
        q.x = d_x; q.scales = d_scales; q.out = d_out; q.workspace = d_ws;
        q.M = M; q.N = N; q.K = K; q.group = group; q.ldx = K; q.ldo = N; q.bits = bits;
        q.dtype = bf16 ? DType::kBF16 : DType::kF16;
        q.qweight = packed[0];
        const WoqPlan wp = choose_woq_plan(M, N, K, bits, sms, arch, woq_gemv_supported(q), woq_mma_supported(q));
        if (wp.path != WoqPath::kDequantMatmul && wp.splits <= 8) {
          const double t = bench_util::time_us(copies, iters, [&](int i) {
            WoqGemmParams r = q;
            r.qweight = packed[i];
            CK(wp.path == WoqPath::kGemv ? woq_gemv(r, wp.gemv, wp.splits, nullptr) : woq_mma(r, wp.mma, wp.splits, nullptr));
          });
          report(wp.path == WoqPath::kGemv ? "canon_gemv" : "canon_mma", wp.splits, t, false);
        }
      }
      for (auto ptr : packed) CK(cudaFree(ptr));
      CK(cudaFree(d_scales));
      CK(cudaFree(d_x));
      CK(cudaFree(d_out));
      CK(cudaFree(d_ws));
      CK(cudaFree(d_counters));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false, quick = false, bf16 = true;
  int iters = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") check = true;
    else if (a == "--quick") quick = true;
    else if (a == "--dtype" && i + 1 < argc) bf16 = std::string(argv[++i]) != "f16";
    else if (a == "--iters" && i + 1 < argc) iters = std::max(5, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: %s [--check] [--quick] [--dtype bf16|f16] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  return check ? run_check(quick) : run_timing(bf16, quick, iters);
}
