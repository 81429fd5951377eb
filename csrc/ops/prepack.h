// Prepacked weight-only GEMM (the small-M tensor-core kernel's layout, csrc/kernels/gemm/
// prepacked_layout.h): argument validation shared by the CPU ops (prepack.cpp) and the CUDA
// binding (cuda/prepacked_gemm_cuda.cpp). Each check throws ValueError naming the op, the argument
// and the expected shape/dtype.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace squash {

// qweight uint8 [N, K/2], N % 8 == 0, K % 8 == 0; scales [N, K/g] float32/float16/bfloat16;
// zeros uint8 [N, K/g] or None. Returns the effective group size g (K for per-channel).
int64_t check_prepack_int4_args(const at::Tensor& qweight, const at::Tensor& scales,
                                const std::optional<at::Tensor>& zeros, int64_t group_size);
// qweight int8 [N, K], N % 8 == 0, K % 8 == 0; scales [N] float32/float16/bfloat16.
void check_prepack_int8_args(const at::Tensor& qweight, const at::Tensor& scales);

// packed uint8 [N/8, ceil(K/128), 512]; scales float32 [N/8, K/g, 8]; zeros uint8 like scales.
int64_t check_unprepack_int4_args(const at::Tensor& packed, const at::Tensor& scales,
                                  const std::optional<at::Tensor>& zeros, int64_t K,
                                  int64_t group_size);
// packed uint8 [N/8, ceil(K/64), 512]; scales float32 [N].
void check_unprepack_int8_args(const at::Tensor& packed, const at::Tensor& scales, int64_t K);

// x [..., K] float16/bfloat16 with a contiguous last dim and K == k (the weight's in_features,
// k % 8 == 0); the prepacked tensors as above for that k, contiguous, on x's device; bias [N]
// x.dtype. Returns g.
int64_t check_w4a16_prepacked_args(const at::Tensor& x, const at::Tensor& packed,
                                   const at::Tensor& scales, const std::optional<at::Tensor>& zeros,
                                   int64_t k, int64_t group_size,
                                   const std::optional<at::Tensor>& bias);
void check_w8a16_prepacked_args(const at::Tensor& x, const at::Tensor& packed,
                                const at::Tensor& scales, int64_t k,
                                const std::optional<at::Tensor>& bias);

}  // namespace squash
