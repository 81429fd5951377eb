// attention / attention_varlen (prefill forward) on CUDA: the torch-free interface (plain C++ +
// the CUDA runtime API, so both the torch binding, compiled by g++, and the C++ benchmark
// include it).
//
// Semantics (the op contract): q [B, Sq, Hq, D], k/v [B, Sk, Hkv, D] (FlashAttention layout, last
// dim contiguous, other strides arbitrary). Query head h reads kv head h / (Hq / Hkv) (GQA/MQA
// without repeating K/V). Causal masking is bottom-right aligned: query i sees key j iff
// j <= i + Sk - Sq. out [B, Sq, Hq, D] in q's dtype; lse f32, natural log of the sum of
// exp(scaled scores). A query that sees no key gets out 0 and lse -inf.
//
// Varlen (cu_seqlens_q/k set): sequence b owns query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]
// and key rows cu_seqlens_k[b] .. cu_seqlens_k[b+1] of packed [T, H, D] tensors (batch strides
// unused, pass 0), with the same rules per sequence; seqlen_q / seqlen_k are then the maxima
// (they size the grid). The offsets are read on the device only: lengths are clamped to
// [0, seqlen_q/k] so that bad values cannot make the kernel read past those bounds, but the
// cu_seqlens values themselves are trusted (checking them would need a device-to-host copy).
// Query rows outside every sequence are not written.
//
// Kernel (prefill_kernel.cuh): FlashAttention-2 style on sm_80-class tensor cores (mma.sync
// m16n8k16, ldmatrix, cp.async K/V ring), one CTA per (row block, batch, q head).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "dtype.h"  // same directory: found from both include roots

namespace squash::attention {

struct AttentionPrefillParams {
  // Strides are in elements. q, k, v and out need 16-byte aligned pointers and strides that are
  // multiples of 8 elements (the kernel moves 16 bytes per copy).
  const void* q = nullptr;  // [B, Sq, Hq, D] or varlen [Tq, Hq, D]
  const void* k = nullptr;  // [B, Sk, Hkv, D] or varlen [Tk, Hkv, D]
  const void* v = nullptr;
  void* out = nullptr;      // like q, q's dtype
  // lse of query row i (within its sequence) of batch b, head h:
  //   lse[b * lse_batch_stride + h * lse_head_stride + q_start(b) + i], q_start(b) = 0 for the
  // fixed-length layout ([B, Hq, Sq]: strides Hq*Sq, Sq) and cu_seqlens_q[b] for varlen
  // ([Hq, Tq]: strides 0, Tq).
  float* lse = nullptr;
  const int32_t* cu_seqlens_q = nullptr;  // [B + 1] on the device, or null (fixed-length layout)
  const int32_t* cu_seqlens_k = nullptr;  // set exactly when cu_seqlens_q is

  int64_t q_batch_stride = 0, q_seq_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_seq_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_seq_stride = 0, v_head_stride = 0;
  int64_t out_batch_stride = 0, out_seq_stride = 0, out_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;

  int batch = 0;
  int seqlen_q = 0, seqlen_k = 0;  // varlen: max_seqlen_q / max_seqlen_k
  int heads_q = 0, heads_kv = 0, head_dim = 0;
  float softmax_scale = 0.f;  // resolved by the caller (None -> 1/sqrt(D)); must be > 0
  bool causal = false;
};

inline constexpr bool attention_prefill_supports_head_dim(int head_dim) {
  return head_dim == 64 || head_dim == 128 || head_dim == 256;
}

// Launches the prefill kernel on `stream`: no host synchronization, no allocation, capturable
// in a CUDA graph. Returns cudaErrorInvalidValue for unsupported head_dim, a non-positive or
// non-finite softmax_scale, misaligned pointers/strides or inconsistent sizes (the binding
// checks these first with readable messages), cudaErrorInvalidConfiguration when the grid
// would be too large (B * Hq * row blocks > 2^31 - 1), else the launch error, if any.
cudaError_t attention_prefill(const AttentionPrefillParams& params, AttentionDtype dtype,
                              cudaStream_t stream);

}  // namespace squash::attention
