// Argument validation for the attention ops, shared by the CPU and CUDA implementations
// (defined in attention_checks.cpp). Each throws ValueError naming the op, argument and expectation.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace squash {

// softmax_scale: None (1/sqrt(head_dim)) or a number that is finite and > 0 as a float32 (what
// the kernels compute with): 0, a negative, NaN or inf scale would give garbage or NaN rows.
void check_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          std::optional<double> softmax_scale);
void check_attention_varlen_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                 int64_t max_seqlen_q, int64_t max_seqlen_k,
                                 std::optional<double> softmax_scale);
void check_attention_decode_args(const at::Tensor& q, const at::Tensor& k_cache,
                                 const at::Tensor& v_cache, const at::Tensor& cache_seqlens,
                                 std::optional<double> softmax_scale);

}  // namespace squash
