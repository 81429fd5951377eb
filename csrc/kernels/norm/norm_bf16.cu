// Explicit instantiation of the norm kernels for x.dtype = __nv_bfloat16, weight/bias = __nv_bfloat16.
#include "norm_launch_template.cuh"

namespace squash::norm {
template cudaError_t norm_launch_typed<__nv_bfloat16, __nv_bfloat16>(const NormParams&, const NormConfig&, cudaStream_t);
}  // namespace squash::norm
