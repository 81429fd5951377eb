// Input validation shared by the CPU and CUDA implementations of every op. Each failure raises
// a ValueError/RuntimeError whose message names the op, the argument and what was expected, so
// bad input never reaches a kernel.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "ops/message.h"

#include <initializer_list>
#include <string>

namespace squash {

inline std::string dtype_list(std::initializer_list<at::ScalarType> dtypes) {
  std::string s;
  for (auto d : dtypes) s += (s.empty() ? "" : " or ") + std::string(c10::toString(d));
  return s;
}

inline void check_dtype(const char* op, const char* arg, const at::Tensor& t,
                        std::initializer_list<at::ScalarType> allowed) {
  for (auto d : allowed)
    if (t.scalar_type() == d) return;
  SQUASH_CHECK_VALUE(false, "squash::", op, ": ", arg, " must be ", dtype_list(allowed), ", got ",
                    t.scalar_type());
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

inline bool is_half_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

}  // namespace squash
