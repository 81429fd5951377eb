// One explicit instantiation per file (bounded compile time and memory on small machines).
#include "attention/prefill_launch_template.cuh"

namespace squash::attention {
template cudaError_t run_attention_prefill<__half, 128>(const AttentionPrefillParams&, cudaStream_t);
}  // namespace squash::attention
