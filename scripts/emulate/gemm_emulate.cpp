// Host emulation check of the weight-only GEMM kernels (GEMV all configs and load widths,
// split-K reduce, dequantize, CUTLASS scale layout) and of the int8 activation quantizer (every
// kind of row of the row rule: zero, NaN, inf, tiny), against float64 / exact references written
// here (the row rule's in row_quant_ref.h); int4 zero points above 15 must give NaN output
// channels / weights (gemm_common.cuh). No GPU needed: see cuda_host_shim.h. Run: bash
// scripts/emulate/run.sh
#include "cuda_host_shim.h"
#include "emu_util.h"
#include "row_quant_ref.h"

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>

#include "gemm/quantize_act_kernel.cuh"
#include "gemm/woq_dequant_kernel.cuh"
#include "gemm/woq_gemv_kernel.cuh"
#include "gemm/woq_mma_kernel.cuh"

using namespace squash::gemm;

using emu::fromf;
using emu::tname;
using emu::tof;
static emu::Tally g_tally;

struct Case {
  int bits, M, N, K, group;  // group -1: per-channel
  bool zeros, scales_f32, bias;
  int splits;
  GemvConfig cfg;
  bool mma = false;  // tensor-core kernel (config from M) instead of the GEMV
  bool bad_zeros = false;  // a few zero points above 15: their output channels must be NaN
};

// Puts emu::bad_zeros into zeros [N, G]; returns which channels hold one.
std::vector<bool> poison_zeros(std::vector<uint8_t>& zeros, int N, int G) {
  std::vector<bool> poisoned(N, false);
  for (const emu::BadZero& b : emu::bad_zeros(N, G)) {
    zeros[static_cast<size_t>(b.n) * G + b.g] = b.value;
    poisoned[b.n] = true;
  }
  return poisoned;
}

template <typename T, int BITS, MmaConfig CFG>
void run_mma_kernel(const WoqGemmParams& p, int splits) {
  using Tr = MmaTraits<BITS, CFG>;
  const dim3 grid((p.N + Tr::kRowsPerBlock - 1) / Tr::kRowsPerBlock, splits);
  emu::launch(grid, dim3(Tr::kThreads), [&] { woq_mma_kernel<T, BITS, CFG>(p); });
  if (splits > 1) emu::launch(dim3(3), dim3(64), [&] { woq_splitk_reduce_kernel<T>(p, splits); });
}

template <typename T, int BITS>
void run_mma(const WoqGemmParams& p, int splits) {
  switch (mma_config_for_m(p.M)) {
    case MmaConfig::kM8: return run_mma_kernel<T, BITS, MmaConfig::kM8>(p, splits);
    case MmaConfig::kM16: return run_mma_kernel<T, BITS, MmaConfig::kM16>(p, splits);
    case MmaConfig::kM32: return run_mma_kernel<T, BITS, MmaConfig::kM32>(p, splits);
    default: return run_mma_kernel<T, BITS, MmaConfig::kM64>(p, splits);
  }
}

template <typename T, int BITS, int E, GemvConfig CFG>
void run_gemv_kernel(const WoqGemmParams& p, int splits) {
  using Tr = GemvTraits<BITS, E, CFG>;
  const dim3 grid((p.N + Tr::kRowsPerBlock - 1) / Tr::kRowsPerBlock, splits);
  emu::launch(grid, dim3(Tr::kThreads), [&] { woq_gemv_kernel<T, BITS, E, CFG>(p); });
  if (splits > 1) emu::launch(dim3(3), dim3(64), [&] { woq_splitk_reduce_kernel<T>(p, splits); });
}

template <typename T, int BITS, int E>
void run_gemv_cfg(const WoqGemmParams& p, GemvConfig cfg, int splits) {
  switch (cfg) {
    case GemvConfig::kM1: return run_gemv_kernel<T, BITS, E, GemvConfig::kM1>(p, splits);
    case GemvConfig::kM2: return run_gemv_kernel<T, BITS, E, GemvConfig::kM2>(p, splits);
    case GemvConfig::kM4: return run_gemv_kernel<T, BITS, E, GemvConfig::kM4>(p, splits);
    case GemvConfig::kM8: return run_gemv_kernel<T, BITS, E, GemvConfig::kM8>(p, splits);
    default: return run_gemv_kernel<T, BITS, E, GemvConfig::kM16>(p, splits);
  }
}

template <typename T>
void check_gemv(const Case& c, std::mt19937& rng) {
  const int M = c.M, N = c.N, K = c.K, g = c.group < 0 ? K : c.group, G = K / g;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> u4(0, 15), u8(-127, 127);
  std::vector<T> x(static_cast<size_t>(M) * K);
  for (auto& v : x) v = fromf<T>(nd(rng));
  std::vector<uint8_t> qw(static_cast<size_t>(N) * K * c.bits / 8);
  std::vector<int> qv(static_cast<size_t>(N) * K);  // unpacked values (int4: 0..15, int8: signed)
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const size_t i = static_cast<size_t>(n) * K + k;
      if (c.bits == 4) {
        qv[i] = u4(rng);
        uint8_t& byte = qw[static_cast<size_t>(n) * (K / 2) + k / 2];
        byte = (k % 2 == 0) ? static_cast<uint8_t>((byte & 0xF0) | qv[i])
                            : static_cast<uint8_t>((byte & 0x0F) | (qv[i] << 4));
      } else {
        qv[i] = u8(rng);
        qw[i] = static_cast<uint8_t>(static_cast<int8_t>(qv[i]));
      }
    }
  std::vector<float> sf(static_cast<size_t>(N) * G);
  std::vector<T> st(sf.size());
  for (size_t i = 0; i < sf.size(); ++i) {
    const float s = (0.5f + std::fabs(nd(rng))) * (c.bits == 4 ? 0.1f : 0.01f);
    st[i] = fromf<T>(s);
    sf[i] = c.scales_f32 ? s : tof(st[i]);  // the value the kernel sees
  }
  std::vector<uint8_t> zeros(static_cast<size_t>(N) * G);
  for (auto& z : zeros) z = static_cast<uint8_t>(u4(rng));
  const std::vector<bool> poisoned = c.bad_zeros ? poison_zeros(zeros, N, G) : std::vector<bool>(N, false);
  std::vector<T> bias(N);
  for (auto& b : bias) b = fromf<T>(nd(rng));

  // Out poisoned with NaN and one guard column past N (ldo = N + 1 must stay untouched).
  const int ldo = N + 1;
  std::vector<T> out(static_cast<size_t>(M) * ldo, fromf<T>(NAN));
  std::vector<float> ws(static_cast<size_t>(c.splits) * M * N, NAN);

  WoqGemmParams p;
  p.x = x.data();
  p.qweight = qw.data();
  p.scales = c.scales_f32 ? static_cast<const void*>(sf.data()) : static_cast<const void*>(st.data());
  p.zeros = (c.bits == 4 && c.zeros) ? zeros.data() : nullptr;
  p.bias = c.bias ? bias.data() : nullptr;
  p.out = out.data();
  p.workspace = c.splits > 1 ? ws.data() : nullptr;
  p.M = M; p.N = N; p.K = K; p.group = g; p.ldx = K; p.ldo = ldo; p.bits = c.bits;
  p.dtype = std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16;
  p.scales_f32 = c.scales_f32;

  const int E = c.mma ? 0 : gemv_elems_per_load(c.bits, K, g);
  if (c.mma) {
    if (c.bits == 4) run_mma<T, 4>(p, c.splits);
    else run_mma<T, 8>(p, c.splits);
  } else if (c.bits == 4) {
    if (E == 32) run_gemv_cfg<T, 4, 32>(p, c.cfg, c.splits);
    else run_gemv_cfg<T, 4, 8>(p, c.cfg, c.splits);
  } else {
    if (E == 16) run_gemv_cfg<T, 8, 16>(p, c.cfg, c.splits);
    else run_gemv_cfg<T, 8, 8>(p, c.cfg, c.splits);
  }

  const double u = emu::half_ulp<T>();
  int bad = 0;
  double worst = 0;
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      if (poisoned[n]) {
        emu::expect_nan_channel(tof(out[static_cast<size_t>(m) * ldo + n]), m, n, bad);
        continue;
      }
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const size_t i = static_cast<size_t>(n) * K + k;
        const int gi = n * G + k / g;
        const int z = c.bits == 4 ? (c.zeros ? zeros[gi] : 8) : 0;
        const double w = static_cast<double>(qv[i] - z) * sf[gi];
        const double xv = tof(x[static_cast<size_t>(m) * K + k]);
        ref += xv * w;
        mag += std::fabs(xv * w);
      }
      if (c.bias) ref += tof(bias[n]);
      const double got = tof(out[static_cast<size_t>(m) * ldo + n]);
      const double err = std::fabs(got - ref);
      const double tol = u * std::fabs(ref) + 1e-5 * mag + 1e-6;
      if (!(err <= tol)) {
        if (bad < 3)
          std::printf("    m=%d n=%d got %.6f ref %.6f (tol %.2e)\n", m, n, got, ref, tol);
        ++bad;
      }
      if (mag > 0 && err / tol > worst) {
        worst = err / tol;
        if (std::getenv("EMU_VERBOSE"))
          std::printf("    worst so far m=%d n=%d got %.8g ref %.8g mag %.4g err %.3g (u|ref| %.3g)\n", m, n,
                      got, ref, mag, err, u * std::fabs(ref));
      }
    }
    if (!std::isnan(tof(out[static_cast<size_t>(m) * ldo + N]))) {
      std::printf("    guard column written at m=%d\n", m);
      ++bad;
    }
  }
  g_tally.record(bad == 0);
  std::printf("%s gemv %s int%d M=%d N=%d K=%d g=%d E=%d zeros=%d%s sf32=%d bias=%d splits=%d cfg=%s: %s (worst err/tol %.3f)\n",
              bad ? "FAIL" : "ok  ", tname<T>(), c.bits, M, N, K, c.group, E, c.zeros,
              c.bad_zeros ? " (3 > 15: NaN channels)" : "", c.scales_f32,
              c.bias, c.splits, c.mma ? mma_config_info(mma_config_for_m(M)).name : gemv_config_info(c.cfg).name,
              bad ? "mismatch" : "match", worst);
}

template <typename T, int BITS>
void check_dequant(int N, int K, int group, bool zeros_on, bool scales_f32, std::mt19937& rng,
                   bool bad_zeros = false) {
  const int g = group < 0 ? K : group, G = K / g;
  std::uniform_int_distribution<int> ub(0, 255);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint8_t> qw(static_cast<size_t>(N) * K * BITS / 8);
  for (auto& b : qw) b = static_cast<uint8_t>(ub(rng));
  std::vector<float> sf(static_cast<size_t>(N) * G);
  std::vector<T> st(sf.size());
  for (size_t i = 0; i < sf.size(); ++i) {
    sf[i] = nd(rng) * 0.05f;
    st[i] = fromf<T>(sf[i]);
    if (!scales_f32) sf[i] = tof(st[i]);
  }
  std::vector<uint8_t> zeros(static_cast<size_t>(N) * G);
  for (auto& z : zeros) z = static_cast<uint8_t>(ub(rng) & 15);
  if (bad_zeros) poison_zeros(zeros, N, G);
  alignas(16) static T w_buf[1 << 20];
  std::vector<T> w(static_cast<size_t>(N) * K);
  WoqGemmParams p;
  p.qweight = qw.data();
  p.scales = scales_f32 ? static_cast<const void*>(sf.data()) : static_cast<const void*>(st.data());
  p.zeros = (BITS == 4 && zeros_on) ? zeros.data() : nullptr;
  p.N = N; p.K = K; p.group = g; p.bits = BITS;
  p.dtype = std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16;
  p.scales_f32 = scales_f32;
  const bool vec = K % 8 == 0 && g % 8 == 0;
  for (size_t i = 0; i < w.size(); ++i) w_buf[i] = fromf<T>(NAN);
  if (vec) emu::launch(dim3(2), dim3(64), [&] { woq_dequant_vec8_kernel<T, BITS>(p, w_buf); });
  else emu::launch(dim3(2), dim3(64), [&] { woq_dequant_scalar_kernel<T, BITS>(p, w_buf); });
  int bad = 0;
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int gi = n * G + k / g;
      int q;
      if (BITS == 4) {
        const uint8_t byte = qw[static_cast<size_t>(n) * (K / 2) + k / 2];
        q = (k % 2 ? byte >> 4 : byte & 15) - (zeros_on ? zeros[gi] : 8);
      } else {
        q = static_cast<int8_t>(qw[static_cast<size_t>(n) * K + k]);
      }
      // A zero point above 15 (only where poisoned): the group's weights are NaN.
      const bool nan_group = BITS == 4 && zeros_on && zeros[gi] > 15;
      const float ref = nan_group ? NAN : tof(fromf<T>(static_cast<float>(q) * sf[gi]));
      const float got = tof(w_buf[static_cast<size_t>(n) * K + k]);
      if (!(got == ref || (nan_group && std::isnan(got)))) {
        if (bad < 3) std::printf("    n=%d k=%d got %g ref %g\n", n, k, got, ref);
        ++bad;
      }
    }
  g_tally.record(bad == 0);
  std::printf("%s dequant %s int%d N=%d K=%d g=%d vec=%d zeros=%d%s sf32=%d: %d mismatches\n",
              bad ? "FAIL" : "ok  ", tname<T>(), BITS, N, K, group, vec, zeros_on,
              bad_zeros ? " (3 > 15: NaN groups)" : "", scales_f32, bad);
}

// The CUTLASS path's scale layout (woq_cutlass_scales_kernel): transposed float32 scales and
// -zero * scale, exact; a group whose zero point is above 15 gets NaN in both.
template <typename S>
void check_cutlass_scales(int N, int G, bool zeros_on, bool bad_zeros, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> u4(0, 15);
  std::vector<S> scales(static_cast<size_t>(N) * G);
  for (auto& v : scales) v = fromf<S>(nd(rng) * 0.05f);
  std::vector<uint8_t> zeros(scales.size());
  for (auto& z : zeros) z = static_cast<uint8_t>(u4(rng));
  if (bad_zeros) poison_zeros(zeros, N, G);
  std::vector<float> st(scales.size(), 1.0f), zt(scales.size(), 1.0f);
  emu::launch(dim3(2), dim3(32), [&] {
    woq_cutlass_scales_kernel<S>(scales.data(), zeros_on ? zeros.data() : nullptr, N, G, st.data(), zt.data());
  });
  int bad = 0;
  for (int gi = 0; gi < G; ++gi)
    for (int n = 0; n < N; ++n) {
      const size_t src = static_cast<size_t>(n) * G + gi, dst = static_cast<size_t>(gi) * N + n;
      const int z = zeros_on ? zeros[src] : 8;
      const float s = tof(scales[src]);
      const bool ok = z > 15 ? std::isnan(st[dst]) && std::isnan(zt[dst])
                             : st[dst] == s && zt[dst] == -static_cast<float>(z) * s;
      if (!ok) {
        if (bad < 3) std::printf("    g=%d n=%d z=%d: got (%g, %g)\n", gi, n, z, st[dst], zt[dst]);
        ++bad;
      }
    }
  g_tally.record(bad == 0);
  std::printf("%s cutlass scales %s N=%d G=%d zeros=%d%s: %d mismatches\n", bad ? "FAIL" : "ok  ", tname<S>(), N, G,
              zeros_on, bad_zeros ? " (3 > 15: NaN groups)" : "", bad);
}

// Rows of every kind the row rule names (common/row_quant.h): random, all zero, NaN, +-inf and
// (f32/bf16, which have them) tiny rows of subnormal magnitude, where 127 / absmax overflows.
enum class RowKind { kRandom, kZero, kNaN, kInf, kTiny };

template <typename T>
void check_quant(int K, const float* sp, bool vec, std::mt19937& rng) {  // sp: static scale or null
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<RowKind> kinds = {RowKind::kRandom, RowKind::kZero, RowKind::kNaN, RowKind::kInf, RowKind::kRandom};
  if (!std::is_same_v<T, __half>) kinds.push_back(RowKind::kTiny);  // f16 has no values below 6e-8
  const int rows = static_cast<int>(kinds.size());
  std::vector<T> x(static_cast<size_t>(rows) * K);
  for (int r = 0; r < rows; ++r) {
    T* xr = x.data() + static_cast<size_t>(r) * K;
    for (int k = 0; k < K; ++k) {
      const float v = nd(rng);
      xr[k] = fromf<T>(kinds[r] == RowKind::kZero ? 0.0f : kinds[r] == RowKind::kTiny ? v * 1e-39f : v * 3.0f);
    }
    if (kinds[r] == RowKind::kNaN) xr[K / 2] = xr[K - 1] = fromf<T>(NAN);  // the last: a scalar tail
    if (kinds[r] == RowKind::kInf) xr[K / 3] = fromf<T>(-INFINITY), xr[K - 1] = fromf<T>(INFINITY);
  }
  std::vector<int8_t> q(x.size(), 99);
  std::vector<float> scales(rows, -1.0f);
  if (vec)
    emu::launch(dim3(rows), dim3(kQuantThreads),
                [&] { quantize_act_kernel<T, true>(x.data(), K, K, sp, q.data(), scales.data()); });
  else
    emu::launch(dim3(rows), dim3(kQuantThreads),
                [&] { quantize_act_kernel<T, false>(x.data(), K, K, sp, q.data(), scales.data()); });
  int bad = 0;
  std::vector<double> y(K);
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < K; ++k) y[k] = tof(x[static_cast<size_t>(r) * K + k]);
    const std::string what = "row " + std::to_string(r);
    bad += emu::check_row_rule(what.c_str(), y.data(), K, q.data() + static_cast<size_t>(r) * K, scales[r], sp, 1e-4);
  }
  g_tally.record(bad == 0);
  const std::string mode = sp ? "static " + std::to_string(*sp) : "dynamic";
  std::printf("%s quant %s rows=%d (random, zero, NaN, inf%s) K=%d %s vec=%d: %d mismatches\n",
              bad ? "FAIL" : "ok  ", tname<T>(), rows, rows > 5 ? ", tiny" : "", K, mode.c_str(), vec, bad);
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  std::mt19937 rng(1234);
  using C = GemvConfig;
  // {bits, M, N, K, group, zeros, scales_f32, bias, splits, cfg}
  std::vector<Case> cases = {
      {4, 1, 37, 2560, 128, true, true, true, 1, C::kM1},      // 2 chunks, partial tail chunk
      {4, 1, 37, 2560, 128, false, false, false, 3, C::kM1},   // split-K (3 splits > 2 chunks)
      {4, 2, 19, 1024, 32, true, true, true, 1, C::kM2},
      {4, 3, 21, 1536, 64, true, false, true, 2, C::kM4},
      {4, 5, 17, 1024, -1, false, true, false, 1, C::kM8},
      {4, 16, 9, 1024, 128, true, true, true, 1, C::kM16},
      {4, 9, 9, 2048, 64, true, true, true, 2, C::kM16},
      {4, 1, 13, 4104, -1, true, true, true, 1, C::kM1},       // K % 32 != 0: 4-byte loads
      {4, 4, 13, 1032, -1, false, false, true, 2, C::kM4},
      {8, 1, 37, 2560, -1, false, true, true, 1, C::kM1},
      {8, 2, 19, 1032, -1, false, false, true, 1, C::kM2},     // K % 16 != 0: 8-byte loads
      {8, 4, 13, 1024, -1, false, true, false, 3, C::kM4},
      {8, 7, 11, 1536, -1, false, true, true, 1, C::kM8},
      {8, 16, 9, 520, -1, false, false, true, 1, C::kM16},
      // tensor-core kernel: M 1..64, int4 g128 / per-channel K % 128, int8 K % 64
      {4, 1, 70, 1280, 128, true, true, true, 1, C::kM1, true},   // 3 chunks (512), tail chunk
      {4, 5, 64, 1024, 128, false, false, false, 3, C::kM1, true},
      {4, 16, 33, 768, -1, true, true, true, 1, C::kM1, true},
      {4, 27, 17, 512, 256, true, false, true, 2, C::kM1, true},
      {4, 64, 16, 512, 128, true, true, true, 1, C::kM1, true},
      {8, 3, 70, 1088, -1, false, true, true, 1, C::kM1, true},    // K % 256 != 0: partial chunk
      {8, 13, 40, 512, -1, false, false, true, 2, C::kM1, true},
      {8, 33, 20, 320, -1, false, true, false, 1, C::kM1, true},
      {8, 64, 17, 256, -1, false, true, true, 3, C::kM1, true},
      // zero points above 15: NaN output channels on every int4 path (gemm_common.cuh)
      {4, 3, 37, 2560, 128, true, true, true, 1, C::kM4, false, true},
      {4, 2, 21, 1536, 64, true, false, false, 3, C::kM2, false, true},  // split-K
      {4, 1, 13, 4104, -1, true, true, true, 1, C::kM1, false, true},     // per-channel, 4-byte loads
      {4, 9, 40, 1024, 128, true, true, true, 1, C::kM1, true, true},     // tensor cores
      {4, 20, 33, 768, -1, true, false, false, 2, C::kM1, true, true},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    if (quick && i % 3 != 0) continue;
    if (i % 2 == 0) check_gemv<__half>(cases[i], rng);
    else check_gemv<__nv_bfloat16>(cases[i], rng);
  }
  check_dequant<__half, 4>(5, 256, 128, true, true, rng);
  check_dequant<__nv_bfloat16, 4>(5, 264, -1, false, false, rng);
  check_dequant<__nv_bfloat16, 4>(3, 14, -1, true, true, rng);   // K % 8 != 0: scalar kernel
  check_dequant<__half, 8>(5, 520, -1, false, true, rng);
  check_dequant<__nv_bfloat16, 8>(3, 111, -1, false, false, rng);
  check_dequant<__half, 4>(6, 512, 64, true, false, rng, true);           // zero points > 15: vec8
  check_dequant<__nv_bfloat16, 4>(5, 30, 10, true, true, rng, true);      // scalar kernel
  for (const bool bad_zeros : {false, true}) {
    check_cutlass_scales<float>(24, 8, true, bad_zeros, rng);
    check_cutlass_scales<__half>(40, 3, true, bad_zeros, rng);
    check_cutlass_scales<__nv_bfloat16>(16, 5, true, bad_zeros, rng);
  }
  check_cutlass_scales<__nv_bfloat16>(16, 4, false, false, rng);  // symmetric: zero 8
  const float sscale = 0.037f;
  for (const float* sp : {static_cast<const float*>(nullptr), &sscale}) {
    check_quant<__nv_bfloat16>(1024, sp, true, rng);
    check_quant<__half>(4104, sp, true, rng);
    check_quant<float>(111, sp, false, rng);
    check_quant<__nv_bfloat16>(111, sp, false, rng);
    check_quant<float>(512, sp, true, rng);
  }
  for (const float bad : {0.0f, -0.5f, INFINITY, NAN}) {  // outside (0, FLT_MAX]: every scale NaN, q 0
    check_quant<__half>(1024, &bad, true, rng);
    check_quant<float>(111, &bad, false, rng);
  }
  return g_tally.finish();
}
