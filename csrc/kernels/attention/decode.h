// attention_decode on CUDA: the torch-free interface (plain C++ + the CUDA runtime API, so both
// the torch binding, compiled by g++, and the C++ benchmark include it).
//
// Semantics (the op contract): q [B, Sq, Hq, D], k/v cache [B, Smax, Hkv, D] (FlashAttention
// layout, last dim contiguous, other strides arbitrary), cache_seqlens int32 [B]. The cache
// already holds the Sq new tokens: sequence b has len = cache_seqlens[b] valid keys, query i sits
// at position len - Sq + i and, when causal, sees keys j <= len - Sq + i (non-causal: j < len).
// out [B, Sq, Hq, D] in q's dtype; lse f32 [B, Hq, Sq], natural log of the sum of exp(scaled
// scores). A query that sees no key gets out 0 and lse -inf.
//
// Work split: one CTA per (batch, kv head, KV split, row tile). The Sq x (Hq/Hkv) query rows that
// share a kv head are packed into one CTA (row r = i * group + g), so each K/V byte is read from
// memory once per row tile (and at most 8 rows use one tile; more rows take more tiles that run
// side by side and share K/V through L2). With num_splits > 1 each split writes a partial result
// (fp32, normalized, plus its lse) to the workspace and a second kernel merges the splits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "decode_heuristics.h"  // same directory: found from both include roots
#include "dtype.h"

namespace squash::attention {

using DecodeDtype = AttentionDtype;

struct AttentionDecodeParams {
  // Strides are in elements. q, k, v and out need 16-byte aligned pointers and strides that are
  // multiples of 8 elements (the kernel moves 8 elements = 16 bytes per access).
  const void* q = nullptr;  // [B, Sq, Hq, D]
  const void* k = nullptr;  // [B, Smax, Hkv, D]
  const void* v = nullptr;  // [B, Smax, Hkv, D]
  void* out = nullptr;      // [B, Sq, Hq, D], q's dtype
  float* lse = nullptr;     // [B, Hq, Sq], contiguous
  const int32_t* cache_seqlens = nullptr;  // [B], contiguous; read on the device only

  int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_seq_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_seq_stride = 0, v_head_stride = 0;
  int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;

  int batch = 0, seqlen_q = 0, heads_q = 0, heads_kv = 0, head_dim = 0;
  int max_seqlen = 0;  // Smax, the cache's capacity; lengths are clamped to [0, Smax] on the device
  float softmax_scale = 0.f;  // already resolved (None -> 1/sqrt(D) is the caller's job)
  bool causal = true;

  // 1..kDecodeMaxSplits. Choose it with decode_num_splits() (host-known sizes only, so the launch
  // is the same for every cache_seqlens and can be captured in a CUDA graph), or force it.
  int num_splits = 1;
  // Caller-provided scratch of attention_decode_workspace_bytes() bytes, 16-byte aligned; may be
  // null when that is 0 (num_splits == 1).
  void* workspace = nullptr;
  // Launch the combine kernel with programmatic dependent launch (set it only on sm_90+
  // devices): it is scheduled while the split kernel drains and waits in griddepcontrol.wait for
  // its results, hiding one launch gap (~1-2 us, a few % of a 10 us decode step). Off by default
  // until measured (bench/cpp/decode_bench.cu --sweep times both).
  bool pdl = false;
};

inline constexpr bool attention_decode_supports_head_dim(int head_dim) {
  return head_dim == 64 || head_dim == 128 || head_dim == 256;
}

// Workspace layout: partial out fp32 [num_splits, B*Hq*Sq, D], then partial lse fp32
// [num_splits, B*Hq*Sq]. The partial out block is a multiple of 256 bytes (D >= 64), so the lse
// block stays 16-byte aligned.
inline constexpr size_t attention_decode_workspace_bytes(int64_t batch, int64_t heads_q,
                                                         int64_t seqlen_q, int64_t head_dim,
                                                         int num_splits) {
  if (num_splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(batch * heads_q * seqlen_q);
  return static_cast<size_t>(num_splits) * rows * static_cast<size_t>(head_dim + 1) * sizeof(float);
}

// Launches the decode kernel (and the split combine when num_splits > 1) on `stream`. No host
// synchronization and no allocation. Returns cudaErrorInvalidValue for unsupported head_dim,
// misaligned pointers/strides, a bad num_splits or a missing workspace (the binding checks these
// first with readable messages), else the launch error, if any.
cudaError_t attention_decode(const AttentionDecodeParams& params, DecodeDtype dtype,
                             cudaStream_t stream);

}  // namespace squash::attention
