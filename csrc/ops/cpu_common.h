// Glue shared by the CPU op files (torch on one side, csrc/kernels/cpu on the other).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "cpu/convert.h"

namespace squash::cpu {

// x.shape with its last dimension replaced by N (the GEMMs' output shape).
inline std::vector<int64_t> out_shape(const at::Tensor& x, int64_t N) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  return shape;
}

// out[..., N] = round_to_x_dtype(x.float() @ w.T + bias.float()) for a float32 weight w [N, K]:
// the canonical weight-only CPU GEMMs, and the prepacked ones at prefill-size M.
inline at::Tensor linear_f32(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias) {
  const int64_t K = x.size(-1), N = w.size(0);
  const at::Tensor x2 = x.reshape({-1, K}).to(at::kFloat);
  at::Tensor out = bias ? at::addmm(bias->to(at::kFloat), x2, w.t()) : at::mm(x2, w.t());
  return out.to(x.scalar_type()).reshape(out_shape(x, N));
}

// The kernels' dtype for float16 / bfloat16 / float32 (callers have checked it is one of them).
inline cpu_kernels::Dtype kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return cpu_kernels::Dtype::kF16;
    case at::kBFloat16: return cpu_kernels::Dtype::kBF16;
    default: return cpu_kernels::Dtype::kF32;
  }
}

}  // namespace squash::cpu
