// run_attention_decode<T, D>: picks the rows-per-CTA variant of the split kernel
// (decode_kernel.cuh) and launches it, then the combine kernel when num_splits > 1 (no
// synchronization). Instantiated once per decode_hd*_*.cu file; the parameters were validated
// by attention_decode() (decode_launch.cu).
#pragma once

#include <cuda_runtime.h>

#include "attention/decode_kernel.cuh"

namespace squash::attention {

template <typename T, int kHeadDim>
cudaError_t run_attention_decode(const AttentionDecodeParams& p, cudaStream_t stream) {
  const int rows = p.seqlen_q * (p.heads_q / p.heads_kv);
  const long long ctas = static_cast<long long>(decode_row_tiles(rows)) * p.num_splits *
                         p.batch * p.heads_kv;
  if (ctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  // Dynamic shared memory (48 KB, no opt-in needed) so that the CPU emulator can provide it.
  constexpr int kSmem4 = DecodeTraits<T, kHeadDim, 4>::kSmemBytes;
  constexpr int kSmem8 = DecodeTraits<T, kHeadDim, 8>::kSmemBytes;
  if (decode_rows_per_cta(rows) == 4)
    attention_decode_split_kernel<T, kHeadDim, 4>
        <<<static_cast<unsigned>(ctas), 128, kSmem4, stream>>>(p);
  else
    attention_decode_split_kernel<T, kHeadDim, 8>
        <<<static_cast<unsigned>(ctas), 128, kSmem8, stream>>>(p);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.num_splits == 1) return err;

  const long long rows_all = static_cast<long long>(p.batch) * p.heads_q * p.seqlen_q;
  const long long blocks = (rows_all + 3) / 4;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  if (!p.pdl) {
    attention_decode_combine_kernel<T, kHeadDim>
        <<<static_cast<unsigned>(blocks), 128, 0, stream>>>(p);
    return cudaGetLastError();
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(128);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, attention_decode_combine_kernel<T, kHeadDim>, p);
}

}  // namespace squash::attention
