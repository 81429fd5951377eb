// run_attention_prefill<T, D>: the launch of attention_prefill_kernel (prefill_kernel.cuh) for one
// (dtype, head dim), instantiated once per prefill_hd*_*.cu file. The parameters were validated
// by attention_prefill() (prefill_launch.cu).
#pragma once

#include <cuda_runtime.h>

#include "attention/prefill_kernel.cuh"

namespace squash::attention {

template <typename T, int kHeadDim>
cudaError_t run_attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream) {
  using Tr = PrefillTraits<T, kHeadDim>;
  const long long heads = static_cast<long long>(p.batch) * p.heads_q;
  const long long m_blocks = (static_cast<long long>(p.seqlen_q) + Tr::kBlockM - 1) / Tr::kBlockM;
  if (heads * m_blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  auto* kernel = attention_prefill_kernel<T, kHeadDim>;
  // Above 48 KB of dynamic shared memory a kernel must opt in. Set on every launch: the
  // attribute is per device and the call costs well under a microsecond.
  if (Tr::kSmemBytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
    if (err != cudaSuccess) return err;
  }
  kernel<<<static_cast<unsigned>(heads * m_blocks), Tr::kThreads, Tr::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace squash::attention
