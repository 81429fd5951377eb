// Torch-free self-check and microbenchmark of the W8A8 CUTLASS GEMM (csrc/kernels/gemm/w8a8_gemm.h).
//
// --check  every config this device runs (the sm80 ones on an H100 too), on small awkward shapes
//          (K = 16, 272, 4112; N = 8, 136, 264; M = 1, 3, 64, 65, 130; strided x and out rows),
//          f16/bf16/f32 out, per-token/per-tensor scales, with and without bias. Outputs are
//          poisoned (NaN) before each launch and compared BIT FOR BIT with a host emulation: an
//          int64 dot product (checked to fit int32) and the epilogue's float32 steps in the
//          kernel's order ((acc * xs) * ws) + bias, then one round-to-nearest-even conversion.
//          Exit 1 on any mismatch.
// --check-small  the same on K = 16 and 272 at M = 1, 65 (for compute-sanitizer racecheck, which
//          runs shared-memory-heavy kernels ~100x slower).
// --quick  4096x4096 and 28672x8192 (N x K) at M = 1, 128, 4096: every config and the heuristic's
//          pick (default mode).
// --sweep  the TARGETS shapes at M = 1..8192, every config: the data to tune w8a8_heuristics.h.
// Timings: median us over --iters launches queued behind a spin kernel (launch overhead hidden,
// like CUDA-graph replay), weights rotated over copies > 4x L2 (cold weights as in a model).
// Reports TFLOP/s (2*M*N*K) and GB/s (x + weights + scales + out, each once).
//
// Build (from the repository root, after the extension's build made libsquash_kernels.a):
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a \
//     -Icsrc/kernels bench/cpp/w8a8_bench.cu build/<wheel_tag>/libsquash_kernels.a -o build/w8a8_bench
// Run: build/w8a8_bench [--check | --check-small | --quick | --sweep] [--dtype bf16|f16|f32] [--iters N]
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

#include "gemm/w8a8_gemm.h"
#include "gemm/w8a8_heuristics.h"

using namespace squash::gemm;

namespace {

void check_cuda(cudaError_t e, const char* what, int line) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "w8a8_bench.cu:%d %s: %s\n", line, what, cudaGetErrorString(e));
  std::exit(2);
}

}  // namespace
#define CK(call) check_cuda((call), #call, __LINE__)

namespace {

constexpr int kConfigs = static_cast<int>(W8A8Config::kCount);

int out_bytes(DType d) { return d == DType::kF32 ? 4 : 2; }
const char* dtype_name(DType d) { return d == DType::kF16 ? "f16" : d == DType::kBF16 ? "bf16" : "f32"; }

// Uniform random bytes (full-range int8, -128 included) copied to each device buffer.
void fill_random(const std::vector<int8_t*>& bufs, size_t n, uint32_t seed) {
  std::vector<int8_t> h(n);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; i += 4) {
    const uint32_t r = rng();
    for (size_t j = 0; j < 4 && i + j < n; ++j) h[i + j] = static_cast<int8_t>(r >> (8 * j));
  }
  for (int8_t* b : bufs) CK(cudaMemcpy(b, h.data(), n, cudaMemcpyHostToDevice));
}

// Keeps the GPU busy while the host queues the timed launches.
__global__ void spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

// The bits the kernel must produce for one element (see the header comment).
uint32_t expected_bits(int32_t acc, float xs, float ws, float bias, DType d) {
  float v = static_cast<float>(acc);  // round to nearest even, like the kernel's converter
  v = v * xs;                          // three separately rounded float32 operations: the host
  v = v * ws;                          // build targets x86-64 without FMA, so nothing contracts
  v = v + bias;
  if (d == DType::kF32) {
    uint32_t b;
    std::memcpy(&b, &v, 4);
    return b;
  }
  uint16_t b;
  if (d == DType::kF16) {
    const __half h = __float2half_rn(v);
    std::memcpy(&b, &h, 2);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

uint32_t load_bits(const std::vector<uint8_t>& out, size_t idx, DType d) {
  uint32_t b = 0;
  std::memcpy(&b, out.data() + idx * out_bytes(d), out_bytes(d));
  return b;
}

double bits_to_double(uint32_t b, DType d) {
  if (d == DType::kF32) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  if (d == DType::kBF16) {
    const uint32_t u = b << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  const uint16_t s = static_cast<uint16_t>(b);
  std::memcpy(&h, &s, 2);
  return __half2float(h);
}

// ---- --check ---------------------------------------------------------------------------------

int run_check(int arch, bool small) {
  struct Shape { int N, K, ldx_pad, ldo_pad; };
  // The last shape has x and out rows longer than K and N (row strides of a bigger buffer).
  const std::vector<Shape> shapes = small ? std::vector<Shape>{{8, 16, 0, 0}, {264, 272, 16, 8}}
                                          : std::vector<Shape>{{8, 16, 0, 0}, {136, 4112, 0, 0}, {264, 272, 16, 8}};
  const std::vector<int> Ms = small ? std::vector<int>{1, 65} : std::vector<int>{1, 3, 64, 65, 130};
  const int maxM = *std::max_element(Ms.begin(), Ms.end());
  const DType dtypes[] = {DType::kBF16, DType::kF16, DType::kF32};
  int failures = 0, cases = 0;
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> us(1e-3f, 1.1e-2f), ub(-1.0f, 1.0f);
  for (size_t si = 0; si < shapes.size(); ++si) {
    const Shape sh = shapes[si];
    const int64_t ldx = sh.K + sh.ldx_pad, ldo = sh.N + sh.ldo_pad;
    int8_t *x, *w;
    float *xs, *ws, *bias;
    void* out;
    CK(cudaMalloc(&x, size_t(maxM) * ldx));
    CK(cudaMalloc(&w, size_t(sh.N) * sh.K));
    fill_random({x}, size_t(maxM) * ldx, 11u + si);
    fill_random({w}, size_t(sh.N) * sh.K, 29u + si);
    std::vector<int8_t> hx(size_t(maxM) * ldx), hw(size_t(sh.N) * sh.K);
    CK(cudaMemcpy(hx.data(), x, hx.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hw.data(), w, hw.size(), cudaMemcpyDeviceToHost));
    std::vector<float> hxs(maxM), hws(sh.N), hb(sh.N);
    for (auto& v : hxs) v = us(rng);
    for (auto& v : hws) v = us(rng);
    for (auto& v : hb) v = ub(rng);
    CK(cudaMalloc(&xs, maxM * 4));
    CK(cudaMalloc(&ws, sh.N * 4));
    CK(cudaMalloc(&bias, sh.N * 4));
    CK(cudaMemcpy(xs, hxs.data(), maxM * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(ws, hws.data(), sh.N * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bias, hb.data(), sh.N * 4, cudaMemcpyHostToDevice));
    const size_t out_size = size_t(maxM) * ldo * 4;
    CK(cudaMalloc(&out, out_size));
    // Exact accumulators, once per shape (every config and M reads them).
    std::vector<int32_t> acc(size_t(maxM) * sh.N);
    for (int m = 0; m < maxM; ++m) {
      for (int n = 0; n < sh.N; ++n) {
        int64_t s = 0;
        for (int k = 0; k < sh.K; ++k) s += int64_t(hx[size_t(m) * ldx + k]) * hw[size_t(n) * sh.K + k];
        if (s > INT32_MAX || s < INT32_MIN) { std::printf("accumulator overflow\n"); return 1; }
        acc[size_t(m) * sh.N + n] = static_cast<int32_t>(s);
      }
    }
    std::vector<uint8_t> hout(out_size);
    for (int c = 0; c < kConfigs; ++c) {
      const auto cfg = static_cast<W8A8Config>(c);
      if (!w8a8_config_runs_on(cfg, arch)) continue;
      for (size_t mi = 0; mi < Ms.size(); ++mi) {
        // Rotate the variants so every config meets every dtype, scale mode and bias.
        const int v = static_cast<int>(c + mi + si);
        W8A8GemmParams p;
        p.x = x; p.qweight = w; p.out = out;
        p.M = Ms[mi]; p.N = sh.N; p.K = sh.K; p.ldx = ldx; p.ldw = sh.K; p.ldo = ldo;
        p.out_dtype = dtypes[v % 3];
        p.x_scales_per_row = p.w_scales_per_col = (v / 3) % 2 == 0;
        p.x_scales = xs; p.w_scales = ws;
        p.bias = (v / 2) % 2 == 0 ? bias : nullptr;
        CK(cudaMemset(out, 0xFF, out_size));  // NaN in every dtype: unwritten elements fail
        const cudaError_t e = w8a8_gemm(p, cfg, nullptr);
        CK(e == cudaSuccess ? cudaDeviceSynchronize() : e);
        CK(cudaMemcpy(hout.data(), out, out_size, cudaMemcpyDeviceToHost));
        int bad = 0;
        double worst = 0;
        for (int m = 0; m < p.M; ++m) {
          for (int n = 0; n < p.N; ++n) {
            const int32_t a = acc[size_t(m) * sh.N + n];
            const float xsv = hxs[p.x_scales_per_row ? m : 0], wsv = hws[p.w_scales_per_col ? n : 0];
            const float bv = p.bias ? hb[n] : 0.f;
            const uint32_t want = expected_bits(a, xsv, wsv, bv, p.out_dtype);
            const uint32_t got = load_bits(hout, size_t(m) * ldo + n, p.out_dtype);
            if (got != want) {
              if (bad < 3)
                std::printf("    MISMATCH m=%d n=%d got %.8g want %.8g (float64 %.8g)\n", m, n,
                            bits_to_double(got, p.out_dtype), bits_to_double(want, p.out_dtype),
                            double(a) * xsv * wsv + bv);
              ++bad;
            }
            worst = std::max(worst, std::fabs(bits_to_double(got, p.out_dtype) -
                                              (double(a) * xsv * wsv + bv)));
          }
        }
        ++cases;
        failures += bad != 0;
        std::printf("check %-13s M=%-4d N=%-4d K=%-5d %-4s scales %-6s bias %-3s: %s (max |out - float64| %.3g)\n",
                    w8a8_config_info(cfg).name, p.M, p.N, p.K, dtype_name(p.out_dtype),
                    p.x_scales_per_row ? "vector" : "scalar", p.bias ? "yes" : "no",
                    bad ? "WRONG" : "ok", worst);
      }
    }
    for (void* ptr : {static_cast<void*>(x), static_cast<void*>(w), static_cast<void*>(xs),
                      static_cast<void*>(ws), static_cast<void*>(bias), out})
      CK(cudaFree(ptr));
  }
  std::printf("check: %d cases, %d wrong\n", cases, failures);
  return failures ? 1 : 0;
}

// ---- timing ----------------------------------------------------------------------------------

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Median microseconds of fn(i) (i picks the weight copy) over `iters` launches queued behind a
// spin kernel long enough for the host to enqueue them all (so host overhead is not timed).
template <typename Fn>
double time_us(int iters, long long spin_cycles, Fn fn) {
  for (int i = 0; i < 3; ++i) fn(i);
  std::vector<cudaEvent_t> ev(iters + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  spin<<<1, 1>>>(spin_cycles);
  CK(cudaEventRecord(ev[0]));
  for (int i = 0; i < iters; ++i) {
    fn(i);
    CK(cudaEventRecord(ev[i + 1]));
  }
  CK(cudaEventSynchronize(ev.back()));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) CK(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  return median(ms) * 1000.0;
}

int run_timing(bool sweep, DType dtype, int iters, const cudaDeviceProp& prop, int arch) {
  const std::vector<std::pair<int, int>> shapes =
      sweep ? std::vector<std::pair<int, int>>{{4096, 4096}, {14336, 4096}, {4096, 14336}, {28672, 8192}, {8192, 28672}}
            : std::vector<std::pair<int, int>>{{4096, 4096}, {28672, 8192}};  // (N, K)
  const std::vector<int> Ms = sweep ? std::vector<int>{1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192}
                                    : std::vector<int>{1, 128, 4096};
  const int maxM = Ms.back();
  // ~10 us of spin per queued launch covers the host's enqueue cost (CUTLASS's initialize + launch).
  int khz = 0;
  CK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
  const long long spin_cycles = static_cast<long long>(iters) * 10 * khz;
  std::printf("%6s %6s %5s %-13s %10s %9s %8s\n", "N", "K", "M", "config", "median_us", "TFLOP/s", "GB/s");
  for (auto [N, K] : shapes) {
    const size_t wbytes = size_t(N) * K;
    const int copies = static_cast<int>(std::min<size_t>(16, 4 * size_t(prop.l2CacheSize) / wbytes + 1));
    std::vector<int8_t*> w(copies);
    for (auto& b : w) CK(cudaMalloc(&b, wbytes));
    fill_random(w, wbytes, 100u);  // same values, distinct addresses: still cold in L2
    int8_t* x;
    float *xs, *ws;
    void* out;
    CK(cudaMalloc(&x, size_t(maxM) * K));
    fill_random({x}, size_t(maxM) * K, 5u);
    std::vector<float> ones(std::max(maxM, N), 0.01f);
    CK(cudaMalloc(&xs, maxM * 4));
    CK(cudaMalloc(&ws, N * 4));
    CK(cudaMemcpy(xs, ones.data(), maxM * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(ws, ones.data(), N * 4, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&out, size_t(maxM) * N * out_bytes(dtype)));
    for (int M : Ms) {
      W8A8GemmParams p;
      p.x = x; p.x_scales = xs; p.w_scales = ws; p.out = out;
      p.M = M; p.N = N; p.K = K; p.ldx = K; p.ldw = K; p.ldo = N;
      p.out_dtype = dtype;
      p.sm_count = prop.multiProcessorCount;
      const W8A8Config pick = choose_w8a8_config(M, N, K, arch);
      const double flops = 2.0 * M * N * double(K);
      const double bytes = double(M) * K + double(wbytes) + 4.0 * (M + N) + double(M) * N * out_bytes(dtype);
      for (int c = 0; c < kConfigs; ++c) {
        const auto cfg = static_cast<W8A8Config>(c);
        if (!w8a8_config_runs_on(cfg, arch)) continue;
        const double t = time_us(iters, spin_cycles, [&](int i) {
          W8A8GemmParams q = p;
          q.qweight = w[i % copies];
          CK(w8a8_gemm(q, cfg, nullptr));
        });
        std::printf("%6d %6d %5d %-13s %10.2f %9.1f %8.0f %s\n", N, K, M, w8a8_config_info(cfg).name, t,
                    flops / t * 1e-6, bytes / t * 1e-3, cfg == pick ? "<- heuristic" : "");
      }
    }
    for (auto ptr : w) CK(cudaFree(ptr));
    CK(cudaFree(x));
    CK(cudaFree(xs));
    CK(cudaFree(ws));
    CK(cudaFree(out));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  enum { kQuick, kCheck, kCheckSmall, kSweep } mode = kQuick;
  DType dtype = DType::kBF16;
  int iters = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") mode = kCheck;
    else if (a == "--check-small") mode = kCheckSmall;
    else if (a == "--quick") mode = kQuick;
    else if (a == "--sweep") mode = kSweep;
    else if (a == "--dtype" && i + 1 < argc) {
      const std::string d = argv[++i];
      dtype = d == "f16" ? DType::kF16 : d == "f32" ? DType::kF32 : DType::kBF16;
    } else if (a == "--iters" && i + 1 < argc) iters = std::max(5, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: %s [--check | --check-small | --quick | --sweep] [--dtype bf16|f16|f32] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int arch = prop.major * 10 + prop.minor;
  std::printf("device: %s, %d SMs, L2 %d MB, sm_%d\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, arch);
  if (mode == kCheck || mode == kCheckSmall) return run_check(arch, mode == kCheckSmall);
  return run_timing(mode == kSweep, dtype, iters, prop, arch);
}
