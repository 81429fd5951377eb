// One explicit instantiation per file: the int8 x bf16 tensor-core kernels (all configs).
#include "gemm/woq_mma.cuh"

namespace squash::gemm {
template cudaError_t woq_mma_dispatch<__nv_bfloat16, 8>(const WoqGemmParams&, MmaConfig, int, cudaStream_t);
}  // namespace squash::gemm
