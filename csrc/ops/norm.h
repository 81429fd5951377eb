// Argument validation for every norm op, shared by the CPU and CUDA implementations (defined in
// norm_checks.cpp). `op` names the op in messages; pass std::nullopt for arguments the op lacks.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace squash {

void check_norm_args(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& residual,
                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                     double eps, const std::optional<at::Tensor>& static_scale);

}  // namespace squash
