// Argument validation for the quantized GEMM ops, shared by the CPU and CUDA implementations
// (defined in gemm_checks.cpp). Each throws ValueError naming the op, argument and expectation.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace squash {

// group_size -1 means per-channel (one group spanning K); returns the effective group size.
int64_t resolve_group_size(int64_t group_size, int64_t K);

void check_w8a16_gemm_args(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& bias);
void check_w4a16_gemm_args(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& zeros, int64_t group_size,
                           const std::optional<at::Tensor>& bias);
void check_quantize_activation_args(const at::Tensor& x, const std::optional<at::Tensor>& scale);
void check_quantize_activation_transformed_args(const at::Tensor& x, const std::optional<at::Tensor>& input_mul,
                                                int64_t rotation, const std::optional<at::Tensor>& scale);
void check_w8a8_gemm_args(const at::Tensor& x_q, const at::Tensor& x_scales, const at::Tensor& qweight,
                          const at::Tensor& w_scales, const std::optional<at::Tensor>& bias,
                          at::ScalarType out_dtype);

}  // namespace squash
