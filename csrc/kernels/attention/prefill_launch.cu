// attention_prefill(): validates the torch-free parameters and dispatches on (dtype, head_dim) to
// the explicit instantiations in prefill_hd*_*.cu (one per file, so each compiles on its own and
// this file never instantiates a kernel).
#include <cmath>
#include <cstdint>

#include "attention/launch_common.h"
#include "attention/prefill.h"

namespace squash::attention {

// Defined in prefill_launch_template.cuh, instantiated in prefill_hd{64,128,256}_{fp16,bf16}.cu.
template <typename T, int kHeadDim>
cudaError_t run_attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream);

cudaError_t attention_prefill(const AttentionPrefillParams& p, AttentionDtype dtype,
                              cudaStream_t stream) {
  if (!attention_prefill_supports_head_dim(p.head_dim)) return cudaErrorInvalidValue;
  if (p.batch < 0 || p.seqlen_q < 0 || p.seqlen_k < 0 || p.heads_q <= 0 || p.heads_kv <= 0 ||
      p.heads_q % p.heads_kv != 0)
    return cudaErrorInvalidValue;
  // Row and key indices inside the kernel are int, with headroom for a tile past the end.
  if (p.seqlen_q > (1 << 30) || p.seqlen_k > (1 << 30)) return cudaErrorInvalidValue;
  // The mask relies on scale > 0: s * scale stays -inf for a masked score (0 * -inf is NaN).
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale)) return cudaErrorInvalidValue;
  if ((p.cu_seqlens_q == nullptr) != (p.cu_seqlens_k == nullptr)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.seqlen_q == 0) return cudaSuccess;  // empty output: nothing to do
  if (!vector_aligned(p.q, p.q_batch_stride, p.q_seq_stride, p.q_head_stride) ||
      !vector_aligned(p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride) ||
      !vector_aligned(p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride) ||
      !vector_aligned(p.out, p.out_batch_stride, p.out_seq_stride, p.out_head_stride))
    return cudaErrorInvalidValue;
  if (p.lse == nullptr) return cudaErrorInvalidValue;
  return dispatch_dtype_head_dim(dtype, p.head_dim, [&](auto t, auto d) {
    return run_attention_prefill<decltype(t), decltype(d)::value>(p, stream);
  });
}

}  // namespace squash::attention
