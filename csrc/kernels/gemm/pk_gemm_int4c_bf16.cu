// One explicit instantiation per file: the prepacked int4 x bf16 kernels with per-channel scales (all configs).
#include "gemm/pk_gemm.cuh"

namespace squash::gemm {
template SQUASH_PK_DISPATCH(__nv_bfloat16, 4, false);
}  // namespace squash::gemm
