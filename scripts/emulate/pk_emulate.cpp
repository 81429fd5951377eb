// Host emulation check of the prepacked tensor-core GEMM (pk_gemm_kernel.cuh): every config,
// int4 (group-wise 32/64/128 and per-channel, with and without zero points) and int8, fp16 and
// bf16, bias, split-K with the in-kernel last-split reduction, row chunks past a config's max M,
// tails in N (N % 16 == 8, partial column blocks) and K (K % 128 != 0, K % 32 != 0), strided x
// and out rows; and the packed -> dense dequantize kernel. Zero points above 15 (put into the
// packed zeros directly, as a caller of w4a16_gemm_prepacked could) must give NaN output channels
// and NaN dequantized groups (gemm_common.cuh). Weights are prepacked from the formulas
// of prepacked_layout.h (bench/cpp/pk_reference.h) and the outputs are compared with a float64
// reference on the canonical values. Run: bash scripts/emulate/run.sh
#include "cuda_host_shim.h"
#include "emu_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gemm/pk_gemm_kernel.cuh"
#include "pk_reference.h"

using namespace squash::gemm;
using emu::fromf;
using emu::tname;
using emu::tof;

static emu::Tally g_tally;

struct PkCase {
  int bits, M, N, K, group;  // group -1: per-channel (int8: always)
  bool zeros, bias, f16;
  PkConfig cfg;
  int splits;
  bool bad_zeros = false;  // three zero points above 15: their output channels must be NaN
};

using pkref::Weights;
using pkref::make_weights;
using pkref::weight_value;

// Puts emu::bad_zeros into both the canonical and the packed zeros; returns which channels hold one.
std::vector<bool> poison_zeros(Weights& w) {
  std::vector<bool> poisoned(w.N, false);
  for (const emu::BadZero& b : emu::bad_zeros(w.N, w.G)) {
    w.zeros[static_cast<size_t>(b.n) * w.G + b.g] = b.value;
    w.zeros_packed[(static_cast<size_t>(b.n / pack::kTileN) * w.G + b.g) * pack::kTileN + b.n % pack::kTileN] = b.value;
    poisoned[b.n] = true;
  }
  return poisoned;
}

template <typename T, int BITS, bool GROUPED, PkConfig CFG>
void run_config(const PkGemmParams& p, int splits) {
  using Tr = PkTraits<BITS, CFG>;
  const int rows = p.M < Tr::kMaxM ? p.M : Tr::kMaxM;
  const size_t smem = Tr::smem_bytes(rows, GROUPED ? Tr::kTK / p.group : 0, BITS == 4 && p.zeros);
  if (smem > 163 * 1024) {  // the opt-in limit of an A100 (H100: 227 KB)
    std::printf("    shared memory %zu bytes exceeds the limit\n", smem);
    std::exit(1);
  }
  const dim3 grid((p.M + Tr::kMaxM - 1) / Tr::kMaxM, (p.N / 8 + Tr::kTilesN - 1) / Tr::kTilesN, splits);
  emu::launch(grid, dim3(Tr::kThreads), [&] { pk_gemm_kernel<T, BITS, GROUPED, CFG>(p); }, smem);
}

template <typename T, int BITS, bool GROUPED>
void run_pk(const PkGemmParams& p, PkConfig cfg, int splits) {
  switch (cfg) {
    case PkConfig::kM16N16: return run_config<T, BITS, GROUPED, PkConfig::kM16N16>(p, splits);
    case PkConfig::kM16N32: return run_config<T, BITS, GROUPED, PkConfig::kM16N32>(p, splits);
    case PkConfig::kM16N64: return run_config<T, BITS, GROUPED, PkConfig::kM16N64>(p, splits);
    case PkConfig::kM32N64: return run_config<T, BITS, GROUPED, PkConfig::kM32N64>(p, splits);
    default: return run_config<T, BITS, GROUPED, PkConfig::kM64N128>(p, splits);
  }
}

template <typename T>
void check_pk(const PkCase& c, std::mt19937& rng) {
  const int M = c.M, N = c.N, K = c.K;
  Weights w = make_weights(c.bits, N, K, c.group, rng);
  const std::vector<bool> poisoned = c.bad_zeros ? poison_zeros(w) : std::vector<bool>(N, false);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int ldx = K + 8, ldo = N + 3;  // strided rows; out's 3 guard columns stay NaN
  std::vector<T> x(static_cast<size_t>(M) * ldx, fromf<T>(NAN));  // the gaps are poison too
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) x[static_cast<size_t>(m) * ldx + k] = fromf<T>(nd(rng));
  std::vector<T> bias(N);
  for (auto& b : bias) b = fromf<T>(nd(rng));
  std::vector<T> out(static_cast<size_t>(M) * ldo, fromf<T>(NAN));
  const int splits = effective_splits(c.splits, pk_k_stages(c.cfg, K, c.bits));
  std::vector<float> ws(static_cast<size_t>(splits) * M * N, NAN);
  std::vector<int> counters(pk_blocks(c.cfg, M, N) + 1, 0);  // + 1: a guard past the end

  PkGemmParams p;
  p.x = x.data();
  p.packed = w.packed.data();
  p.scales = w.scales_packed.data();
  p.zeros = c.bits == 4 && c.zeros ? w.zeros_packed.data() : nullptr;
  p.bias = c.bias ? bias.data() : nullptr;
  p.out = out.data();
  p.workspace = splits > 1 ? ws.data() : nullptr;
  p.counters = splits > 1 ? counters.data() : nullptr;
  p.M = M; p.N = N; p.K = K; p.group = w.g; p.ldx = ldx; p.ldo = ldo; p.bits = c.bits;
  p.dtype = std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16;
  const bool grouped = c.bits == 4 && w.g != K;
  if (!pk_gemm_supported(p)) {
    std::printf("FAIL pk %s: pk_gemm_supported() rejects the case\n", tname<T>());
    g_tally.record(false);
    return;
  }
  if (c.bits == 8) run_pk<T, 8, false>(p, c.cfg, splits);
  else if (grouped) run_pk<T, 4, true>(p, c.cfg, splits);
  else run_pk<T, 4, false>(p, c.cfg, splits);

  // Bound: the final rounding (half an ulp) plus float32 accumulation, ~K * 2^-24 of sum |x w|
  // in the worst case; 2^-20 of it is far above what the kernel's order of sums produces.
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
        const double v = tof(x[static_cast<size_t>(m) * ldx + k]) * weight_value(w, n, k, c.zeros);
        ref += v;
        mag += std::fabs(v);
      }
      if (c.bias) ref += tof(bias[n]);
      const double got = tof(out[static_cast<size_t>(m) * ldo + n]);
      const double tol = u * std::fabs(ref) + std::ldexp(mag, -20) + 1e-6;
      const double err = std::fabs(got - ref);
      if (!(err <= tol)) {
        if (bad < 3) std::printf("    m=%d n=%d got %.6f ref %.6f (tol %.2e)\n", m, n, got, ref, tol);
        ++bad;
      }
      worst = std::max(worst, err / tol);
    }
    for (int n = N; n < ldo; ++n)
      if (!std::isnan(tof(out[static_cast<size_t>(m) * ldo + n]))) {
        if (bad < 3) std::printf("    guard column %d written at m=%d\n", n, m);
        ++bad;
      }
  }
  for (size_t i = 0; i < counters.size(); ++i)
    if (counters[i] != 0) {
      std::printf("    split-K counter %zu left at %d (must be reset to 0)\n", i, counters[i]);
      ++bad;
    }
  g_tally.record(bad == 0);
  std::printf("%s pk %s int%d M=%d N=%d K=%d g=%d zeros=%d%s bias=%d %s splits=%d: %s (worst err/tol %.3f)\n",
              bad ? "FAIL" : "ok  ", tname<T>(), c.bits, M, N, K, c.group, c.zeros,
              c.bad_zeros ? " (3 > 15: NaN channels)" : "", c.bias,
              pk_config_info(c.cfg).name, splits, bad ? "mismatch" : "match", worst);
}

template <typename T, int BITS>
void check_pk_dequant(int N, int K, int group, bool zeros, std::mt19937& rng, bool bad_zeros = false) {
  Weights w = make_weights(BITS, N, K, group, rng);
  if (bad_zeros) poison_zeros(w);
  std::vector<T> dense(static_cast<size_t>(N) * K, fromf<T>(NAN));
  PkGemmParams p;
  p.packed = w.packed.data();
  p.scales = w.scales_packed.data();
  p.zeros = BITS == 4 && zeros ? w.zeros_packed.data() : nullptr;
  p.N = N; p.K = K; p.group = w.g; p.bits = BITS;
  p.dtype = std::is_same_v<T, __half> ? DType::kF16 : DType::kBF16;
  emu::launch(dim3(3), dim3(64), [&] { pk_dequant_kernel<T, BITS>(p, dense.data()); });
  int bad = 0;
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      // the canonical dequantization: (q - z) * s in float32, rounded once to T; NaN for a group
      // whose zero point is above 15
      const bool nan_group = BITS == 4 && zeros && w.zeros[static_cast<size_t>(n) * w.G + k / w.g] > 15;
      const float ref = nan_group ? NAN : tof(fromf<T>(static_cast<float>(weight_value(w, n, k, zeros))));
      const float got = tof(dense[static_cast<size_t>(n) * K + k]);
      if (!(got == ref || (nan_group && std::isnan(got)))) {
        if (bad < 3) std::printf("    n=%d k=%d got %g ref %g\n", n, k, got, ref);
        ++bad;
      }
    }
  g_tally.record(bad == 0);
  std::printf("%s pk_dequant %s int%d N=%d K=%d g=%d zeros=%d%s: %d mismatches\n", bad ? "FAIL" : "ok  ",
              tname<T>(), BITS, N, K, group, zeros, bad_zeros ? " (3 > 15: NaN groups)" : "", bad);
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  std::mt19937 rng(4321);
  using P = PkConfig;
  // {bits, M, N, K, group, zeros, bias, f16, config, splits}
  std::vector<PkCase> cases = {
      // int4, group-wise: N % 16 == 8, K tiles not a multiple of the stage, partial last stage
      {4, 1, 24, 1280, 128, true, true, true, P::kM16N16, 1},
      {4, 3, 40, 1280, 128, false, false, false, P::kM16N16, 2},
      {4, 5, 16, 1056, 32, true, false, true, P::kM16N32, 3},      // K % 128 == 32: half a tile
      {4, 16, 72, 640, 64, true, true, false, P::kM16N64, 1},
      {4, 17, 64, 512, 128, true, false, true, P::kM32N64, 2},
      {4, 40, 136, 384, 32, false, true, false, P::kM64N128, 1},   // 2 column blocks, N tail
      {4, 100, 32, 256, 64, true, true, true, P::kM64N128, 2},     // 2 row chunks (64 + 36)
      // int4, per-channel
      {4, 2, 16, 4104, -1, true, true, false, P::kM16N16, 3},      // K % 128 == 8
      {4, 9, 48, 264, -1, false, false, true, P::kM16N32, 1},
      {4, 33, 24, 136, -1, true, true, false, P::kM32N64, 1},      // 2 row chunks (32 + 1)
      // int8 (per-channel)
      {8, 1, 24, 1096, -1, false, true, true, P::kM16N16, 2},      // K % 64 == 8
      {8, 7, 40, 520, -1, false, false, false, P::kM16N32, 1},
      {8, 16, 64, 256, -1, false, true, true, P::kM16N64, 1},
      {8, 64, 16, 192, -1, false, true, false, P::kM64N128, 3},
      {8, 30, 8, 64, -1, false, false, true, P::kM32N64, 1},       // N = 8, one k tile
      // zero points above 15: NaN output channels, group-wise and per-channel, fp16 and bf16
      {4, 3, 40, 1280, 128, true, true, true, P::kM16N16, 1, true},
      {4, 17, 64, 1056, 32, true, false, false, P::kM32N64, 3, true},  // split-K
      {4, 9, 48, 576, 64, true, true, false, P::kM16N32, 1, true},
      {4, 5, 24, 264, -1, true, false, true, P::kM16N16, 2, true},
      {4, 40, 136, 384, -1, true, true, false, P::kM64N128, 1, true},
  };
  // Sweep: every config x every format, cycling token counts (across the 16/32/64 boundaries and
  // row chunks), split counts, dtypes and N tails.
  struct Format {
    int bits, group;
    bool zeros;
    int K;  // % 128 != 0 where the format allows
  };
  const Format formats[] = {{4, 32, true, 1056}, {4, 64, false, 576}, {4, 128, true, 640},
                            {4, -1, true, 264}, {8, -1, false, 328}};
  const int sweep_m[] = {1, 9, 17, 33, 64, 70};
  int i = 0;
  for (int c = 0; c < static_cast<int>(P::kCount); ++c)
    for (const Format& f : formats) {
      cases.push_back({f.bits, sweep_m[i % 6], 24 + 16 * (i % 3), f.K, f.group, f.zeros, i % 2 == 0, i % 2 == 1,
                       static_cast<P>(c), 1 + i % 3});
      ++i;
    }
  for (size_t j = 0; j < cases.size(); ++j) {
    if (quick && j % 3 != 0) continue;
    if (cases[j].f16) check_pk<__half>(cases[j], rng);
    else check_pk<__nv_bfloat16>(cases[j], rng);
  }
  check_pk_dequant<__nv_bfloat16, 4>(24, 1056, 32, true, rng);
  check_pk_dequant<__half, 4>(16, 4104, -1, false, rng);
  check_pk_dequant<__nv_bfloat16, 8>(24, 1096, -1, false, rng);
  check_pk_dequant<__half, 4>(24, 1056, 32, true, rng, true);  // zero points above 15
  check_pk_dequant<__nv_bfloat16, 4>(16, 264, -1, true, rng, true);
  return g_tally.finish();
}
