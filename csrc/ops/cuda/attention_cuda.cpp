// CUDA implementations of squash::attention, attention_varlen (prefill kernel,
// csrc/kernels/attention/prefill.h) and attention_decode (split-KV kernel, decode.h): validate,
// allocate the outputs (and the decode split workspace) with torch's allocator and call the
// torch-free launchers on the current stream.
//
// CUDA-graph safe: no host synchronization and no reads of tensor contents on the host. The
// number of decode KV splits comes from host-known sizes (batch, heads, the cache capacity Smax)
// and never from cache_seqlens, so one captured launch serves every decode step. Consequently
// cache_seqlens and cu_seqlens are not checked here (the CPU ops do check them): the kernels
// clamp each length to [0, Smax] (decode) or [0, max_seqlen] (varlen) so that a bad length cannot
// make them read past those bounds; cu_seqlens offsets themselves are trusted.
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
#include "kernels/attention/prefill.h"
#include "ops/attention.h"
#include "ops/checks.h"

namespace squash {
namespace {

namespace sa = squash::attention;
constexpr const char* kOp = "attention_decode";

// Leading stride of dim d as the kernel uses it: a dim of size 1 is only ever indexed at 0, so its
// stride (which torch may leave at any value) is irrelevant and passed as 0.
int64_t lead_stride(const at::Tensor& t, int64_t d) { return t.size(d) == 1 ? 0 : t.stride(d); }

// The kernels move 8 elements (16 bytes) per access: pointer and leading strides (all dims but
// the last) must keep that.
void check_vector_aligned(const char* op, const char* arg, const at::Tensor& t) {
  bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) ok = ok && lead_stride(t, d) % 8 == 0;
  SQUASH_CHECK_VALUE(ok, "squash::", op, ": on CUDA ", arg,
                    " must start on a 16-byte boundary and have strides that are multiples of 8 "
                    "elements (call .contiguous() first), got strides ",
                    t.strides(), " and storage offset ", t.storage_offset());
}

// CUDA-only limits shared by the three ops: fp16/bf16, the kernels' head dims (64/128/256).
void check_cuda_dtype_head_dim(const char* op, const at::Tensor& q, int64_t head_dim,
                               bool supported, const char* head_dim_name) {
  SQUASH_CHECK_VALUE(is_half_type(q.scalar_type()), "squash::", op,
                    ": on CUDA q must be float16 or bfloat16, got ", q.scalar_type(),
                    " (float32 runs only on CPU)");
  SQUASH_CHECK_VALUE(supported, "squash::", op, ": on CUDA head_dim (", head_dim_name,
                    ") must be 64, 128 or 256, got ", head_dim);
}

sa::AttentionDtype kernel_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kHalf ? sa::AttentionDtype::kFloat16
                                      : sa::AttentionDtype::kBFloat16;
}

float resolve_scale(std::optional<double> softmax_scale, int64_t head_dim) {
  return static_cast<float>(softmax_scale.has_value()
                                ? *softmax_scale
                                : 1.0 / std::sqrt(static_cast<double>(head_dim)));
}

int sm_count(int device) {
  int n = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
  SQUASH_CHECK(err == cudaSuccess, "squash::", kOp, ": cudaDeviceGetAttribute failed: ",
              cudaGetErrorString(err));
  return n;
}

constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxSeqlen = int64_t{1} << 30;  // the prefill kernel's row/key indices are int

// q/k/v/out of attention and attention_decode (4-D, with batch) or attention_varlen (3-D packed
// rows, batch stride 0): the strides of dims [.., seq, head, D].
void set_strides(const at::Tensor& t, int64_t& batch, int64_t& seq, int64_t& head) {
  const int64_t o = t.dim() - 3;  // 1 for [B, S, H, D], 0 for [T, H, D]
  batch = o ? lead_stride(t, 0) : 0;
  seq = lead_stride(t, o);
  head = lead_stride(t, o + 1);
}

sa::AttentionPrefillParams prefill_params(const char* op, const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& v, const at::Tensor& out,
                                          const at::Tensor& lse,
                                          std::optional<double> softmax_scale, bool causal) {
  const int64_t D = q.size(-1);
  check_cuda_dtype_head_dim(op, q, D, sa::attention_prefill_supports_head_dim(static_cast<int>(D)),
                            q.dim() == 4 ? "q.shape[3]" : "q.shape[2]");
  // check_attention*_args refused a scale that is not finite and > 0: the prefill kernel masks a
  // score by s * scale = -inf, which needs scale > 0 (0 * -inf is NaN).
  const float scale = resolve_scale(softmax_scale, D);
  check_vector_aligned(op, "q", q);
  check_vector_aligned(op, "k", k);
  check_vector_aligned(op, "v", v);
  sa::AttentionPrefillParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  set_strides(q, p.q_batch_stride, p.q_seq_stride, p.q_head_stride);
  set_strides(k, p.k_batch_stride, p.k_seq_stride, p.k_head_stride);
  set_strides(v, p.v_batch_stride, p.v_seq_stride, p.v_head_stride);
  set_strides(out, p.out_batch_stride, p.out_seq_stride, p.out_head_stride);
  p.heads_q = static_cast<int>(q.size(-2));
  p.heads_kv = static_cast<int>(k.size(-2));
  p.head_dim = static_cast<int>(D);
  p.softmax_scale = scale;
  p.causal = causal;
  return p;
}

void launch_prefill(const char* op, const sa::AttentionPrefillParams& p, const at::Tensor& q,
                    const at::Tensor& k) {
  const cudaError_t err =
      sa::attention_prefill(p, kernel_dtype(q), c10::cuda::getCurrentCUDAStream());
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA kernel failed: ",
              cudaGetErrorString(err), " (q ", q.sizes(), ", k ", k.sizes(), ")");
}

std::tuple<at::Tensor, at::Tensor> attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v,
                                                  std::optional<double> softmax_scale,
                                                  bool causal) {
  constexpr const char* op = "attention";
  check_attention_args(q, k, v, softmax_scale);
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3), Sk = k.size(1);
  SQUASH_CHECK_VALUE(Sq <= kMaxSeqlen && Sk <= kMaxSeqlen && B * Hq <= kIntMax, "squash::", op,
                    ": q/k are too large for the CUDA kernel (seqlens <= 2^30, batch * heads "
                    "< 2^31), got q ",
                    q.sizes(), " and k ", k.sizes());
  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({B, Sq, Hq, D}, q.options());
  auto lse = at::empty({B, Hq, Sq}, q.options().dtype(at::kFloat));
  sa::AttentionPrefillParams p = prefill_params(op, q, k, v, out, lse, softmax_scale, causal);
  if (B == 0 || Sq == 0) return {out, lse};
  p.batch = static_cast<int>(B);
  p.seqlen_q = static_cast<int>(Sq);
  p.seqlen_k = static_cast<int>(Sk);
  p.lse_batch_stride = Hq * Sq;
  p.lse_head_stride = Sq;
  launch_prefill(op, p, q, k);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> attention_varlen_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_seqlens_q,
    const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
    std::optional<double> softmax_scale, bool causal) {
  constexpr const char* op = "attention_varlen";
  check_attention_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              softmax_scale);
  const int64_t Tq = q.size(0), Hq = q.size(1), D = q.size(2), B = cu_seqlens_q.size(0) - 1;
  SQUASH_CHECK_VALUE(max_seqlen_q <= kMaxSeqlen && max_seqlen_k <= kMaxSeqlen, "squash::", op,
                    ": on CUDA max_seqlen_q and max_seqlen_k must be <= 2^30, got ", max_seqlen_q,
                    " and ", max_seqlen_k);
  SQUASH_CHECK_VALUE(B * Hq <= kIntMax, "squash::", op,
                    ": batch * heads_q must be < 2^31 on CUDA, got batch ", B, " and heads ", Hq);
  const c10::cuda::CUDAGuard guard(q.device());
  // Rows outside every sequence are not written (the CPU op zeroes them; filling them here would
  // cost a pass over out and lse for rows nobody reads).
  auto out = at::empty({Tq, Hq, D}, q.options());
  auto lse = at::empty({Hq, Tq}, q.options().dtype(at::kFloat));
  sa::AttentionPrefillParams p = prefill_params(op, q, k, v, out, lse, softmax_scale, causal);
  if (B == 0 || Tq == 0 || max_seqlen_q == 0) return {out, lse};
  p.cu_seqlens_q = cu_seqlens_q.data_ptr<int32_t>();
  p.cu_seqlens_k = cu_seqlens_k.data_ptr<int32_t>();
  p.batch = static_cast<int>(B);
  p.seqlen_q = static_cast<int>(max_seqlen_q);
  p.seqlen_k = static_cast<int>(max_seqlen_k);
  p.lse_batch_stride = 0;
  p.lse_head_stride = Tq;
  launch_prefill(op, p, q, k);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> attention_decode_cuda(const at::Tensor& q,
                                                         const at::Tensor& k_cache,
                                                         const at::Tensor& v_cache,
                                                         const at::Tensor& cache_seqlens,
                                                         std::optional<double> softmax_scale,
                                                         bool causal) {
  check_attention_decode_args(q, k_cache, v_cache, cache_seqlens, softmax_scale);
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Smax = k_cache.size(1), Hkv = k_cache.size(2);
  check_cuda_dtype_head_dim(kOp, q, D, sa::attention_decode_supports_head_dim(static_cast<int>(D)),
                            "q.shape[3]");
  SQUASH_CHECK_VALUE(B <= kIntMax && Sq <= kIntMax && Hq <= kIntMax, "squash::", kOp,
                    ": q is too large for the CUDA kernel, got shape ", q.sizes());
  SQUASH_CHECK_VALUE(Smax <= (int64_t{1} << 30), "squash::", kOp,
                    ": on CUDA k_cache.shape[1] (max_seqlen) must be <= 2^30, got ", Smax);
  check_vector_aligned(kOp, "q", q);
  check_vector_aligned(kOp, "k_cache", k_cache);
  check_vector_aligned(kOp, "v_cache", v_cache);

  const c10::cuda::CUDAGuard guard(q.device());
  auto out = at::empty({B, Sq, Hq, D}, q.options());
  auto lse = at::empty({B, Hq, Sq}, q.options().dtype(at::kFloat));
  if (B == 0 || Sq == 0) return {out, lse};

  sa::AttentionDecodeParams p;
  p.q = q.data_ptr();
  p.k = k_cache.data_ptr();
  p.v = v_cache.data_ptr();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.cache_seqlens = cache_seqlens.data_ptr<int32_t>();
  set_strides(q, p.q_batch_stride, p.q_seq_stride, p.q_head_stride);
  set_strides(k_cache, p.k_batch_stride, p.k_seq_stride, p.k_head_stride);
  set_strides(v_cache, p.v_batch_stride, p.v_seq_stride, p.v_head_stride);
  set_strides(out, p.out_batch_stride, p.out_seq_stride, p.out_head_stride);
  p.batch = static_cast<int>(B);
  p.seqlen_q = static_cast<int>(Sq);
  p.heads_q = static_cast<int>(Hq);
  p.heads_kv = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(D);
  p.max_seqlen = static_cast<int>(Smax);
  p.softmax_scale = resolve_scale(softmax_scale, D);
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

  const cudaError_t err =
      sa::attention_decode(p, kernel_dtype(q), c10::cuda::getCurrentCUDAStream());
  SQUASH_CHECK(err == cudaSuccess, "squash::", kOp, ": CUDA kernel failed: ",
              cudaGetErrorString(err), " (q ", q.sizes(), ", k_cache ", k_cache.sizes(),
              ", num_splits ", p.num_splits, ")");
  return {out, lse};
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("attention", &squash::attention_cuda);
  m.impl("attention_varlen", &squash::attention_varlen_cuda);
  m.impl("attention_decode", &squash::attention_decode_cuda);
}
