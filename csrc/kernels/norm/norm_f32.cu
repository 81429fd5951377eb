// Explicit instantiation of the norm kernels for x.dtype = float, weight/bias = float.
#include "norm_launch_template.cuh"

namespace squash::norm {
template cudaError_t norm_launch_typed<float, float>(const NormParams&, const NormConfig&, cudaStream_t);
}  // namespace squash::norm
