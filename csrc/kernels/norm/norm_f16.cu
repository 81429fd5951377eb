// Explicit instantiation of the norm kernels for x.dtype = __half, weight/bias = __half.
#include "norm_launch_template.cuh"

namespace squash::norm {
template cudaError_t norm_launch_typed<__half, __half>(const NormParams&, const NormConfig&, cudaStream_t);
}  // namespace squash::norm
