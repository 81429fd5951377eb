// Argument validation of the attention ops, shared by the CPU and CUDA implementations.
// Only metadata is checked here (dtype, shape, device, strides): nothing reads tensor contents,
// so the CUDA path never synchronizes. Content checks (cu_seqlens monotonic, cache_seqlens within
// the cache) need the values and live in the CPU implementation (attention_cpu.cpp).
//
// Decisions shared by every implementation:
// - Zero-sized batch and sequence dimensions are allowed (empty outputs; a query that sees no key
//   gets out 0 and lse -inf). Heads and head_dim must be positive.
// - head_dim is limited to 1..256 here (the CPU path handles any of them); a CUDA kernel that
//   supports fewer head dims checks that itself.
// - Leading strides are arbitrary (slices of a packed qkv or of a larger KV cache are fine); the
//   last dim must be contiguous (stride 1).
#include "ops/attention.h"

#include "ops/checks.h"

#include <cmath>

namespace squash {
namespace {

constexpr int64_t kMaxHeadDim = 256;

// q, k, v of one op. `seq_dim`/`head_dim` index the sequence and head axes (4-D: 1 and 2;
// varlen 3-D: 0 and 1). A batch axis (dim 0 of the 4-D layouts) must match across the three.
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const char* k_name, const char* v_name, int64_t dim, const char* q_layout,
               const char* kv_layout) {
  check_dtype(op, "q", q, {at::kHalf, at::kBFloat16, at::kFloat});
  SQUASH_CHECK_VALUE(k.scalar_type() == q.scalar_type(), "squash::", op, ": ", k_name,
                    " must have q's dtype ", q.scalar_type(), ", got ", k.scalar_type());
  SQUASH_CHECK_VALUE(v.scalar_type() == q.scalar_type(), "squash::", op, ": ", v_name,
                    " must have q's dtype ", q.scalar_type(), ", got ", v.scalar_type());
  check_dim(op, "q", q, dim, q_layout);
  check_dim(op, k_name, k, dim, kv_layout);
  check_dim(op, v_name, v, dim, kv_layout);
  check_same_device(op, k_name, k, q, "q");
  check_same_device(op, v_name, v, q, "q");
  SQUASH_CHECK_VALUE(k.sizes() == v.sizes(), "squash::", op, ": ", v_name, " must have ", k_name,
                    "'s shape ", k.sizes(), ", got ", v.sizes());

  const int64_t hd = dim - 1, heads = dim - 2;
  const int64_t D = q.size(hd);
  SQUASH_CHECK_VALUE(D >= 1 && D <= kMaxHeadDim, "squash::", op, ": head_dim (q.shape[", hd,
                    "]) must be in [1, ", kMaxHeadDim, "], got ", D);
  check_size(op, k_name, k, hd, D, "head_dim of q");
  if (dim == 4) check_size(op, k_name, k, 0, q.size(0), "batch of q");

  const int64_t hq = q.size(heads), hkv = k.size(heads);
  SQUASH_CHECK_VALUE(hq > 0, "squash::", op, ": q must have at least one head, got shape ",
                    q.sizes());
  SQUASH_CHECK_VALUE(hkv > 0, "squash::", op, ": ", k_name,
                    " must have at least one head, got shape ", k.sizes());
  SQUASH_CHECK_VALUE(hq % hkv == 0, "squash::", op, ": heads of q (", hq,
                    ") must be a multiple of heads of ", k_name, " (", hkv, ")");

  check_last_dim_contiguous(op, "q", q);
  check_last_dim_contiguous(op, k_name, k);
  check_last_dim_contiguous(op, v_name, v);
}

// An int32 1-D contiguous index tensor on q's device, of `len` entries (len < 0: at least one).
void check_index_tensor(const char* op, const char* arg, const at::Tensor& t, int64_t len,
                        const char* what, const at::Tensor& q) {
  check_dtype(op, arg, t, {at::kInt});
  check_dim(op, arg, t, 1, what);
  check_same_device(op, arg, t, q, "q");
  if (len >= 0)
    check_size(op, arg, t, 0, len, what);
  else
    SQUASH_CHECK_VALUE(t.size(0) >= 1, "squash::", op, ": ", arg, " must have ", what,
                      " >= 1 entries, got shape ", t.sizes());
  check_contiguous(op, arg, t);
}

void check_softmax_scale(const char* op, std::optional<double> softmax_scale) {
  if (!softmax_scale) return;
  const float s = static_cast<float>(*softmax_scale);
  SQUASH_CHECK_VALUE(std::isfinite(s) && s > 0.f, "squash::", op,
                    ": softmax_scale must be a finite number > 0 (or None for 1/sqrt(head_dim)), got ",
                    *softmax_scale);
}

}  // namespace

void check_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          std::optional<double> softmax_scale) {
  check_qkv("attention", q, k, v, "k", "v", 4, "[batch, seqlen_q, heads_q, head_dim]",
            "[batch, seqlen_k, heads_kv, head_dim]");
  check_softmax_scale("attention", softmax_scale);
}

void check_attention_varlen_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& cu_seqlens_q, const at::Tensor& cu_seqlens_k,
                                 int64_t max_seqlen_q, int64_t max_seqlen_k,
                                 std::optional<double> softmax_scale) {
  constexpr const char* op = "attention_varlen";
  check_qkv(op, q, k, v, "k", "v", 3, "[total_q, heads_q, head_dim]",
            "[total_k, heads_kv, head_dim]");
  check_index_tensor(op, "cu_seqlens_q", cu_seqlens_q, -1, "[batch + 1]", q);
  check_index_tensor(op, "cu_seqlens_k", cu_seqlens_k, cu_seqlens_q.size(0),
                     "[batch + 1] like cu_seqlens_q", q);
  SQUASH_CHECK_VALUE(max_seqlen_q >= 0, "squash::", op, ": max_seqlen_q must be >= 0, got ",
                    max_seqlen_q);
  SQUASH_CHECK_VALUE(max_seqlen_k >= 0, "squash::", op, ": max_seqlen_k must be >= 0, got ",
                    max_seqlen_k);
  check_softmax_scale(op, softmax_scale);
}

void check_attention_decode_args(const at::Tensor& q, const at::Tensor& k_cache,
                                 const at::Tensor& v_cache, const at::Tensor& cache_seqlens,
                                 std::optional<double> softmax_scale) {
  constexpr const char* op = "attention_decode";
  check_qkv(op, q, k_cache, v_cache, "k_cache", "v_cache", 4,
            "[batch, seqlen_q, heads_q, head_dim]", "[batch, max_seqlen, heads_kv, head_dim]");
  check_index_tensor(op, "cache_seqlens", cache_seqlens, q.size(0), "[batch]", q);
  check_softmax_scale(op, softmax_scale);
}

}  // namespace squash
