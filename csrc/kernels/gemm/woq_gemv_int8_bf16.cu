// One explicit instantiation per file: the int8 x bf16 GEMV kernels (all configs, both load widths).
#include "gemm/woq_gemv.cuh"

namespace squash::gemm {
template cudaError_t woq_gemv_dispatch<__nv_bfloat16, 8>(const WoqGemmParams&, GemvConfig, int, cudaStream_t);
}  // namespace squash::gemm
