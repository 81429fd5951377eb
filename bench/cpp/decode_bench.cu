// Torch-free check and microbenchmark of attention_decode (csrc/kernels/attention).
//
// Build (repository root; not part of CMake):
//   mkdir -p build && nvcc -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr \
//     -gencode=arch=compute_90a,code=sm_90a -Icsrc/kernels bench/cpp/decode_bench.cu \
//     csrc/kernels/attention/decode_launch.cu csrc/kernels/attention/decode_hd*.cu \
//     -o build/decode_bench
// Run:
//   build/decode_bench --check          correctness vs a float64 host reference (exit 1 on failure)
//   build/decode_bench --bench          GB/s vs device copy bandwidth, heuristic num_splits
//   build/decode_bench --bench --sweep  also every forced num_splits in {1,2,4,...,128}
//   (no flag: --check then --bench)
//
// Bench cases: Sq 1, 32 q heads / 8 kv heads, head_dim 128, bf16 (fp16 with --fp16), KV length
// 1k..64k, batch 1..64, every sequence at the full length. Bytes = K + V actually read + q + out
// + lse. Inputs are rotated over enough copies (>= 256 MB in all) that L2 (50 MB) cannot serve
// them; each time is the median of per-launch cudaEvent intervals.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/decode.h"

namespace sa = squash::attention;

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,                  \
                   cudaGetErrorString(e_));                                            \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

namespace {

uint16_t to_bits(float f, bool bf16) {
  uint16_t u;
  if (bf16) {
    const __nv_bfloat16 h = __float2bfloat16_rn(f);
    std::memcpy(&u, &h, 2);
  } else {
    const __half h = __float2half_rn(f);
    std::memcpy(&u, &h, 2);
  }
  return u;
}

float from_bits(uint16_t u, bool bf16) {
  if (bf16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &u, 2);
    return __bfloat162float(h);
  }
  __half h;
  std::memcpy(&h, &u, 2);
  return __half2float(h);
}

constexpr uint16_t kNaNBits = 0xffff;  // NaN in both fp16 and bf16

int sm_count() {
  int dev = 0, n = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

// ------------------------------------------------------------------------------------------
// --check
// ------------------------------------------------------------------------------------------
struct CheckCase {
  bool bf16;
  int D, B, Sq, Hq, Hkv, Smax;
  std::vector<int> lens;  // per batch
  bool causal;
  float scale;     // <= 0: 1/sqrt(D)
  int splits;      // 0: heuristic
  bool strided;    // padded/permuted strides for q, k, v and out
};

// A 4-D [n0, n1, n2, D] view in a flat buffer: strides in elements (last dim contiguous).
struct View {
  int64_t s0, s1, s2, size;  // size: elements of the buffer
};

View make_view(int n0, int n1, int n2, int D, bool strided, int pad) {
  View v;
  if (!strided) {
    v.s2 = D;
    v.s1 = int64_t(n2) * D;
    v.s0 = int64_t(n1) * v.s1;
    v.size = int64_t(n0) * v.s0;
  } else {  // every row padded, heads padded, batches padded: gaps are filled with NaN
    v.s2 = D + 8 * pad;
    v.s1 = int64_t(n2) * v.s2 + 8;
    v.s0 = int64_t(n1) * v.s1 + 16;
    v.size = int64_t(n0) * v.s0;
  }
  if (v.size == 0) v.size = 8;  // keep a valid pointer for empty tensors
  return v;
}

bool run_check_case(const CheckCase& c, std::mt19937& rng, int num_sms) {
  const int D = c.D, B = c.B, Sq = c.Sq, Hq = c.Hq, Hkv = c.Hkv, Smax = c.Smax;
  const int G = Hq / Hkv;
  const float scale = c.scale > 0 ? c.scale : 1.f / std::sqrt(float(D));
  const View vq = make_view(B, Sq, Hq, D, c.strided, 1);
  const View vk = make_view(B, Smax, Hkv, D, c.strided, 2);
  const View vv = make_view(B, Smax, Hkv, D, c.strided, 1);
  const View vo = make_view(B, Sq, Hq, D, c.strided, 3);

  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  // Everything NaN first: gaps between strided rows and cache slots past each length must never
  // be read (a NaN there would reach the output).
  std::vector<uint16_t> hq(vq.size, kNaNBits), hk(vk.size, kNaNBits), hv(vv.size, kNaNBits);
  std::vector<float> fq(size_t(B) * Sq * Hq * D), fk(size_t(B) * Smax * Hkv * D),
      fv(size_t(B) * Smax * Hkv * D);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Sq; ++i)
      for (int h = 0; h < Hq; ++h)
        for (int d = 0; d < D; ++d) {
          const uint16_t u = to_bits(uni(rng), c.bf16);
          hq[b * vq.s0 + i * vq.s1 + h * vq.s2 + d] = u;
          fq[((size_t(b) * Sq + i) * Hq + h) * D + d] = from_bits(u, c.bf16);
        }
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < c.lens[b] && j < Smax; ++j)
      for (int h = 0; h < Hkv; ++h)
        for (int d = 0; d < D; ++d) {
          const size_t f = ((size_t(b) * Smax + j) * Hkv + h) * D + d;
          const uint16_t uk = to_bits(uni(rng), c.bf16), uv = to_bits(uni(rng), c.bf16);
          hk[b * vk.s0 + j * vk.s1 + h * vk.s2 + d] = uk;
          hv[b * vv.s0 + j * vv.s1 + h * vv.s2 + d] = uv;
          fk[f] = from_bits(uk, c.bf16);
          fv[f] = from_bits(uv, c.bf16);
        }

  sa::AttentionDecodeParams p;
  const int rows = Sq * G;
  p.num_splits = c.splits > 0 ? c.splits
                              : sa::decode_num_splits(B, Hkv, sa::decode_row_tiles(rows), Smax, D,
                                                      num_sms);
  const size_t ws_bytes = sa::attention_decode_workspace_bytes(B, Hq, Sq, D, p.num_splits);

  uint16_t *dq, *dk, *dv, *dout;
  float *dlse;
  int32_t* dlens;
  void* dws = nullptr;
  CK(cudaMalloc(&dq, vq.size * 2));
  CK(cudaMalloc(&dk, vk.size * 2));
  CK(cudaMalloc(&dv, vv.size * 2));
  CK(cudaMalloc(&dout, vo.size * 2));
  CK(cudaMalloc(&dlse, std::max<size_t>(1, size_t(B) * Hq * Sq) * 4));
  CK(cudaMalloc(&dlens, std::max(1, B) * 4));
  if (ws_bytes) CK(cudaMalloc(&dws, ws_bytes));
  CK(cudaMemcpy(dq, hq.data(), vq.size * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, hk.data(), vk.size * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, hv.data(), vv.size * 2, cudaMemcpyHostToDevice));
  if (B) CK(cudaMemcpy(dlens, c.lens.data(), B * 4, cudaMemcpyHostToDevice));
  // Poison the outputs and the workspace: anything not written stays NaN.
  CK(cudaMemset(dout, 0xff, vo.size * 2));
  CK(cudaMemset(dlse, 0xff, std::max<size_t>(1, size_t(B) * Hq * Sq) * 4));
  if (ws_bytes) CK(cudaMemset(dws, 0xff, ws_bytes));

  p.q = dq;
  p.k = dk;
  p.v = dv;
  p.out = dout;
  p.lse = dlse;
  p.cache_seqlens = dlens;
  p.q_batch_stride = vq.s0, p.q_seq_stride = vq.s1, p.q_head_stride = vq.s2;
  p.k_batch_stride = vk.s0, p.k_seq_stride = vk.s1, p.k_head_stride = vk.s2;
  p.v_batch_stride = vv.s0, p.v_seq_stride = vv.s1, p.v_head_stride = vv.s2;
  p.out_batch_stride = vo.s0, p.out_seq_stride = vo.s1, p.out_head_stride = vo.s2;
  p.batch = B, p.seqlen_q = Sq, p.heads_q = Hq, p.heads_kv = Hkv, p.head_dim = D;
  p.max_seqlen = Smax;
  p.softmax_scale = scale;
  p.causal = c.causal;
  p.workspace = dws;
  CK(sa::attention_decode(p, c.bf16 ? sa::DecodeDtype::kBFloat16 : sa::DecodeDtype::kFloat16, 0));
  CK(cudaDeviceSynchronize());

  std::vector<uint16_t> hout(vo.size);
  std::vector<float> hlse(size_t(B) * Hq * Sq);
  CK(cudaMemcpy(hout.data(), dout, vo.size * 2, cudaMemcpyDeviceToHost));
  if (!hlse.empty())
    CK(cudaMemcpy(hlse.data(), dlse, hlse.size() * 4, cudaMemcpyDeviceToHost));

  // Tolerances: the reference uses the same rounded inputs in float64, so the error is the
  // output's rounding to the dtype (|out| <= 1: 2^-9 bf16, 2^-12 fp16) plus fp32 accumulation
  // and exp2 approximation error (~1e-6 relative).
  const double atol = c.bf16 ? 6e-3 : 1.5e-3;
  double max_err = 0, max_lse_err = 0;
  long bad = 0;
  std::vector<double> s(Smax > 0 ? Smax : 1), o(D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < Sq; ++i) {
        const int len = std::min(std::max(c.lens[b], 0), Smax);
        const int vis = std::max(0, std::min(len, c.causal ? len - Sq + i + 1 : len));
        const int hk_ = h / G;
        double m = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < vis; ++j) {
          double a = 0;
          for (int d = 0; d < D; ++d)
            a += double(fq[((size_t(b) * Sq + i) * Hq + h) * D + d]) *
                 fk[((size_t(b) * Smax + j) * Hkv + hk_) * D + d];
          s[j] = a * scale;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        std::fill(o.begin(), o.end(), 0.0);
        for (int j = 0; j < vis; ++j) {
          const double w = std::exp(s[j] - m);
          sum += w;
          for (int d = 0; d < D; ++d) o[d] += w * fv[((size_t(b) * Smax + j) * Hkv + hk_) * D + d];
        }
        const double ref_lse = vis > 0 ? m + std::log(sum) : -std::numeric_limits<double>::infinity();
        const float got_lse = hlse[(size_t(b) * Hq + h) * Sq + i];
        if (vis == 0) {
          if (!(std::isinf(got_lse) && got_lse < 0)) ++bad;
        } else {
          const double e = std::fabs(double(got_lse) - ref_lse);
          if (!(e <= 1e-3 + 1e-5 * std::fabs(ref_lse))) ++bad;
          if (std::isnan(e)) max_lse_err = INFINITY; else max_lse_err = std::max(max_lse_err, e);
        }
        for (int d = 0; d < D; ++d) {
          const double ref = vis > 0 ? o[d] / sum : 0.0;
          const double got = from_bits(hout[b * vo.s0 + i * vo.s1 + h * vo.s2 + d], c.bf16);
          const double e = std::fabs(got - ref);
          const bool ok = vis > 0 ? e <= atol : got == 0.0;
          if (!ok) ++bad;
          if (std::isnan(e)) max_err = INFINITY; else max_err = std::max(max_err, e);
        }
      }

  std::string lens;
  for (int b = 0; b < B && b < 4; ++b) lens += (b ? "," : "") + std::to_string(c.lens[b]);
  if (B > 4) lens += ",...";
  std::printf("%s %s D=%d B=%d Sq=%d Hq=%d Hkv=%d Smax=%d lens=[%s] causal=%d scale=%.3g "
              "splits=%d strided=%d: max|out err|=%.2e max|lse err|=%.2e%s\n",
              bad ? "FAIL" : "ok  ", c.bf16 ? "bf16" : "fp16", D, B, Sq, Hq, Hkv, Smax,
              lens.c_str(), int(c.causal), scale, p.num_splits, int(c.strided), max_err,
              max_lse_err, bad ? (" (" + std::to_string(bad) + " bad values)").c_str() : "");
  CK(cudaFree(dq));
  CK(cudaFree(dk));
  CK(cudaFree(dv));
  CK(cudaFree(dout));
  CK(cudaFree(dlse));
  CK(cudaFree(dlens));
  if (dws) CK(cudaFree(dws));
  return bad == 0;
}

int run_checks() {
  std::mt19937 rng(1234);
  const int sms = sm_count();
  std::vector<CheckCase> cases;
  auto add = [&](bool bf16, int D, int B, int Sq, int Hq, int Hkv, int Smax, std::vector<int> lens,
                 bool causal, float scale, int splits, bool strided) {
    cases.push_back({bf16, D, B, Sq, Hq, Hkv, Smax, std::move(lens), causal, scale, splits, strided});
  };
  for (bool bf16 : {true, false}) {
    // The target shape (group 4 -> 4 rows per CTA), single split and several, heuristic.
    add(bf16, 128, 2, 1, 32, 8, 1100, {1025, 97}, true, 0, 1, false);
    add(bf16, 128, 2, 1, 32, 8, 1100, {1025, 97}, true, 0, 7, false);
    add(bf16, 128, 2, 1, 32, 8, 1100, {1100, 1}, true, 0, 0, false);
    // Peaky softmax (large scale): the running max changes often, rescaling is exercised.
    add(bf16, 128, 2, 1, 8, 2, 700, {700, 333}, false, 3.0f, 5, false);
    // Speculative decoding: Sq > 1, causal and not; lengths below Sq (rows that see nothing).
    add(bf16, 128, 3, 4, 16, 4, 300, {300, 2, 0}, true, 0, 1, false);
    add(bf16, 128, 3, 4, 16, 4, 300, {300, 2, 0}, true, 0, 3, true);
    add(bf16, 128, 3, 8, 16, 4, 300, {257, 8, 5}, false, 0, 4, false);
    add(bf16, 128, 2, 8, 32, 8, 200, {200, 9}, true, 0, 0, true);  // 32 rows: 4 row tiles
    // MHA (group 1), group 8 (8 rows), group 5 with Sq 3 (15 rows: 2 tiles of 8), MQA.
    add(bf16, 128, 2, 1, 4, 4, 513, {513, 64}, true, 0, 2, false);
    add(bf16, 128, 2, 1, 16, 2, 513, {500, 511}, true, 0, 3, false);
    add(bf16, 128, 2, 3, 10, 2, 129, {129, 3}, true, 0, 2, true);
    add(bf16, 128, 1, 2, 8, 1, 400, {399}, true, 0, 0, false);
    // Head dims 64 and 256.
    add(bf16, 64, 2, 1, 8, 2, 1000, {1000, 65}, true, 0, 3, true);
    add(bf16, 64, 2, 2, 16, 2, 130, {130, 1}, true, 0, 1, false);
    add(bf16, 256, 2, 1, 8, 2, 300, {300, 17}, true, 0, 2, true);
    add(bf16, 256, 1, 3, 16, 2, 100, {100}, false, 0, 1, false);
    // Every length 0, Smax 0, many empty splits, the most splits.
    add(bf16, 128, 2, 1, 8, 2, 64, {0, 0}, true, 0, 4, false);
    add(bf16, 128, 1, 1, 8, 2, 0, {0}, true, 0, 1, false);
    add(bf16, 128, 2, 2, 8, 2, 97, {97, 40}, true, 0, 128, false);
    add(bf16, 128, 3, 1, 8, 8, 4097, {4097, 4000, 1}, true, 0, 0, false);
  }
  int failed = 0;
  for (const auto& c : cases) failed += !run_check_case(c, rng, sms);
  std::printf("check: %zu cases, %d failed\n", cases.size(), failed);
  return failed ? 1 : 0;
}

// ------------------------------------------------------------------------------------------
// --bench
// ------------------------------------------------------------------------------------------
__global__ void fill_random(uint16_t* p, size_t n, uint32_t seed, bool bf16) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed ^ uint32_t(i >> 32) * 40503u;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    const float f = (x & 0xffffff) * (2.f / 16777216.f) - 1.f;
    if (bf16) {
      const __nv_bfloat16 h = __float2bfloat16_rn(f);
      p[i] = *reinterpret_cast<const uint16_t*>(&h);
    } else {
      const __half h = __float2half_rn(f);
      p[i] = *reinterpret_cast<const uint16_t*>(&h);
    }
  }
}

void fill(uint16_t* p, size_t n, uint32_t seed, bool bf16) {
  fill_random<<<1024, 256>>>(p, n, seed, bf16);
  CK(cudaGetLastError());
}

// Median of per-launch times (ms) of fn(iteration).
template <typename F>
float median_ms(F&& fn, int iters) {
  std::vector<cudaEvent_t> ev(iters + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  for (int i = 0; i < 3; ++i) fn(i);  // warm-up
  CK(cudaEventRecord(ev[0]));
  for (int i = 0; i < iters; ++i) {
    fn(i);
    CK(cudaEventRecord(ev[i + 1]));
  }
  CK(cudaEventSynchronize(ev[iters]));
  std::vector<float> t(iters);
  for (int i = 0; i < iters; ++i) CK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
  for (auto& e : ev) CK(cudaEventDestroy(e));
  std::nth_element(t.begin(), t.begin() + iters / 2, t.end());
  return t[iters / 2];
}

double copy_gbps() {
  const size_t bytes = size_t(1) << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 1, bytes));
  const float ms = median_ms([&](int) { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 20);
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
}

int run_bench(bool bf16, bool sweep) {
  const int sms = sm_count();
  const double copy = copy_gbps();
  std::printf("device copy bandwidth (read + write): %.0f GB/s, %d SMs\n", copy, sms);
  std::printf("%-6s %-7s %-7s %-10s %-10s %-9s %s\n", "batch", "kv_len", "splits", "us", "GB/s",
              "%copy", "");
  const int Hq = 32, Hkv = 8, D = 128, Sq = 1;
  const size_t kMinRotateBytes = size_t(256) << 20, kMaxBytes = size_t(24) << 30;
  for (int B : {1, 4, 16, 64})
    for (int L : {1024, 2048, 4096, 8192, 16384, 32768, 65536}) {
      const size_t kv_elems = size_t(B) * L * Hkv * D;  // one of K, V
      const size_t case_bytes = 2 * kv_elems * 2;
      if (case_bytes > kMaxBytes) continue;
      const int copies = int(std::max<size_t>(1, (kMinRotateBytes + case_bytes - 1) / case_bytes));
      const size_t q_elems = size_t(B) * Sq * Hq * D;
      uint16_t *k, *v, *q, *out;
      float* lse;
      int32_t* lens;
      CK(cudaMalloc(&k, kv_elems * 2 * copies));
      CK(cudaMalloc(&v, kv_elems * 2 * copies));
      CK(cudaMalloc(&q, q_elems * 2));
      CK(cudaMalloc(&out, q_elems * 2));
      CK(cudaMalloc(&lse, size_t(B) * Hq * Sq * 4));
      CK(cudaMalloc(&lens, B * 4));
      fill(k, kv_elems * copies, 1, bf16);
      fill(v, kv_elems * copies, 2, bf16);
      fill(q, q_elems, 3, bf16);
      std::vector<int32_t> hl(B, L);
      CK(cudaMemcpy(lens, hl.data(), B * 4, cudaMemcpyHostToDevice));

      sa::AttentionDecodeParams p;
      p.q = q, p.out = out, p.lse = lse, p.cache_seqlens = lens;
      p.q_head_stride = D, p.q_seq_stride = Hq * D, p.q_batch_stride = int64_t(Sq) * Hq * D;
      p.out_head_stride = D, p.out_seq_stride = Hq * D, p.out_batch_stride = int64_t(Sq) * Hq * D;
      p.k_head_stride = p.v_head_stride = D;
      p.k_seq_stride = p.v_seq_stride = int64_t(Hkv) * D;
      p.k_batch_stride = p.v_batch_stride = int64_t(L) * Hkv * D;
      p.batch = B, p.seqlen_q = Sq, p.heads_q = Hq, p.heads_kv = Hkv, p.head_dim = D;
      p.max_seqlen = L;
      p.softmax_scale = 1.f / std::sqrt(float(D));
      p.causal = true;
      const int heuristic = sa::decode_num_splits(B, Hkv, sa::decode_row_tiles(Sq * Hq / Hkv), L, D, sms);
      std::vector<int> split_list = {heuristic};
      if (sweep)
        for (int s = 1; s <= sa::kDecodeMaxSplits; s *= 2)
          if (s != heuristic) split_list.push_back(s);
      void* ws = nullptr;
      CK(cudaMalloc(&ws, std::max<size_t>(16, sa::attention_decode_workspace_bytes(
                                                  B, Hq, Sq, D, sa::kDecodeMaxSplits))));
      p.workspace = ws;
      const double bytes = double(case_bytes) + 2.0 * q_elems * 2 + double(B) * Hq * Sq * 4;
      const int iters = case_bytes > (size_t(1) << 30) ? 10 : 50;
      for (int s : split_list) {
        p.num_splits = s;
        const float ms = median_ms(
            [&](int it) {
              const int c = it % copies;
              p.k = k + c * kv_elems;
              p.v = v + c * kv_elems;
              CK(sa::attention_decode(p, bf16 ? sa::DecodeDtype::kBFloat16
                                              : sa::DecodeDtype::kFloat16, 0));
            },
            iters);
        const double gbps = bytes / (ms * 1e-3) / 1e9;
        std::printf("%-6d %-7d %-7d %-10.1f %-10.0f %-9.1f %s\n", B, L, s, ms * 1e3, gbps,
                    100.0 * gbps / copy, s == heuristic ? "(heuristic)" : "");
      }
      CK(cudaDeviceSynchronize());
      CK(cudaFree(k));
      CK(cudaFree(v));
      CK(cudaFree(q));
      CK(cudaFree(out));
      CK(cudaFree(lse));
      CK(cudaFree(lens));
      CK(cudaFree(ws));
    }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false, bench = false, sweep = false, bf16 = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") check = true;
    else if (a == "--bench") bench = true;
    else if (a == "--sweep") sweep = bench = true;
    else if (a == "--fp16") bf16 = false;
    else {
      std::fprintf(stderr, "usage: %s [--check] [--bench] [--sweep] [--fp16]\n", argv[0]);
      return 2;
    }
  }
  if (!check && !bench) check = bench = true;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  int rc = 0;
  if (check) rc = run_checks();
  if (bench) rc |= run_bench(bf16, sweep);
  return rc;
}
