// One explicit instantiation per file: the prepacked int4 x f16 kernels with per-channel scales (all configs).
#include "gemm/pk_gemm.cuh"

namespace squash::gemm {
template SQUASH_PK_DISPATCH(__half, 4, false);
}  // namespace squash::gemm
