// One explicit instantiation per file (bounded compile time and memory on small machines).
#include "attention/decode_launch_template.cuh"

namespace squash::attention {
template cudaError_t run_attention_decode<__half, 128>(const AttentionDecodeParams&, cudaStream_t);
}  // namespace squash::attention
