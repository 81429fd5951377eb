// CUDA implementations of the 8 norm ops (schemas in csrc/ops/library.cpp, semantics in
// csrc/kernels/norm/norm_params.h). Validation is shared with the CPU ops (check_norm_args);
// this file only shapes tensors into NormParams and launches the torch-free kernels.
#include <ATen/ATen.h>
#include "ops/message.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kernels/norm/norm_params.h"
#include "ops/norm.h"

namespace squash {
namespace {

using norm::NormParams;
using OptTensor = std::optional<at::Tensor>;

norm::DType to_norm_dtype(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kHalf: return norm::DType::kFloat16;
    case at::kBFloat16: return norm::DType::kBFloat16;
    case at::kFloat: return norm::DType::kFloat32;
    default: SQUASH_CHECK_VALUE(false, "squash::", op, ": unsupported dtype ", t);
  }
  return norm::DType::kFloat32;  // not reached
}

// [..., H] as a 2-D [rows, H] tensor whose last dimension has stride 1 (a view when one exists,
// else a contiguous copy), so strided leading dimensions cost no copy.
at::Tensor as_rows(const at::Tensor& t, int64_t hidden) {
  at::Tensor r = t.reshape({-1, hidden});
  if (hidden > 1 && r.stride(1) != 1) r = r.contiguous();
  return r;
}

struct NormOutputs {
  at::Tensor out;  // non-quant
  at::Tensor q;    // quant
  at::Tensor scales;
  at::Tensor residual_out;
};

NormOutputs run_norm(const char* op, norm::Kind kind, const at::Tensor& x,
                     const OptTensor& residual, const OptTensor& weight, const OptTensor& bias,
                     double eps, bool quant, const OptTensor& scale) {
  check_norm_args(op, x, residual, weight, bias, eps, scale);
  // What the kernel relies on for memory safety (check_norm_args already enforces these; kept
  // as cheap internal checks so a validation gap cannot become an illegal address).
  SQUASH_CHECK(x.is_cuda() && x.dim() >= 1, "squash::", op, ": x must be a CUDA tensor [..., H]");
  const int64_t hidden = x.size(-1);
  for (const OptTensor* t : {&weight, &bias})
    SQUASH_CHECK(!t->has_value() || ((*t)->device() == x.device() && (*t)->numel() == hidden),
                "squash::", op, ": weight/bias must be [", hidden, "] on ", x.device());
  SQUASH_CHECK(!residual.has_value() ||
                  (residual->device() == x.device() && residual->sizes() == x.sizes() &&
                   residual->scalar_type() == x.scalar_type()),
              "squash::", op, ": residual must match x");
  SQUASH_CHECK(!scale.has_value() || (scale->device() == x.device() && scale->numel() == 1 &&
                                     scale->scalar_type() == at::kFloat),
              "squash::", op, ": scale must be float32 with one element on ", x.device());

  c10::cuda::CUDAGuard guard(x.device());
  NormOutputs res;
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  if (quant) {
    res.q = at::empty(x.sizes(), x.options().dtype(at::kChar));
    res.scales = at::empty(lead, x.options().dtype(at::kFloat));
  } else {
    res.out = at::empty(x.sizes(), x.options());
  }
  if (residual.has_value()) res.residual_out = at::empty(x.sizes(), x.options());
  const int64_t rows = hidden > 0 ? x.numel() / hidden : 0;
  if (rows == 0 || hidden == 0) return res;

  NormParams p;
  p.kind = kind;
  p.dtype = to_norm_dtype(op, x.scalar_type());
  p.rows = rows;
  p.hidden = hidden;
  p.eps = static_cast<float>(eps);

  const at::Tensor x2 = as_rows(x, hidden);
  p.x = x2.data_ptr();
  p.x_stride = x2.stride(0);
  at::Tensor r2;
  if (residual.has_value()) {
    r2 = as_rows(*residual, hidden);
    p.residual = r2.data_ptr();
    p.residual_stride = r2.stride(0);
    p.residual_out = res.residual_out.data_ptr();
    p.residual_out_stride = hidden;
  }

  // Weight and bias share one type in the kernel: x.dtype or float32. Mixed (one of each) is
  // promoted to float32, which is exact.
  at::Tensor w, b;
  if (weight.has_value()) w = weight->contiguous();
  if (bias.has_value()) b = bias->contiguous();
  if (w.defined() && b.defined() && w.scalar_type() != b.scalar_type()) {
    w = w.to(at::kFloat);
    b = b.to(at::kFloat);
  }
  const at::ScalarType wtype =
      w.defined() ? w.scalar_type() : (b.defined() ? b.scalar_type() : x.scalar_type());
  SQUASH_CHECK(wtype == x.scalar_type() || wtype == at::kFloat, "squash::", op,
              ": weight/bias must be ", x.scalar_type(), " or Float, got ", wtype);
  p.wdtype = to_norm_dtype(op, wtype);
  p.weight = w.defined() ? w.data_ptr() : nullptr;
  p.bias = b.defined() ? b.data_ptr() : nullptr;

  if (quant) {
    p.q = res.q.data_ptr<int8_t>();
    p.q_stride = hidden;
    p.scales = res.scales.data_ptr<float>();
    p.static_scale = scale.has_value() ? scale->data_ptr<float>() : nullptr;
  } else {
    p.out = res.out.data_ptr();
    p.out_stride = hidden;
  }

  const cudaError_t err = norm::norm_launch(p, c10::cuda::getCurrentCUDAStream().stream());
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error launching the norm kernel (x ",
              x.sizes(), " ", x.scalar_type(), ", weight/bias ", wtype, "): ",
              cudaGetErrorString(err));
  return res;
}

at::Tensor layer_norm_cuda(const at::Tensor& x, const OptTensor& weight, const OptTensor& bias,
                           double eps) {
  return run_norm("layer_norm", norm::Kind::kLayerNorm, x, std::nullopt, weight, bias, eps,
                  false, std::nullopt)
      .out;
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_cuda(const at::Tensor& x,
                                                       const at::Tensor& residual,
                                                       const OptTensor& weight,
                                                       const OptTensor& bias, double eps) {
  auto r = run_norm("add_layer_norm", norm::Kind::kLayerNorm, x, residual, weight, bias, eps,
                    false, std::nullopt);
  return {r.out, r.residual_out};
}

std::tuple<at::Tensor, at::Tensor> layer_norm_quant_cuda(const at::Tensor& x,
                                                         const OptTensor& weight,
                                                         const OptTensor& bias, double eps,
                                                         const OptTensor& scale) {
  auto r = run_norm("layer_norm_quant", norm::Kind::kLayerNorm, x, std::nullopt, weight, bias,
                    eps, true, scale);
  return {r.q, r.scales};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_layer_norm_quant_cuda(
    const at::Tensor& x, const at::Tensor& residual, const OptTensor& weight,
    const OptTensor& bias, double eps, const OptTensor& scale) {
  auto r = run_norm("add_layer_norm_quant", norm::Kind::kLayerNorm, x, residual, weight, bias,
                    eps, true, scale);
  return {r.q, r.scales, r.residual_out};
}

at::Tensor rms_norm_cuda(const at::Tensor& x, const OptTensor& weight, double eps) {
  return run_norm("rms_norm", norm::Kind::kRMSNorm, x, std::nullopt, weight, std::nullopt, eps,
                  false, std::nullopt)
      .out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cuda(const at::Tensor& x,
                                                     const at::Tensor& residual,
                                                     const OptTensor& weight, double eps) {
  auto r = run_norm("add_rms_norm", norm::Kind::kRMSNorm, x, residual, weight, std::nullopt,
                    eps, false, std::nullopt);
  return {r.out, r.residual_out};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_quant_cuda(const at::Tensor& x,
                                                       const OptTensor& weight, double eps,
                                                       const OptTensor& scale) {
  auto r = run_norm("rms_norm_quant", norm::Kind::kRMSNorm, x, std::nullopt, weight,
                    std::nullopt, eps, true, scale);
  return {r.q, r.scales};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_quant_cuda(
    const at::Tensor& x, const at::Tensor& residual, const OptTensor& weight, double eps,
    const OptTensor& scale) {
  auto r = run_norm("add_rms_norm_quant", norm::Kind::kRMSNorm, x, residual, weight,
                    std::nullopt, eps, true, scale);
  return {r.q, r.scales, r.residual_out};
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("layer_norm", &squash::layer_norm_cuda);
  m.impl("add_layer_norm", &squash::add_layer_norm_cuda);
  m.impl("layer_norm_quant", &squash::layer_norm_quant_cuda);
  m.impl("add_layer_norm_quant", &squash::add_layer_norm_quant_cuda);
  m.impl("rms_norm", &squash::rms_norm_cuda);
  m.impl("add_rms_norm", &squash::add_rms_norm_cuda);
  m.impl("rms_norm_quant", &squash::rms_norm_quant_cuda);
  m.impl("add_rms_norm_quant", &squash::add_rms_norm_quant_cuda);
}
