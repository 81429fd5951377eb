// One explicit instantiation per file: the prepacked int8 x bf16 kernels (all configs).
#include "gemm/pk_gemm.cuh"

namespace squash::gemm {
template SQUASH_PK_DISPATCH(__nv_bfloat16, 8, false);
}  // namespace squash::gemm
