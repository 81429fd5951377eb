// Torch-free microbenchmark and self-check of the norm kernels (csrc/kernels/norm).
//
// Build (from the repository root; not part of CMake):
//   mkdir -p build && nvcc -O3 -std=c++17 --expt-relaxed-constexpr --use_fast_math -ftz=false \
//     -gencode=arch=compute_90a,code=sm_90a -Icsrc/kernels \
//     bench/cpp/norm_bench.cu csrc/kernels/norm/*.cu -o build/norm_bench
//   (sm_80: -gencode=arch=compute_80,code=sm_80)
// Run:
//   build/norm_bench --check            every op x dtype x hidden x forced config x layout vs a
//                                       host float64 reference (exit 1 on any mismatch)
//   build/norm_bench [--dtype bf16|fp16|fp32|all] [--quick] [--sweep]
//                                       GB/s of the 8 ops, hidden 1024..16384, tokens
//                                       4096..65536, next to the device copy bandwidth measured
//                                       in the same run; --sweep adds every forced config
//                                       (nv 1/2/4/8, fallback) to tune norm_heuristics.h.
// Bytes: each input read once + each output written once (weight/bias once per launch).
// Timing: median over launches of cudaEvent pairs, queued behind a spin kernel so the GPU never
// waits on the CPU; inputs rotate over slices of large buffers so small cases miss L2 too.
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

#include "norm/norm_params.h"

using namespace squash::norm;

#define CK(call)                                                                      \
  do {                                                                                \
    cudaError_t e_ = (call);                                                          \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,              \
                   cudaGetErrorString(e_));                                           \
      std::exit(2);                                                                   \
    }                                                                                 \
  } while (0)

namespace {

struct OpDesc {
  const char* name;
  Kind kind;
  bool residual;
  bool quant;
};
const OpDesc kOps[] = {
    {"layer_norm", Kind::kLayerNorm, false, false},
    {"rms_norm", Kind::kRMSNorm, false, false},
    {"add_layer_norm", Kind::kLayerNorm, true, false},
    {"add_rms_norm", Kind::kRMSNorm, true, false},
    {"layer_norm_quant", Kind::kLayerNorm, false, true},
    {"rms_norm_quant", Kind::kRMSNorm, false, true},
    {"add_layer_norm_quant", Kind::kLayerNorm, true, true},
    {"add_rms_norm_quant", Kind::kRMSNorm, true, true},
};

const char* dtype_name(DType d) {
  return d == DType::kFloat16 ? "fp16" : d == DType::kBFloat16 ? "bf16" : "fp32";
}

// ---- host conversions (round to nearest even, as the kernels) ----
float round_to(DType d, float f) {
  if (d == DType::kFloat16) return __half2float(__float2half_rn(f));
  if (d == DType::kBFloat16) return __bfloat162float(__float2bfloat16_rn(f));
  return f;
}
void put(DType d, void* base, int64_t i, float f) {
  if (d == DType::kFloat16)
    static_cast<__half*>(base)[i] = __float2half_rn(f);
  else if (d == DType::kBFloat16)
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(f);
  else
    static_cast<float*>(base)[i] = f;
}
float get(DType d, const void* base, int64_t i) {
  if (d == DType::kFloat16) return __half2float(static_cast<const __half*>(base)[i]);
  if (d == DType::kBFloat16) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  return static_cast<const float*>(base)[i];
}
// One unit in the last place of `ref` in dtype d (normal range).
double ulp(DType d, double ref) {
  const int mant = d == DType::kFloat16 ? 10 : d == DType::kBFloat16 ? 7 : 23;
  const double a = std::max(std::fabs(ref), 1e-30);
  return std::ldexp(1.0, std::ilogb(a) - mant);
}

__global__ void fill_kernel(void* p, DType d, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    const float u = (h >> 8) * (1.f / 16777216.f);
    const float f = lo + (hi - lo) * u;
    if (d == DType::kFloat16)
      static_cast<__half*>(p)[i] = __float2half_rn(f);
    else if (d == DType::kBFloat16)
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(f);
    else
      static_cast<float*>(p)[i] = f;
  }
}

void fill(void* p, DType d, int64_t n, uint32_t seed, float lo, float hi) {
  fill_kernel<<<1024, 256>>>(p, d, n, seed, lo, hi);
  CK(cudaGetLastError());
}

__global__ void spin_kernel(uint64_t ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

std::string config_name(const NormConfig& c) {
  char buf[64];
  if (c.fallback)
    std::snprintf(buf, sizeof buf, "vec%d fallback x%d", c.vec, c.threads_per_row);
  else
    std::snprintf(buf, sizeof buf, "vec%d nv%d %dx%d", c.vec, c.nv, c.threads_per_row,
                  c.rows_per_block);
  return buf;
}

// =============================================================================================
// --check: host float64 reference
struct HostCase {
  const OpDesc* op;
  DType dt, wdt;
  int64_t rows, hidden, stride;  // x/residual row stride (elements)
  int offset;                    // element offset of the x/residual base pointers
  bool has_w, has_b, static_q;
  float scale;  // static scale
  float xlo, xhi;
  const NormConfig* force;
  std::string label;
};

int g_failures = 0, g_cases = 0, g_printed = 0;

void report(const HostCase& c, const char* what, int64_t row, int64_t j, double got,
            double want) {
  ++g_failures;
  if (g_printed++ < 20)
    std::printf("FAIL %s %s w%s %s hidden=%lld rows=%lld %s: %s[%lld,%lld] got %.8g want %.8g\n",
                c.op->name, dtype_name(c.dt), dtype_name(c.wdt), c.label.c_str(),
                (long long)c.hidden, (long long)c.rows, c.force ? "forced" : "auto", what,
                (long long)row, (long long)j, got, want);
}

void run_check_case(const HostCase& c, std::mt19937& rng) {
  ++g_cases;
  const int es = dtype_size(c.dt), ws = dtype_size(c.wdt);
  const int64_t in_elems = c.offset + (c.rows - 1) * c.stride + c.hidden;
  const int64_t n = c.rows * c.hidden;
  std::uniform_real_distribution<float> ux(c.xlo, c.xhi), ur(-1.f, 1.f), uw(0.5f, 1.5f),
      ub(-0.5f, 0.5f);
  std::vector<char> hx(in_elems * es), hr(in_elems * es), hw(c.hidden * ws), hb(c.hidden * ws);
  std::vector<float> fx(n), fr(n), fw(c.hidden, 1.f), fb(c.hidden, 0.f);
  for (int64_t i = 0; i < in_elems; ++i) {
    put(c.dt, hx.data(), i, ux(rng));
    put(c.dt, hr.data(), i, ur(rng));
  }
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t j = 0; j < c.hidden; ++j) {
      fx[r * c.hidden + j] = get(c.dt, hx.data(), c.offset + r * c.stride + j);
      fr[r * c.hidden + j] = get(c.dt, hr.data(), c.offset + r * c.stride + j);
    }
  for (int64_t j = 0; j < c.hidden; ++j) {
    const float w = (rng() & 1) ? uw(rng) : -uw(rng);
    put(c.wdt, hw.data(), j, w);
    put(c.wdt, hb.data(), j, ub(rng));
    if (c.has_w) fw[j] = get(c.wdt, hw.data(), j);
    if (c.has_b) fb[j] = get(c.wdt, hb.data(), j);
  }

  void *dx, *dr, *dw, *db, *dout, *dres;
  int8_t* dq;
  float *dscales, *dstatic;
  CK(cudaMalloc(&dx, hx.size()));
  CK(cudaMalloc(&dr, hr.size()));
  CK(cudaMalloc(&dw, hw.size()));
  CK(cudaMalloc(&db, hb.size()));
  CK(cudaMalloc(&dout, n * es));
  CK(cudaMalloc(&dres, n * es));
  CK(cudaMalloc(&dq, n));
  CK(cudaMalloc(&dscales, c.rows * sizeof(float)));
  CK(cudaMalloc(&dstatic, sizeof(float)));
  CK(cudaMemcpy(dx, hx.data(), hx.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dr, hr.data(), hr.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dw, hw.data(), hw.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(db, hb.data(), hb.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dstatic, &c.scale, sizeof(float), cudaMemcpyHostToDevice));
  // Poison: NaN in every float output, -128 (never produced) in q.
  CK(cudaMemset(dout, 0xff, n * es));
  CK(cudaMemset(dres, 0xff, n * es));
  CK(cudaMemset(dq, 0x80, n));
  CK(cudaMemset(dscales, 0xff, c.rows * sizeof(float)));

  NormParams p;
  p.kind = c.op->kind;
  p.dtype = c.dt;
  p.wdtype = c.wdt;
  p.rows = c.rows;
  p.hidden = c.hidden;
  p.eps = 1e-5f;
  p.x = static_cast<char*>(dx) + c.offset * es;
  p.x_stride = c.stride;
  if (c.op->residual) {
    p.residual = static_cast<char*>(dr) + c.offset * es;
    p.residual_stride = c.stride;
    p.residual_out = dres;
    p.residual_out_stride = c.hidden;
  }
  p.weight = c.has_w ? dw : nullptr;
  p.bias = c.has_b ? db : nullptr;
  if (c.op->quant) {
    p.q = dq;
    p.q_stride = c.hidden;
    p.scales = dscales;
    p.static_scale = c.static_q ? dstatic : nullptr;
  } else {
    p.out = dout;
    p.out_stride = c.hidden;
  }
  CK(norm_launch(p, 0, c.force));
  CK(cudaDeviceSynchronize());

  std::vector<char> gout(n * es), gres(n * es);
  std::vector<int8_t> gq(n);
  std::vector<float> gscales(c.rows);
  CK(cudaMemcpy(gout.data(), dout, gout.size(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(gres.data(), dres, gres.size(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(gq.data(), dq, n, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(gscales.data(), dscales, c.rows * sizeof(float), cudaMemcpyDeviceToHost));

  const int before = g_failures;
  std::vector<double> h(c.hidden), y(c.hidden);
  for (int64_t r = 0; r < c.rows && g_failures - before < 3; ++r) {
    for (int64_t j = 0; j < c.hidden; ++j) {
      const int64_t i = r * c.hidden + j;
      float hv = fx[i];
      if (c.op->residual) {
        hv = round_to(c.dt, fx[i] + fr[i]);  // fp32 add, rounded once
        const float got = get(c.dt, gres.data(), i);
        if (!(std::memcmp(&got, &hv, 4) == 0)) report(c, "residual_out", r, j, got, hv);
      }
      h[j] = hv;
    }
    double mean = 0, var = 0;
    if (c.op->kind == Kind::kLayerNorm) {
      for (double v : h) mean += v;
      mean /= c.hidden;
      for (double v : h) var += (v - mean) * (v - mean);
      var /= c.hidden;
    } else {
      for (double v : h) var += v * v;
      var /= c.hidden;
    }
    const double rstd = 1.0 / std::sqrt(var + 1e-5f);
    double amax = 0;
    for (int64_t j = 0; j < c.hidden; ++j) {
      y[j] = (h[j] - mean) * rstd * fw[j] + fb[j];
      amax = std::max(amax, std::fabs(y[j]));
    }
    if (!c.op->quant) {
      for (int64_t j = 0; j < c.hidden; ++j) {
        const double got = get(c.dt, gout.data(), r * c.hidden + j);
        // 1 ulp of the output dtype (fp32 statistics vs float64 can move a rounding tie), plus
        // fp32 statistic error (~1e-6 of the row's scale) for outputs near zero / fp32 outputs.
        const double tol = (c.dt == DType::kFloat32 ? 64 * ulp(c.dt, y[j]) : ulp(c.dt, y[j])) +
                           2e-5 * (1.0 + std::fabs(y[j]));
        if (!(std::fabs(got - y[j]) <= tol)) report(c, "out", r, j, got, y[j]);
      }
    } else {
      const double inv = c.static_q ? 1.0 / c.scale : (amax > 0 ? 127.0 / amax : 0.0);
      const double want_scale = c.static_q ? c.scale : amax / 127.0;
      if (!(std::fabs(gscales[r] - want_scale) <= 1e-5 * want_scale + 1e-30))
        report(c, "scales", r, 0, gscales[r], want_scale);
      for (int64_t j = 0; j < c.hidden; ++j) {
        const double qr = std::min(127.0, std::max(-127.0, std::nearbyint(y[j] * inv)));
        const int got = gq[r * c.hidden + j];
        if (!(std::fabs(got - qr) <= 1.0) || got == -128) report(c, "q", r, j, got, qr);
      }
    }
  }
  CK(cudaFree(dx));
  CK(cudaFree(dr));
  CK(cudaFree(dw));
  CK(cudaFree(db));
  CK(cudaFree(dout));
  CK(cudaFree(dres));
  CK(cudaFree(dq));
  CK(cudaFree(dscales));
  CK(cudaFree(dstatic));
}

int run_check() {
  std::mt19937 rng(1234);
  const DType pairs[][2] = {{DType::kFloat16, DType::kFloat16},
                            {DType::kFloat16, DType::kFloat32},
                            {DType::kBFloat16, DType::kBFloat16},
                            {DType::kBFloat16, DType::kFloat32},
                            {DType::kFloat32, DType::kFloat32}};
  const int64_t hiddens[] = {1, 2, 111, 384, 1024, 4095, 4096, 8192, 16384, 20000, 65536};
  std::vector<NormConfig> forces;
  for (int nv : {1, 2, 4, 8}) {
    NormConfig f;
    f.nv = nv;
    forces.push_back(f);
  }
  NormConfig fb;
  fb.fallback = true;
  forces.push_back(fb);
  NormConfig scalar;  // vec 1 with the default kernel choice
  scalar.vec = 1;
  forces.push_back(scalar);

  for (const auto& pr : pairs) {
    for (const OpDesc& op : kOps) {
      for (int64_t hidden : hiddens) {
        const int64_t rows = hidden >= 16384 ? 5 : 37;  // 37: partial multi-row blocks
        HostCase base{&op, pr[0], pr[1], rows, hidden, hidden, 0, true, true, false, 0.02f,
                      -2.f,  3.f,   nullptr, "contig"};
        const bool ln = op.kind == Kind::kLayerNorm;
        base.has_b = ln;
        std::vector<HostCase> cases;
        // auto config: every affine form (LN: w+b, w, b only = gamma-migrated, none)
        for (int a = 0; a < (ln ? 4 : 2); ++a) {
          HostCase c = base;
          c.has_w = a == 0 || a == 1;
          c.has_b = ln && (a == 0 || a == 2);
          c.label = std::string("contig affine") + std::to_string(a);
          cases.push_back(c);
        }
        // strided rows (16-byte aligned) and a 1-element base offset (forces narrow vectors)
        HostCase s = base;
        s.stride = hidden + 8;
        s.label = "strided";
        cases.push_back(s);
        HostCase o = base;
        o.offset = 1;
        o.label = "offset1";
        cases.push_back(o);
        // every forced config that fits the row
        for (const NormConfig& f : forces) {
          NormParams probe;
          probe.kind = op.kind;
          probe.dtype = pr[0];
          probe.wdtype = pr[1];
          probe.rows = rows;
          probe.hidden = hidden;
          probe.x = reinterpret_cast<const void*>(256);
          probe.x_stride = hidden;
          probe.out = reinterpret_cast<void*>(256);
          probe.out_stride = hidden;
          NormConfig got;
          if (norm_select_config(probe, &f, &got) != cudaSuccess) continue;
          HostCase c = base;
          c.force = &f;
          c.label = "forced " + config_name(got);
          cases.push_back(c);
        }
        // fp16 near its range limit: statistics must not overflow
        if (pr[0] == DType::kFloat16 && hidden == 4096) {
          HostCase b = base;
          b.xlo = -60000.f;
          b.xhi = 60000.f;
          b.label = "fp16 big";
          cases.push_back(b);
        }
        for (HostCase& c : cases) {
          run_check_case(c, rng);
          if (op.quant) {
            c.static_q = true;
            c.label += " static";
            run_check_case(c, rng);
          }
        }
      }
    }
    std::printf("check: %s/%s done, %d cases, %d failures so far\n", dtype_name(pr[0]),
                dtype_name(pr[1]), g_cases, g_failures);
    std::fflush(stdout);
  }
  std::printf("check: %d cases, %d failures\n", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}

// =============================================================================================
// benchmark
struct Buffers {
  void *x, *r, *out, *res, *w, *b;
  int8_t* q;
  float* scales;
  int64_t elems;  // capacity of x/r/out/res in elements of the current dtype
};

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double copy_bandwidth_gbps(void* a, void* b, size_t bytes) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    CK(cudaEventRecord(e0));
    CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t;
    CK(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 2) ms.push_back(t);
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return 2.0 * bytes / (median(ms) * 1e-3) / 1e9;
}

// Returns the median time of one launch in microseconds, or a negative value when the forced
// config does not apply.
double time_case(const OpDesc& op, DType dt, int64_t tokens, int64_t hidden, const Buffers& B,
                 const NormConfig* force, size_t l2_bytes,
                 NormConfig* used, double* bytes_out) {
  const int es = dtype_size(dt);
  const int64_t n = tokens * hidden;
  const int64_t slices = std::max<int64_t>(1, B.elems / n);
  const bool has_bias = op.kind == Kind::kLayerNorm;
  double bytes = n * es /*x*/ + (op.quant ? n + tokens * 4.0 : n * es) +
                 (has_bias ? 2.0 : 1.0) * hidden * es;
  if (op.residual) bytes += 2.0 * n * es;
  *bytes_out = bytes;
  const int64_t rot =
      std::min<int64_t>(slices, static_cast<int64_t>(3.0 * l2_bytes / bytes) + 1);

  auto params = [&](int64_t i) {
    const int64_t off = (i % rot) * n;
    NormParams p;
    p.kind = op.kind;
    p.dtype = dt;
    p.wdtype = dt;
    p.rows = tokens;
    p.hidden = hidden;
    p.eps = 1e-5f;
    p.x = static_cast<char*>(B.x) + off * es;
    p.x_stride = hidden;
    if (op.residual) {
      p.residual = static_cast<char*>(B.r) + off * es;
      p.residual_stride = hidden;
      p.residual_out = static_cast<char*>(B.res) + off * es;
      p.residual_out_stride = hidden;
    }
    p.weight = B.w;
    p.bias = has_bias ? B.b : nullptr;
    if (op.quant) {
      p.q = B.q + off;
      p.q_stride = hidden;
      p.scales = B.scales;
      p.static_scale = nullptr;
    } else {
      p.out = static_cast<char*>(B.out) + off * es;
      p.out_stride = hidden;
    }
    return p;
  };
  if (norm_select_config(params(0), force, used) != cudaSuccess) return -1.0;

  const double est_us = bytes / 2.5e12 * 1e6 + 3.0;
  const int iters = static_cast<int>(std::min(200.0, std::max(10.0, 30000.0 / est_us)));
  std::vector<cudaEvent_t> ev(iters + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < 3; ++i) CK(norm_launch(params(i), 0, force));  // warm-up
  spin_kernel<<<1, 1>>>(static_cast<uint64_t>(std::max(2e6, iters * 15e3)));
  for (int i = 0; i < iters; ++i) {
    CK(cudaEventRecord(ev[i]));
    CK(norm_launch(params(i), 0, force));
  }
  CK(cudaEventRecord(ev[iters]));
  CK(cudaEventSynchronize(ev[iters]));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) CK(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  return median(ms) * 1e3;
}

int run_bench(const std::vector<DType>& dtypes, bool quick, bool sweep) {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %.0f MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6);
  const std::vector<int64_t> hiddens =
      quick ? std::vector<int64_t>{1024, 4096, 16384} : std::vector<int64_t>{1024, 2048, 4096, 8192, 16384};
  const std::vector<int64_t> tokens_list =
      quick ? std::vector<int64_t>{4096, 65536} : std::vector<int64_t>{4096, 16384, 65536};
  const int64_t max_elems = 65536LL * 16384;  // 2 GiB per 16-bit buffer

  Buffers B;
  const size_t big = max_elems * 4;  // bytes: the largest case in fp32
  CK(cudaMalloc(&B.x, big));
  CK(cudaMalloc(&B.r, big));
  CK(cudaMalloc(&B.out, big));
  CK(cudaMalloc(&B.res, big));
  CK(cudaMalloc(&B.w, 16384 * 4));
  CK(cudaMalloc(&B.b, 16384 * 4));
  CK(cudaMalloc(&B.q, big));  // int8: as many elements as the 16-bit buffers
  CK(cudaMalloc(&B.scales, 65536 * 4));

  const double copy = copy_bandwidth_gbps(B.x, B.out, size_t(1) << 30);
  std::printf("copy bandwidth (read + write, 1 GiB): %.0f GB/s\n", copy);
  std::printf("%-22s %-5s %7s %6s %-26s %10s %9s %7s\n", "op", "dtype", "tokens", "hidden",
              "config", "median_us", "GB/s", "%copy");

  for (DType dt : dtypes) {
    const int es = dtype_size(dt);
    B.elems = big / es;  // 16-bit cases rotate over twice as many slices
    fill(B.x, dt, B.elems, 1, -2.f, 3.f);
    fill(B.r, dt, B.elems, 2, -1.f, 1.f);
    fill(B.w, dt, 16384, 3, 0.5f, 1.5f);
    fill(B.b, dt, 16384, 4, -0.5f, 0.5f);
    CK(cudaDeviceSynchronize());
    for (const OpDesc& op : kOps) {
      for (int64_t hidden : hiddens) {
        for (int64_t tokens : tokens_list) {
          if (tokens * hidden > B.elems) continue;
          std::vector<NormConfig> forces(1);  // [0]: the heuristic's choice
          if (sweep) {
            for (int nv : {1, 2, 4, 8}) {
              NormConfig f;
              f.nv = nv;
              forces.push_back(f);
            }
            NormConfig f;
            f.fallback = true;
            forces.push_back(f);
          }
          for (size_t k = 0; k < forces.size(); ++k) {
            NormConfig used;
            double bytes;
            const double us = time_case(op, dt, tokens, hidden, B, k == 0 ? nullptr : &forces[k],
                                        static_cast<size_t>(prop.l2CacheSize), &used, &bytes);
            if (us < 0) continue;
            const double gbps = bytes / (us * 1e-6) / 1e9;
            std::printf("%-22s %-5s %7lld %6lld %-26s %10.2f %9.0f %6.1f%%\n", op.name,
                        dtype_name(dt), (long long)tokens, (long long)hidden,
                        ((k == 0 ? "auto " : "") + config_name(used)).c_str(), us,
                        gbps, 100.0 * gbps / copy);
          }
          std::fflush(stdout);
        }
      }
    }
  }
  CK(cudaFree(B.x));
  CK(cudaFree(B.r));
  CK(cudaFree(B.out));
  CK(cudaFree(B.res));
  CK(cudaFree(B.w));
  CK(cudaFree(B.b));
  CK(cudaFree(B.q));
  CK(cudaFree(B.scales));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false, quick = false, sweep = false;
  std::vector<DType> dtypes{DType::kBFloat16};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") {
      check = true;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--sweep") {
      sweep = true;
    } else if (a == "--dtype" && i + 1 < argc) {
      const std::string d = argv[++i];
      if (d == "bf16") dtypes = {DType::kBFloat16};
      else if (d == "fp16") dtypes = {DType::kFloat16};
      else if (d == "fp32") dtypes = {DType::kFloat32};
      else if (d == "all") dtypes = {DType::kBFloat16, DType::kFloat16, DType::kFloat32};
      else {
        std::fprintf(stderr, "unknown dtype %s\n", d.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--check] [--dtype bf16|fp16|fp32|all] [--quick] [--sweep]\n",
                   argv[0]);
      return 2;
    }
  }
  return check ? run_check() : run_bench(dtypes, quick, sweep);
}
