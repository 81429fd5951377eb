// CPU implementation of attention, attention_varlen and attention_decode: the exact reference of
// the CUDA kernels (semantics in python/squash_ops/ops/attention.py).
//
// The three ops are one computation with different bounds: for each (sequence, q head) a block of
// Sq query rows attends to Sk key rows of kv head h / (Hq / Hkv), causal bottom-right aligned
// (query i sees key j iff j <= i + Sk - Sq). attend_sequence() does that block; the ops only work
// out pointers, strides and lengths and run it over (sequence, head) with at::parallel_for.
// GQA/MQA read the shared kv head in place (no repeated K/V). Inputs keep their leading strides.
//
// On AVX2 CPUs, head dims that are whole vectors take the vectorized block instead
// (csrc/kernels/cpu/attention_rows.h: same semantics, fp32 sums in another order); the scalar ISA
// path (SQUASH_CPU_ISA=scalar) runs attend_sequence below, the reference the tests force too.
//
// Numerics: scores, softmax and P @ V in fp32 (fp16/bf16 K/V rows are converted to fp32 once
// per task), exact two-pass softmax (max, then exp/sum) per query row, output rounded once to
// q's dtype. lse = max + log(sum) in fp32, natural log of the scaled scores.
#include <ATen/ATen.h>
#include "ops/message.h"
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/attention_rows.h"
#include "cpu/isa.h"
#include "ops/attention.h"
#include "ops/cpu_common.h"

namespace squash {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Dot product with 8 independent partial sums, so the compiler vectorizes it without
// reassociating a single accumulator (no -ffast-math).
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float tail = 0.f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

inline void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
inline void to_float(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// One (sequence, head) block. Row r of q/k/v/out starts at ptr + r * stride and holds D
// contiguous elements; lse holds Sq contiguous floats.
template <typename T>
struct SeqBlock {
  const T* q;
  int64_t q_stride;
  const T* k;
  int64_t k_stride;
  const T* v;
  int64_t v_stride;
  T* out;
  int64_t out_stride;
  float* lse;
  int64_t sq, sk;
};

// Per-thread buffers, reused across the tasks of one parallel_for chunk.
struct Scratch {
  std::vector<float> k, v, scores, q, acc;
  cpu_kernels::AttnScratch fast;
};

template <typename T>
void attend_sequence(const SeqBlock<T>& a, int64_t D, float scale, bool causal, Scratch& s) {
  if (a.sq == 0) return;
  // K and V as fp32 rows: fp32 inputs are read in place with their stride; fp16/bf16 rows are
  // converted once here (every row is visible to the last query, so all sk rows are needed).
  const float* kf;
  const float* vf;
  int64_t kst, vst;
  if constexpr (std::is_same_v<T, float>) {
    kf = a.k, kst = a.k_stride, vf = a.v, vst = a.v_stride;
  } else {
    s.k.resize(a.sk * D);
    s.v.resize(a.sk * D);
    for (int64_t j = 0; j < a.sk; ++j) {
      to_float(a.k + j * a.k_stride, s.k.data() + j * D, D);
      to_float(a.v + j * a.v_stride, s.v.data() + j * D, D);
    }
    kf = s.k.data(), kst = D, vf = s.v.data(), vst = D;
  }
  s.scores.resize(a.sk);
  s.q.resize(D);
  s.acc.resize(D);
  float* scores = s.scores.data();
  float* qf = s.q.data();
  float* acc = s.acc.data();

  for (int64_t i = 0; i < a.sq; ++i) {
    // Keys visible to query i: [0, n).
    const int64_t n = causal ? std::clamp<int64_t>(i + a.sk - a.sq + 1, 0, a.sk) : a.sk;
    T* o = a.out + i * a.out_stride;
    if (n == 0) {  // sees no key: defined as out 0, lse -inf
      std::fill(o, o + D, T(0));
      a.lse[i] = kNegInf;
      continue;
    }
    to_float(a.q + i * a.q_stride, qf, D);
    float m = kNegInf;
    for (int64_t j = 0; j < n; ++j) {
      const float sc = dot(qf, kf + j * kst, D) * scale;
      scores[j] = sc;
      m = std::max(m, sc);
    }
    float l = 0.f;
    std::fill(acc, acc + D, 0.f);
    for (int64_t j = 0; j < n; ++j) {
      const float p = std::exp(scores[j] - m);
      l += p;
      axpy(p, vf + j * vst, acc, D);
    }
    const float inv_l = 1.f / l;  // l >= 1: the max term contributes exp(0)
    for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[d] * inv_l);
    a.lse[i] = m + std::log(l);
  }
}

// One block on the path chosen for the op call: `fast` = the vectorized kernel (float32 / float16
// / bfloat16 inputs; float64 always takes the reference).
template <typename T>
void attend(const SeqBlock<T>& a, int64_t D, float scale, bool causal, bool fast, Scratch& s) {
  if constexpr (std::is_same_v<T, double>) {
    attend_sequence(a, D, scale, causal, s);
  } else {
    if (!fast) return attend_sequence(a, D, scale, causal, s);
    const cpu_kernels::AttnBlock blk{a.q, a.q_stride, a.k, a.k_stride, a.v, a.v_stride,
                                     a.out, a.out_stride, a.lse, a.sq, a.sk};
    cpu_kernels::attend_block_avx2(blk, cpu::kernel_dtype(c10::CppTypeToScalarType<T>::value), D, scale, causal,
                                   s.fast);
  }
}

bool use_fast_path(int64_t D) {
  return cpu_kernels::active_isa() >= cpu_kernels::Isa::kAvx2 && cpu_kernels::attend_block_supported(D);
}

float resolve_scale(std::optional<double> softmax_scale, int64_t D) {
  return static_cast<float>(softmax_scale ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(D)));
}

// Runs body(task, scratch) for task in [0, n_tasks), each task costing ~work multiply-adds; the
// grain keeps chunks above ~64k of them so small problems do not pay for thread hand-off.
template <typename F>
void parallel_tasks(int64_t n_tasks, int64_t work, const F& body) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, work));
  at::parallel_for(0, n_tasks, grain, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    for (int64_t t = begin; t < end; ++t) body(t, scratch);
  });
}

std::tuple<at::Tensor, at::Tensor> attention_cpu(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v,
                                                 std::optional<double> softmax_scale, bool causal) {
  check_attention_args(q, k, v, softmax_scale);
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Sk = k.size(1), group = Hq / k.size(2);
  const float scale = resolve_scale(softmax_scale, D);
  const bool fast = use_fast_path(D);
  auto out = at::empty({B, Sq, Hq, D}, q.options());
  auto lse = at::empty({B, Hq, Sq}, q.options().dtype(at::kFloat));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "squash::attention", [&] {
    const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>(),
                   *vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    float* lp = lse.data_ptr<float>();
    parallel_tasks(B * Hq, Sq * Sk * D, [&](int64_t t, Scratch& s) {
      const int64_t b = t / Hq, h = t % Hq, hk = h / group;
      SeqBlock<scalar_t> blk{qp + b * q.stride(0) + h * q.stride(2), q.stride(1),
                             kp + b * k.stride(0) + hk * k.stride(2), k.stride(1),
                             vp + b * v.stride(0) + hk * v.stride(2), v.stride(1),
                             op + (b * Sq * Hq + h) * D, Hq * D,
                             lp + (b * Hq + h) * Sq, Sq, Sk};
      attend(blk, D, scale, causal, fast, s);
    });
  });
  return {out, lse};
}

// cu_seqlens content: cu[0] >= 0, non-decreasing, cu[B] <= total, every length <= max_seqlen.
void check_cu_seqlens(const char* arg, const int32_t* cu, int64_t n, int64_t total,
                      const char* total_name, int64_t max_seqlen, const char* max_name) {
  SQUASH_CHECK_VALUE(cu[0] >= 0, "squash::attention_varlen: ", arg, "[0] must be >= 0, got ",
                    cu[0]);
  for (int64_t b = 0; b + 1 < n; ++b) {
    SQUASH_CHECK_VALUE(cu[b + 1] >= cu[b], "squash::attention_varlen: ", arg,
                      " must be non-decreasing, got ", arg, "[", b + 1, "]=", cu[b + 1], " < ",
                      arg, "[", b, "]=", cu[b]);
    SQUASH_CHECK_VALUE(cu[b + 1] - cu[b] <= max_seqlen, "squash::attention_varlen: sequence ", b,
                      " has length ", cu[b + 1] - cu[b], " (from ", arg, ") > ", max_name, "=",
                      max_seqlen);
  }
  SQUASH_CHECK_VALUE(cu[n - 1] <= total, "squash::attention_varlen: ", arg, "[-1]=", cu[n - 1],
                    " must be <= ", total_name, "=", total);
}

std::tuple<at::Tensor, at::Tensor> attention_varlen_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_seqlens_q,
    const at::Tensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
    std::optional<double> softmax_scale, bool causal) {
  check_attention_varlen_args(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                              softmax_scale);
  const int64_t Tq = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t group = Hq / k.size(1), B = cu_seqlens_q.size(0) - 1;
  const int32_t* cq = cu_seqlens_q.data_ptr<int32_t>();
  const int32_t* ck = cu_seqlens_k.data_ptr<int32_t>();
  check_cu_seqlens("cu_seqlens_q", cq, B + 1, Tq, "q.shape[0]", max_seqlen_q, "max_seqlen_q");
  check_cu_seqlens("cu_seqlens_k", ck, B + 1, k.size(0), "k.shape[0]", max_seqlen_k,
                   "max_seqlen_k");
  const float scale = resolve_scale(softmax_scale, D);
  const bool fast = use_fast_path(D);
  // Rows outside every sequence (cu_seqlens_q[0] > 0 or cu_seqlens_q[-1] < total_q) belong to
  // no sequence: they keep out 0 and lse -inf, like rows that see no key.
  auto out = at::zeros({Tq, Hq, D}, q.options());
  auto lse = at::full({Hq, Tq}, kNegInf, q.options().dtype(at::kFloat));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "squash::attention_varlen", [&] {
    const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>(),
                   *vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    float* lp = lse.data_ptr<float>();
    parallel_tasks(B * Hq, max_seqlen_q * max_seqlen_k * D, [&](int64_t t, Scratch& s) {
      const int64_t b = t / Hq, h = t % Hq, hk = h / group;
      const int64_t q0 = cq[b], k0 = ck[b];
      SeqBlock<scalar_t> blk{qp + q0 * q.stride(0) + h * q.stride(1), q.stride(0),
                             kp + k0 * k.stride(0) + hk * k.stride(1), k.stride(0),
                             vp + k0 * v.stride(0) + hk * v.stride(1), v.stride(0),
                             op + (q0 * Hq + h) * D, Hq * D,
                             lp + h * Tq + q0, cq[b + 1] - q0, ck[b + 1] - k0};
      attend(blk, D, scale, causal, fast, s);
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> attention_decode_cpu(const at::Tensor& q,
                                                        const at::Tensor& k_cache,
                                                        const at::Tensor& v_cache,
                                                        const at::Tensor& cache_seqlens,
                                                        std::optional<double> softmax_scale,
                                                        bool causal) {
  check_attention_decode_args(q, k_cache, v_cache, cache_seqlens, softmax_scale);
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Smax = k_cache.size(1), group = Hq / k_cache.size(2);
  const int32_t* lens = cache_seqlens.data_ptr<int32_t>();
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) {
    SQUASH_CHECK_VALUE(lens[b] >= 0 && lens[b] <= Smax, "squash::attention_decode: cache_seqlens[",
                      b, "]=", lens[b], " must be in [0, ", Smax, "] (k_cache.shape[1])");
    max_len = std::max<int64_t>(max_len, lens[b]);
  }
  const float scale = resolve_scale(softmax_scale, D);
  const bool fast = use_fast_path(D);
  auto out = at::empty({B, Sq, Hq, D}, q.options());
  auto lse = at::empty({B, Hq, Sq}, q.options().dtype(at::kFloat));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "squash::attention_decode", [&] {
    const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k_cache.data_ptr<scalar_t>(),
                   *vp = v_cache.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    float* lp = lse.data_ptr<float>();
    parallel_tasks(B * Hq, Sq * max_len * D, [&](int64_t t, Scratch& s) {
      const int64_t b = t / Hq, h = t % Hq, hk = h / group;
      SeqBlock<scalar_t> blk{qp + b * q.stride(0) + h * q.stride(2), q.stride(1),
                             kp + b * k_cache.stride(0) + hk * k_cache.stride(2), k_cache.stride(1),
                             vp + b * v_cache.stride(0) + hk * v_cache.stride(2), v_cache.stride(1),
                             op + (b * Sq * Hq + h) * D, Hq * D,
                             lp + (b * Hq + h) * Sq, Sq, lens[b]};
      attend(blk, D, scale, causal, fast, s);
    });
  });
  return {out, lse};
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CPU, m) {
  m.impl("attention", &squash::attention_cpu);
  m.impl("attention_varlen", &squash::attention_varlen_cpu);
  m.impl("attention_decode", &squash::attention_decode_cpu);
}
