// CPU implementation of the 8 norm ops: one templated row routine serves all of them.
//
// Semantics (the contract in BRIEF/docs; this file is the exact reference the CUDA kernels are
// tested against):
//   h   = x                                or, with a residual, h = to_dtype(fp32(x) + fp32(r)),
//                                          returned as residual_out and normalized as rounded.
//   layer_norm: y = (h - mean(h)) / sqrt(var_biased(h) + eps) [* weight] [+ bias]
//   rms_norm:   y = h / sqrt(mean(h^2) + eps) [* weight]
//   out = to_dtype(y_fp32)
//   quant: q = clamp(rne(y_fp32 * inv), -127, 127) from the fp32 y (never rounded to the dtype
//          first); dynamic: s = absmax(y_fp32)/127, inv = absmax > 0 ? 127/absmax : 0 (both fp32,
//          exactly as quantize_activation_int8); static: inv = 1/scale (fp32), s = scale.
//          A row with a NaN gets s = NaN, a tiny row is rescaled first (common/row_quant.h).
// This file is the scalar path; with AVX2 the rows run in csrc/kernels/cpu/norm_rows_avx2.cpp
// (same float64 statistics, same parameters).
// The statistics and y are evaluated in float64 (two-pass mean/variance) and y is rounded to
// fp32 once. That is at least as accurate as the fp32 statistics of the contract, so this
// reference is within half an fp32 ulp of the exact y; fp16 inputs near 65504 cannot overflow
// (their squares are ~4e9), nor can fp32 inputs up to ~1e150.
#include <ATen/ATen.h>
#include "ops/message.h"
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/isa.h"
#include "cpu/norm_rows.h"
#include "ops/cpu_common.h"
#include "ops/norm.h"

namespace squash {
namespace {

using cpu_kernels::NormKind;
using quant::QuantMode;
using RowArgs = cpu_kernels::NormRowsParams;

template <typename scalar_t, NormKind kKind, QuantMode kQuant>
void norm_rows(const RowArgs& a) {
  const int64_t H = a.hidden;
  // Tasks of at least ~32k elements: below that the thread hand-off costs more than the row.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / H);
  at::parallel_for(0, a.rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> h(H);
    std::vector<float> y(H);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t off = row * H;
      const scalar_t* x = static_cast<const scalar_t*>(a.x) + off;
      if (a.residual != nullptr) {
        const scalar_t* r = static_cast<const scalar_t*>(a.residual) + off;
        scalar_t* r_out = static_cast<scalar_t*>(a.residual_out);
        for (int64_t i = 0; i < H; ++i) {
          // fp32 add, one rounding to the dtype; the rounded value is what gets normalized.
          const scalar_t hr =
              static_cast<scalar_t>(static_cast<float>(x[i]) + static_cast<float>(r[i]));
          if (r_out) r_out[off + i] = hr;
          h[i] = static_cast<double>(static_cast<float>(hr));
        }
      } else {
        for (int64_t i = 0; i < H; ++i) h[i] = static_cast<double>(static_cast<float>(x[i]));
      }

      double mean = 0.0, rstd;
      if constexpr (kKind == NormKind::kLayer) {
        double sum = 0.0;
        for (int64_t i = 0; i < H; ++i) sum += h[i];
        mean = sum / static_cast<double>(H);
        double sq = 0.0;  // two-pass: no cancellation between E[h^2] and mean^2
        for (int64_t i = 0; i < H; ++i) sq += (h[i] - mean) * (h[i] - mean);
        rstd = 1.0 / std::sqrt(sq / static_cast<double>(H) + a.eps);
      } else {
        double sq = 0.0;
        for (int64_t i = 0; i < H; ++i) sq += h[i] * h[i];
        rstd = 1.0 / std::sqrt(sq / static_cast<double>(H) + a.eps);
      }

      float absmax = 0.0f;
      bool has_nan = false;
      for (int64_t i = 0; i < H; ++i) {
        double v = (h[i] - mean) * rstd;
        if (a.weight != nullptr) v *= a.weight[i];
        if (a.bias != nullptr) v += a.bias[i];
        const float vf = static_cast<float>(v);
        y[i] = vf;
        absmax = std::max(absmax, std::fabs(vf));
        has_nan |= std::isnan(vf);
      }

      if (a.out != nullptr) {
        scalar_t* out = static_cast<scalar_t*>(a.out) + off;
        for (int64_t i = 0; i < H; ++i) out[i] = static_cast<scalar_t>(y[i]);
      }
      if constexpr (kQuant != QuantMode::kNone) {
        const quant::RowQuant rq = quant::row_quant(kQuant, absmax, a.static_scale);
        int8_t* q = a.q + off;
        for (int64_t i = 0; i < H; ++i) q[i] = rq.quantize(y[i]);
        a.scales[row] = quant::row_scale(rq, has_nan);
      }
    }
  });
}

template <NormKind kKind, QuantMode kQuant>
void dispatch_rows(at::ScalarType dtype, const RowArgs& a) {
  // Only the three dtypes check_norm_args admits (AT_DISPATCH would also instantiate double).
  switch (dtype) {
    case at::kHalf: norm_rows<c10::Half, kKind, kQuant>(a); break;
    case at::kBFloat16: norm_rows<c10::BFloat16, kKind, kQuant>(a); break;
    case at::kFloat: norm_rows<float, kKind, kQuant>(a); break;
    default: SQUASH_CHECK(false, "squash norm (CPU): unreachable dtype ", dtype);
  }
}

struct NormOutputs {
  at::Tensor out, q, scales, residual_out;
};

// quant: the int8 outputs, and with `both` the float out too (no residual_out then: the
// *_and_quant ops do not return it).
NormOutputs run_norm(const char* op, NormKind kind, bool quant, const at::Tensor& x,
                     const std::optional<at::Tensor>& residual,
                     const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias, double eps,
                     const std::optional<at::Tensor>& scale, bool both = false) {
  check_norm_args(op, x, residual, weight, bias, eps, scale);
  SQUASH_CHECK_VALUE(x.device().is_cpu(), "squash::", op, ": the CPU kernel got x on ",
                    x.device());

  NormOutputs o;
  RowArgs a;
  a.hidden = x.size(-1);
  a.rows = x.numel() / a.hidden;
  a.x = x.data_ptr();
  a.eps = eps;
  if (residual.has_value()) {
    a.residual = residual->data_ptr();
    if (!both) {
      o.residual_out = at::empty_like(x, at::MemoryFormat::Contiguous);
      a.residual_out = o.residual_out.data_ptr();
    }
  }
  // weight/bias as float64 once per call (H values): one row routine for every dtype mix.
  at::Tensor w64, b64;
  if (weight.has_value()) {
    w64 = weight->to(at::kDouble).contiguous();
    a.weight = w64.const_data_ptr<double>();
  }
  if (bias.has_value()) {
    b64 = bias->to(at::kDouble).contiguous();
    a.bias = b64.const_data_ptr<double>();
  }
  if (quant) {
    o.q = at::empty(x.sizes(), x.options().dtype(at::kChar));
    o.scales = at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(at::kFloat));
    a.q = o.q.mutable_data_ptr<int8_t>();
    a.scales = o.scales.mutable_data_ptr<float>();
    if (scale.has_value()) a.static_scale = scale->item<float>();
  }
  if (!quant || both) {
    o.out = at::empty_like(x, at::MemoryFormat::Contiguous);
    a.out = o.out.data_ptr();
  }
  if (a.rows == 0) return o;

  const at::ScalarType dt = x.scalar_type();
  const QuantMode qm = !quant ? QuantMode::kNone
                       : scale.has_value() ? QuantMode::kStatic
                                           : QuantMode::kDynamic;
  if (cpu_kernels::active_isa() >= cpu_kernels::Isa::kAvx2) {
    a.dtype = cpu::kernel_dtype(dt);
    a.kind = kind;
    a.mode = qm;
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / a.hidden);
    at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) { cpu_kernels::norm_rows_avx2(a, r0, r1); });
    return o;
  }
  // Runtime flags become template parameters here, and only here.
  if (kind == NormKind::kLayer) {
    switch (qm) {
      case QuantMode::kNone: dispatch_rows<NormKind::kLayer, QuantMode::kNone>(dt, a); break;
      case QuantMode::kDynamic: dispatch_rows<NormKind::kLayer, QuantMode::kDynamic>(dt, a); break;
      case QuantMode::kStatic: dispatch_rows<NormKind::kLayer, QuantMode::kStatic>(dt, a); break;
    }
  } else {
    switch (qm) {
      case QuantMode::kNone: dispatch_rows<NormKind::kRms, QuantMode::kNone>(dt, a); break;
      case QuantMode::kDynamic: dispatch_rows<NormKind::kRms, QuantMode::kDynamic>(dt, a); break;
      case QuantMode::kStatic: dispatch_rows<NormKind::kRms, QuantMode::kStatic>(dt, a); break;
    }
  }
  return o;
}

using OptT = std::optional<at::Tensor>;

at::Tensor layer_norm_cpu(const at::Tensor& x, const OptT& weight, const OptT& bias, double eps) {
  return run_norm("layer_norm", NormKind::kLayer, false, x, std::nullopt, weight, bias, eps,
                  std::nullopt).out;
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_cpu(const at::Tensor& x,
                                                      const at::Tensor& residual,
                                                      const OptT& weight, const OptT& bias,
                                                      double eps) {
  auto o = run_norm("add_layer_norm", NormKind::kLayer, false, x, residual, weight, bias, eps,
                    std::nullopt);
  return {o.out, o.residual_out};
}

std::tuple<at::Tensor, at::Tensor> layer_norm_quant_cpu(const at::Tensor& x, const OptT& weight,
                                                        const OptT& bias, double eps,
                                                        const OptT& scale) {
  auto o = run_norm("layer_norm_quant", NormKind::kLayer, true, x, std::nullopt, weight, bias,
                    eps, scale);
  return {o.q, o.scales};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_layer_norm_quant_cpu(
    const at::Tensor& x, const at::Tensor& residual, const OptT& weight, const OptT& bias,
    double eps, const OptT& scale) {
  auto o = run_norm("add_layer_norm_quant", NormKind::kLayer, true, x, residual, weight, bias,
                    eps, scale);
  return {o.q, o.scales, o.residual_out};
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const OptT& weight, double eps) {
  return run_norm("rms_norm", NormKind::kRms, false, x, std::nullopt, weight, std::nullopt, eps,
                  std::nullopt).out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x,
                                                    const at::Tensor& residual,
                                                    const OptT& weight, double eps) {
  auto o = run_norm("add_rms_norm", NormKind::kRms, false, x, residual, weight, std::nullopt, eps,
                    std::nullopt);
  return {o.out, o.residual_out};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_quant_cpu(const at::Tensor& x, const OptT& weight,
                                                      double eps, const OptT& scale) {
  auto o = run_norm("rms_norm_quant", NormKind::kRms, true, x, std::nullopt, weight, std::nullopt,
                    eps, scale);
  return {o.q, o.scales};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_quant_cpu(
    const at::Tensor& x, const at::Tensor& residual, const OptT& weight, double eps,
    const OptT& scale) {
  auto o = run_norm("add_rms_norm_quant", NormKind::kRms, true, x, residual, weight,
                    std::nullopt, eps, scale);
  return {o.q, o.scales, o.residual_out};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_and_quant_cpu(
    const at::Tensor& x, const OptT& residual, const OptT& weight, const OptT& bias, double eps,
    const OptT& scale) {
  auto o = run_norm("layer_norm_and_quant", NormKind::kLayer, true, x, residual, weight, bias, eps,
                    scale, /*both=*/true);
  return {o.out, o.q, o.scales};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rms_norm_and_quant_cpu(
    const at::Tensor& x, const OptT& residual, const OptT& weight, double eps, const OptT& scale) {
  auto o = run_norm("rms_norm_and_quant", NormKind::kRms, true, x, residual, weight, std::nullopt,
                    eps, scale, /*both=*/true);
  return {o.out, o.q, o.scales};
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CPU, m) {
  m.impl("layer_norm_and_quant", &squash::layer_norm_and_quant_cpu);
  m.impl("rms_norm_and_quant", &squash::rms_norm_and_quant_cpu);
  m.impl("layer_norm", &squash::layer_norm_cpu);
  m.impl("add_layer_norm", &squash::add_layer_norm_cpu);
  m.impl("layer_norm_quant", &squash::layer_norm_quant_cpu);
  m.impl("add_layer_norm_quant", &squash::add_layer_norm_quant_cpu);
  m.impl("rms_norm", &squash::rms_norm_cpu);
  m.impl("add_rms_norm", &squash::add_rms_norm_cpu);
  m.impl("rms_norm_quant", &squash::rms_norm_quant_cpu);
  m.impl("add_rms_norm_quant", &squash::add_rms_norm_quant_cpu);
}
