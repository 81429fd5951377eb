// One explicit instantiation per file: the prepacked int8 x f16 kernels (all configs).
#include "gemm/pk_gemm.cuh"

namespace squash::gemm {
template SQUASH_PK_DISPATCH(__half, 8, false);
}  // namespace squash::gemm
