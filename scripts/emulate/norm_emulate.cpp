// Host emulation check of the norm kernels' int8 output (norm/norm_kernel.cuh: the row kernel at
// the configs the heuristics pick, one warp per row and four, and the fallback kernel) against
// the row rule's float64 reference (row_quant_ref.h): rows with a NaN or an inf in x (NaN
// statistics), a NaN weight (a NaN beside finite values in every row), all-zero rows, and tiny
// rows whose y is subnormal (y = the weight for RMSNorm of ones with eps 0, y = the bias for
// LayerNorm of a constant row: exact in float32, so q and the subnormal scale must be exact),
// dynamic and static (also static scales outside (0, FLT_MAX]), LayerNorm and RMSNorm. Ordinary rows ride along, within the float32
// evaluation error of y. No GPU needed: see cuda_host_shim.h. Run: bash scripts/emulate/run.sh
// cuda_runtime.h (the norm headers include it) first: the shim's threadIdx & co. are macros.
#include <cuda_runtime.h>

#include "cuda_host_shim.h"
#include "emu_util.h"
#include "row_quant_ref.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "norm/norm_heuristics.h"
#include "norm/norm_kernel.cuh"

using namespace squash::norm;
using emu::fromf;
using emu::tname;
using emu::tof;
static emu::Tally g_tally;

// Mirrors launch_vec() of norm/norm_launch_template.cuh at the widest vector (16 bytes).
template <typename T, typename W, int VEC, int NV>
void run_rows(const NormParams& p, const NormConfig& c) {
  const RowGeom g{static_cast<int>(p.hidden / VEC), c.threads_per_row, c.threads_per_row / 32, c.rows_per_block};
  emu::launch(dim3(static_cast<unsigned>(ceil_div(p.rows, g.rpb))), dim3(g.tpr * g.rpb),
              [&] { norm_rows_kernel<T, W, VEC, NV>(p, g); });
}

template <typename T, typename W>
void run(const NormParams& p, const NormConfig& c) {
  constexpr int kVec = 16 / sizeof(T);
  if (c.fallback) {
    const RowGeom g{static_cast<int>(p.hidden / kVec), kFallbackThreads, kFallbackThreads / 32, 1};
    emu::launch(dim3(static_cast<unsigned>(p.rows)), dim3(kFallbackThreads),
                [&] { norm_fallback_kernel<T, W, kVec>(p, g); });
    return;
  }
  switch (c.nv) {
    case 1: return run_rows<T, W, kVec, 1>(p, c);
    case 2: return run_rows<T, W, kVec, 2>(p, c);
    case 4: return run_rows<T, W, kVec, 4>(p, c);
    default: return run_rows<T, W, kVec, 8>(p, c);
  }
}

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, __half> ? DType::kFloat16
         : std::is_same_v<T, __nv_bfloat16> ? DType::kBFloat16 : DType::kFloat32;
}

enum class Case { kRows, kNaNWeight, kTiny };

// One launch: rows x hidden inputs of `which` case, the kernel's q and scales checked row by row.
template <typename T, typename W>
void check(Case which, Kind kind, bool use_static, bool fallback, int hidden, std::mt19937& rng,
           float sscale = 0.02f) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const int rows = 5;
  const bool ln = kind == Kind::kLayerNorm;
  std::vector<T> x(static_cast<size_t>(rows) * hidden);
  std::vector<W> w(hidden), b(hidden);
  bool with_w = true, with_b = false;
  double eps = 1e-5;
  for (auto& v : x) v = fromf<T>(static_cast<float>(nd(rng)));
  for (auto& v : w) v = fromf<W>(static_cast<float>(1 + 0.5 * nd(rng)));
  const char* name = "rows";
  if (which == Case::kRows) {  // random, NaN, zero, inf, random
    x[1 * hidden + hidden / 2] = fromf<T>(NAN);
    for (int k = 0; k < hidden; ++k) x[2 * hidden + k] = fromf<T>(0.0f);
    x[3 * hidden + hidden - 1] = fromf<T>(INFINITY);
  } else if (which == Case::kNaNWeight) {
    name = "nan-weight";
    w[3] = fromf<W>(NAN);
  } else {  // y exact and tiny: a few subnormal, some zero
    name = "tiny";
    std::vector<W>& t = ln ? b : w;
    for (int k = 0; k < hidden; ++k)
      t[k] = fromf<W>(k % 7 == 0 ? 0.0f : static_cast<float>(nd(rng) * (k % 3 == 0 ? 1e-40 : 1e-38)));
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < hidden; ++k) x[static_cast<size_t>(r) * hidden + k] = fromf<T>(ln ? 0.5f * (r + 1) : 1.0f);
    with_w = !ln, with_b = ln;
    eps = ln ? 1e-5 : 0.0;
  }
  std::vector<int8_t> q(x.size(), 99);
  std::vector<float> scales(rows, -1.0f);
  NormParams p;
  p.kind = kind, p.dtype = dtype_of<T>(), p.wdtype = dtype_of<W>();
  p.rows = rows, p.hidden = hidden, p.eps = static_cast<float>(eps);
  p.x = x.data(), p.x_stride = hidden;
  p.weight = with_w ? w.data() : nullptr, p.bias = with_b ? b.data() : nullptr;
  p.q = q.data(), p.q_stride = hidden, p.scales = scales.data();
  p.static_scale = use_static ? &sscale : nullptr;
  NormConfig c = choose_norm_config(hidden, 16 / sizeof(T));
  if (fallback) make_fallback_config(c);
  run<T, W>(p, c);

  // float64 y from the same inputs; ordinary rows carry the kernel's float32 error (window).
  const bool exact = which == Case::kTiny;
  int bad = 0;
  std::vector<double> y(hidden);
  for (int r = 0; r < rows; ++r) {
    const T* xr = x.data() + static_cast<size_t>(r) * hidden;
    double mean = 0, var = 0;
    for (int k = 0; k < hidden; ++k) mean += ln ? tof(xr[k]) : 0.0;
    mean /= hidden;
    for (int k = 0; k < hidden; ++k) var += (tof(xr[k]) - mean) * (tof(xr[k]) - mean);
    const double rstd = 1.0 / std::sqrt(var / hidden + eps);
    for (int k = 0; k < hidden; ++k)
      y[k] = (tof(xr[k]) - mean) * rstd * (with_w ? tof(w[k]) : 1.0) + (with_b ? tof(b[k]) : 0.0);
    const std::string what = std::string(name) + " row " + std::to_string(r);
    bad += emu::check_row_rule(what.c_str(), y.data(), hidden, q.data() + static_cast<size_t>(r) * hidden,
                               scales[r], p.static_scale, exact ? 1e-4 : 2e-3, exact ? 0.0 : 1e-5);
  }
  g_tally.record(bad == 0);
  std::printf("%s %-10s %s %s x=%s w=%s hidden=%d %s nv=%d: %d mismatches\n", bad ? "FAIL" : "ok  ", name,
              ln ? "layer" : "rms  ", use_static ? ("static " + std::to_string(sscale)).c_str() : "dynamic",
              tname<T>(), tname<W>(), hidden, c.fallback ? "fallback" : "row kernel", c.nv, bad);
}

int main() {
  std::mt19937 rng(4321);
  for (Case which : {Case::kRows, Case::kNaNWeight, Case::kTiny})
    for (Kind kind : {Kind::kLayerNorm, Kind::kRMSNorm})
      for (bool use_static : {false, true}) {
        check<__nv_bfloat16, __nv_bfloat16>(which, kind, use_static, false, 64, rng);      // 1 warp per row
        check<float, float>(which, kind, use_static, false, 4096, rng);                  // 4 warps per row
        check<__half, float>(which, kind, use_static, false, 4096, rng);
        check<__nv_bfloat16, __nv_bfloat16>(which, kind, use_static, true, 1000, rng);  // fallback
      }
  for (const float bad : {0.0f, -0.5f, INFINITY, NAN}) {  // outside (0, FLT_MAX]: every scale NaN, q 0
    check<float, float>(Case::kRows, Kind::kRMSNorm, true, false, 64, rng, bad);
    check<__nv_bfloat16, __nv_bfloat16>(Case::kRows, Kind::kLayerNorm, true, true, 1000, rng, bad);
  }
  return g_tally.finish();
}
