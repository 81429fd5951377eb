// One explicit instantiation per file: the int4 x f16 GEMV kernels (all configs, both load widths).
#include "gemm/woq_gemv.cuh"

namespace squash::gemm {
template cudaError_t woq_gemv_dispatch<__half, 4>(const WoqGemmParams&, GemvConfig, int, cudaStream_t);
}  // namespace squash::gemm
