// Argument validation for the attention ops, shared by the CPU and CUDA implementations
// (defined in attention_checks.cpp). Each throws ValueError naming the op, argument and expectation.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace squash {

void check_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);
void check_attention_varlen_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                 int64_t max_seqlen_q, int64_t max_seqlen_k);
void check_attention_decode_args(const at::Tensor& q, const at::Tensor& k_cache,
                                 const at::Tensor& v_cache, const at::Tensor& cache_seqlens);

}  // namespace squash
