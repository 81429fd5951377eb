// One explicit instantiation per file: the prepacked int4 x f16 kernels with group-wise scales (all configs).
#include "gemm/pk_gemm.cuh"

namespace squash::gemm {
template SQUASH_PK_DISPATCH(__half, 4, true);
}  // namespace squash::gemm
