// Input validation shared by the CPU and CUDA implementations of every op. Each failure raises
// a ValueError/RuntimeError whose message names the op, the argument and what was expected, so
// bad input never reaches a kernel.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "ops/message.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>

namespace squash {

// "squash::<op>: <arg> must be float16 or bfloat16, got float32" unless t's dtype is allowed
// (a dtype listed twice, e.g. {kFloat, x.scalar_type()} for float32 x, is named once).
inline void check_dtype(const char* op, const char* arg, const at::Tensor& t,
                        std::initializer_list<at::ScalarType> allowed) {
  std::string names;
  for (auto it = allowed.begin(); it != allowed.end(); ++it) {
    if (t.scalar_type() == *it) return;
    if (std::find(allowed.begin(), it, *it) == it) names += (names.empty() ? "" : " or ") + dtype_name(*it);
  }
  SQUASH_CHECK_VALUE(false, "squash::", op, ": ", arg, " must be ", names, ", got ", t.scalar_type());
}

inline void check_dim(const char* op, const char* arg, const at::Tensor& t, int64_t dim,
                      const char* layout) {
  SQUASH_CHECK_VALUE(t.dim() == dim, "squash::", op, ": ", arg, " must be ", dim, "-D ", layout,
                    ", got shape ", t.sizes());
}

inline void check_size(const char* op, const char* arg, const at::Tensor& t, int64_t dim,
                       int64_t expected, const char* what) {
  SQUASH_CHECK_VALUE(t.size(dim) == expected, "squash::", op, ": ", arg, ".shape[", dim,
                    "] must be ", expected, " (", what, "), got shape ", t.sizes());
}

inline void check_same_device(const char* op, const char* arg, const at::Tensor& t,
                              const at::Tensor& ref, const char* ref_name) {
  SQUASH_CHECK_VALUE(t.device() == ref.device(), "squash::", op, ": ", arg, " must be on ",
                    ref.device(), " like ", ref_name, ", got ", t.device());
}

inline void check_contiguous(const char* op, const char* arg, const at::Tensor& t) {
  SQUASH_CHECK_VALUE(t.is_contiguous(), "squash::", op, ": ", arg,
                    " must be contiguous (call .contiguous() first), got strides ", t.strides(),
                    " for shape ", t.sizes());
}

inline void check_nonempty(const char* op, const char* arg, const at::Tensor& t) {
  SQUASH_CHECK_VALUE(t.numel() > 0, "squash::", op, ": ", arg, " must not be empty, got shape ",
                    t.sizes());
}

// Last dim contiguous (stride 1): what row-wise kernels need; leading dims may be strided.
inline void check_last_dim_contiguous(const char* op, const char* arg, const at::Tensor& t) {
  SQUASH_CHECK_VALUE(t.dim() >= 1 && t.stride(-1) == 1, "squash::", op, ": ", arg,
                    " must have a contiguous last dimension (stride 1), got strides ",
                    t.strides());
}

// A static per-tensor activation scale (quantize_activation_int8, the fused norm + int8 ops):
// float32, exactly one element (any shape), on x's device; on the CPU also finite and > 0 (0, a
// negative or a non-finite scale quantizes every value to garbage). On a GPU the value is not
// read: that would cost a device sync per call (W8A8Linear.set_input_scale checks it once).
inline void check_static_scale(const char* op, const at::Tensor& scale, const at::Tensor& x) {
  check_same_device(op, "scale", scale, x, "x");
  check_dtype(op, "scale", scale, {at::kFloat});
  SQUASH_CHECK_VALUE(scale.numel() == 1, "squash::", op,
                    ": scale must have exactly 1 element (a static per-tensor scale), got shape ",
                    scale.sizes());
  if (scale.device().is_cpu()) {
    const float v = scale.item<float>();
    SQUASH_CHECK_VALUE(std::isfinite(v) && v > 0.0f, "squash::", op,
                      ": scale must be finite and > 0, got ", v);
  }
}

inline bool is_half_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

}  // namespace squash
