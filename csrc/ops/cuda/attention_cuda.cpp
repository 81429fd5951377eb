// CUDA implementation of squash::attention_decode: validates, allocates the outputs and the
// split workspace with torch's allocator and calls the torch-free launcher
// (csrc/kernels/attention/decode.h) on the current stream.
//
// CUDA-graph safe: no host synchronization and no reads of tensor contents on the host. The
// number of KV splits comes from host-known sizes (batch, heads, the cache capacity Smax) and
// never from cache_seqlens, so one captured launch serves every decode step. Consequently the
// lengths are not range-checked here (the CPU op does check them); the kernel clamps each length
// to [0, Smax] so a bad value can never read outside the cache.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "kernels/attention/decode.h"
#include "ops/attention.h"
#include "ops/checks.h"

namespace squash {
namespace {

constexpr const char* kOp = "attention_decode";

// Leading stride of dim d as the kernel uses it: a dim of size 1 is only ever indexed at 0, so its
// stride (which torch may leave at any value) is irrelevant and passed as 0.
int64_t lead_stride(const at::Tensor& t, int64_t d) { return t.size(d) == 1 ? 0 : t.stride(d); }

// The kernel moves 8 elements (16 bytes) per access: pointer and leading strides must keep that.
void check_vector_aligned(const char* arg, const at::Tensor& t) {
  const bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
                  lead_stride(t, 0) % 8 == 0 && lead_stride(t, 1) % 8 == 0 &&
                  lead_stride(t, 2) % 8 == 0;
  SQUASH_CHECK_VALUE(ok, "squash::", kOp, ": on CUDA ", arg,
                    " must start on a 16-byte boundary and have strides that are multiples of 8 "
                    "elements (call .contiguous() first), got strides ",
                    t.strides(), " and storage offset ", t.storage_offset());
}

int sm_count(int device) {
  int n = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
  SQUASH_CHECK(err == cudaSuccess, "squash::", kOp, ": cudaDeviceGetAttribute failed: ",
              cudaGetErrorString(err));
  return n;
}

std::tuple<at::Tensor, at::Tensor> attention_decode_cuda(const at::Tensor& q,
                                                         const at::Tensor& k_cache,
                                                         const at::Tensor& v_cache,
                                                         const at::Tensor& cache_seqlens,
                                                         std::optional<double> softmax_scale,
                                                         bool causal) {
  check_attention_decode_args(q, k_cache, v_cache, cache_seqlens);
  SQUASH_CHECK_VALUE(is_half_type(q.scalar_type()), "squash::", kOp,
                    ": on CUDA q must be Half or BFloat16, got ", q.scalar_type(),
                    " (float32 runs only on CPU)");
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Smax = k_cache.size(1), Hkv = k_cache.size(2);
  SQUASH_CHECK_VALUE(squash::attention::attention_decode_supports_head_dim(static_cast<int>(D)),
                    "squash::", kOp, ": on CUDA head_dim (q.shape[3]) must be 64, 128 or 256, got ",
                    D);
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  SQUASH_CHECK_VALUE(B <= kIntMax && Sq <= kIntMax && Hq <= kIntMax, "squash::", kOp,
                    ": q is too large for the CUDA kernel, got shape ", q.sizes());
  SQUASH_CHECK_VALUE(Smax <= (int64_t{1} << 30), "squash::", kOp,
                    ": on CUDA k_cache.shape[1] (max_seqlen) must be <= 2^30, got ", Smax);
  check_vector_aligned("q", q);
  check_vector_aligned("k_cache", k_cache);
  check_vector_aligned("v_cache", v_cache);

  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({B, Sq, Hq, D}, q.options());
  auto lse = at::empty({B, Hq, Sq}, q.options().dtype(at::kFloat));
  if (B == 0 || Sq == 0) return {out, lse};

  namespace sa = squash::attention;
  sa::AttentionDecodeParams p;
  p.q = q.data_ptr();
  p.k = k_cache.data_ptr();
  p.v = v_cache.data_ptr();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.cache_seqlens = cache_seqlens.data_ptr<int32_t>();
  p.q_batch_stride = lead_stride(q, 0);
  p.q_seq_stride = lead_stride(q, 1);
  p.q_head_stride = lead_stride(q, 2);
  p.k_batch_stride = lead_stride(k_cache, 0);
  p.k_seq_stride = lead_stride(k_cache, 1);
  p.k_head_stride = lead_stride(k_cache, 2);
  p.v_batch_stride = lead_stride(v_cache, 0);
  p.v_seq_stride = lead_stride(v_cache, 1);
  p.v_head_stride = lead_stride(v_cache, 2);
  p.out_batch_stride = lead_stride(out, 0);
  p.out_seq_stride = lead_stride(out, 1);
  p.out_head_stride = lead_stride(out, 2);
  p.batch = static_cast<int>(B);
  p.seqlen_q = static_cast<int>(Sq);
  p.heads_q = static_cast<int>(Hq);
  p.heads_kv = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(D);
  p.max_seqlen = static_cast<int>(Smax);
  p.softmax_scale = static_cast<float>(
      softmax_scale.has_value() ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(D)));
  p.causal = causal;

  const int rows = static_cast<int>(Sq * (Hq / Hkv));
  p.num_splits = sa::decode_num_splits(p.batch, p.heads_kv, sa::decode_row_tiles(rows),
                                       p.max_seqlen, p.head_dim, sm_count(q.get_device()));
  const size_t ws_bytes = sa::attention_decode_workspace_bytes(B, Hq, Sq, D, p.num_splits);
  at::Tensor workspace;
  if (ws_bytes > 0) {
    workspace = at::empty({static_cast<int64_t>(ws_bytes)}, q.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }

  const auto dtype = q.scalar_type() == at::kHalf ? sa::DecodeDtype::kFloat16
                                                   : sa::DecodeDtype::kBFloat16;
  const cudaError_t err = sa::attention_decode(p, dtype, c10::cuda::getCurrentCUDAStream());
  SQUASH_CHECK(err == cudaSuccess, "squash::", kOp, ": CUDA kernel failed: ",
              cudaGetErrorString(err), " (q ", q.sizes(), ", k_cache ", k_cache.sizes(),
              ", num_splits ", p.num_splits, ")");
  return {out, lse};
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("attention_decode", &squash::attention_decode_cuda);
}
