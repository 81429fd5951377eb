// One explicit instantiation per file: the int4 x f16 tensor-core kernels (all configs).
#include "gemm/woq_mma.cuh"

namespace squash::gemm {
template cudaError_t woq_mma_dispatch<__half, 4>(const WoqGemmParams&, MmaConfig, int, cudaStream_t);
}  // namespace squash::gemm
