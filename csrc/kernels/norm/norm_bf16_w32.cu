// Explicit instantiation of the norm kernels for x.dtype = __nv_bfloat16, weight/bias = float.
#include "norm_launch_template.cuh"

namespace squash::norm {
template cudaError_t norm_launch_typed<__nv_bfloat16, float>(const NormParams&, const NormConfig&, cudaStream_t);
}  // namespace squash::norm
