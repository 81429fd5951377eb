// attention_decode(): validates the torch-free parameters and dispatches on (dtype, head_dim) to
// the explicit instantiations in decode_hd*_*.cu (one per file, so each compiles on its own and
// this file never instantiates a kernel).
#include <cstdint>

#include "attention/decode.h"
#include "attention/launch_common.h"

namespace squash::attention {

// Defined in decode_launch_template.cuh, instantiated in decode_hd{64,128,256}_{fp16,bf16}.cu.
template <typename T, int kHeadDim>
cudaError_t run_attention_decode(const AttentionDecodeParams& p, cudaStream_t stream);

cudaError_t attention_decode(const AttentionDecodeParams& p, DecodeDtype dtype,
                             cudaStream_t stream) {
  if (!attention_decode_supports_head_dim(p.head_dim)) return cudaErrorInvalidValue;
  if (p.batch < 0 || p.seqlen_q < 0 || p.heads_q <= 0 || p.heads_kv <= 0 || p.max_seqlen < 0 ||
      p.heads_q % p.heads_kv != 0)
    return cudaErrorInvalidValue;
  if (p.max_seqlen > (1 << 30)) return cudaErrorInvalidValue;  // key indices stay in int
  if (p.batch == 0 || p.seqlen_q == 0) return cudaSuccess;  // empty output: nothing to do
  if (p.num_splits < 1 || p.num_splits > kDecodeMaxSplits) return cudaErrorInvalidValue;
  if (p.num_splits > 1 && (p.workspace == nullptr || !aligned16(p.workspace)))
    return cudaErrorInvalidValue;
  // 16-byte accesses: pointers and every leading stride must keep 8-element alignment.
  if (!vector_aligned(p.q, p.q_batch_stride, p.q_seq_stride, p.q_head_stride) ||
      !vector_aligned(p.k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride) ||
      !vector_aligned(p.v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride) ||
      !vector_aligned(p.out, p.out_batch_stride, p.out_seq_stride, p.out_head_stride))
    return cudaErrorInvalidValue;
  if (p.lse == nullptr || p.cache_seqlens == nullptr) return cudaErrorInvalidValue;
  // Row indices inside the kernel are int (Sq * group) and int64 elsewhere.
  if (static_cast<int64_t>(p.seqlen_q) * (p.heads_q / p.heads_kv) > (1LL << 30))
    return cudaErrorInvalidValue;
  return dispatch_dtype_head_dim(dtype, p.head_dim, [&](auto t, auto d) {
    return run_attention_decode<decltype(t), decltype(d)::value>(p, stream);
  });
}

}  // namespace squash::attention
