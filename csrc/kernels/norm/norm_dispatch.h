// The typed entry points of the norm kernels: one explicit instantiation per (element, weight)
// type pair, each in its own .cu file (norm_f16.cu, norm_f16_w32.cu, norm_bf16.cu,
// norm_bf16_w32.cu, norm_f32.cu), so norm_launch.cu compiles no kernel and the five files build
// in parallel.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "norm_params.h"

namespace squash::norm {

template <typename T, typename W>
cudaError_t norm_launch_typed(const NormParams& p, const NormConfig& c, cudaStream_t stream);

extern template cudaError_t norm_launch_typed<__half, __half>(const NormParams&, const NormConfig&, cudaStream_t);
extern template cudaError_t norm_launch_typed<__half, float>(const NormParams&, const NormConfig&, cudaStream_t);
extern template cudaError_t norm_launch_typed<__nv_bfloat16, __nv_bfloat16>(const NormParams&, const NormConfig&, cudaStream_t);
extern template cudaError_t norm_launch_typed<__nv_bfloat16, float>(const NormParams&, const NormConfig&, cudaStream_t);
extern template cudaError_t norm_launch_typed<float, float>(const NormParams&, const NormConfig&, cudaStream_t);

}  // namespace squash::norm
