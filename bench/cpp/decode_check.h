// Host side of the attention_decode correctness check, shared by the GPU run
// (decode_bench.cu --check) and the CPU emulation (emu/decode_emu.cpp): the cases, the input data
// with NaN poison where nothing may be read, and the float64 reference comparison. Plain C++
// (the fp16/bf16 conversions of cuda_fp16.h/cuda_bf16.h are host functions too).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/decode.h"

namespace decode_check {

namespace sa = squash::attention;

inline uint16_t to_bits(float f, bool bf16) {
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

inline float from_bits(uint16_t u, bool bf16) {
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

struct CheckCase {
  bool bf16;
  int D, B, Sq, Hq, Hkv, Smax;
  std::vector<int> lens;  // per batch
  bool causal;
  float scale;   // <= 0: 1/sqrt(D)
  int splits;    // 0: the heuristic's choice
  bool strided;  // padded strides for q, k, v and out (gaps hold NaN)
};

// The cases: every kernel variant (fp16/bf16 x head_dim 64/128/256 x 4/8 rows per CTA), one and
// several splits (empty splits too), Sq > 1 causal and not, lengths 0, 1, below Sq and = Smax,
// GQA groups 1, 4, 5, 8, 32, strided layouts. quick: the small ones with splits > 1 or Sq > 1
// (for compute-sanitizer and the CPU emulation, which are slow).
inline std::vector<CheckCase> check_cases(bool quick) {
  std::vector<CheckCase> cases;
  auto add = [&](bool bf16, int D, int B, int Sq, int Hq, int Hkv, int Smax, std::vector<int> lens,
                 bool causal, float scale, int splits, bool strided) {
    cases.push_back({bf16, D, B, Sq, Hq, Hkv, Smax, std::move(lens), causal, scale, splits, strided});
  };
  for (bool bf16 : {true, false}) {
    // The target shape (group 4 -> 4 rows per CTA): one split, several, the heuristic.
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
    add(bf16, 128, 2, 5, 8, 4, 50, {3, 50}, true, 0, 2, false);    // Sq > len
    // MHA (group 1), group 8 (8 rows), group 5 with Sq 3 (15 rows: 2 tiles of 8), MQA.
    add(bf16, 128, 2, 1, 4, 4, 513, {513, 64}, true, 0, 2, false);
    add(bf16, 128, 2, 1, 16, 2, 513, {500, 511}, true, 0, 3, false);
    add(bf16, 128, 2, 3, 10, 2, 129, {129, 3}, true, 0, 2, true);
    add(bf16, 128, 1, 2, 8, 1, 400, {399}, true, 0, 0, false);
    add(bf16, 128, 1, 1, 32, 1, 100, {100}, true, 0, 2, false);  // group 32: 4 row tiles
    // Head dims 64 and 256.
    add(bf16, 64, 2, 1, 8, 2, 1000, {1000, 65}, true, 0, 3, true);
    add(bf16, 64, 2, 2, 16, 2, 130, {130, 1}, true, 0, 1, false);
    add(bf16, 256, 2, 1, 8, 2, 300, {300, 17}, true, 0, 2, true);
    add(bf16, 256, 1, 3, 16, 2, 100, {100}, false, 0, 1, false);
    // Every length 0, Smax 0, many empty splits, the most splits, a long cache.
    add(bf16, 128, 2, 1, 8, 2, 64, {0, 0}, true, 0, 4, false);
    add(bf16, 128, 1, 1, 8, 2, 0, {0}, true, 0, 1, false);
    add(bf16, 128, 2, 2, 8, 2, 97, {97, 40}, true, 0, sa::kDecodeMaxSplits, false);
    add(bf16, 128, 3, 1, 8, 8, 4097, {4097, 4000, 1}, true, 0, 0, false);
  }
  if (quick) {
    std::vector<CheckCase> few;
    for (const auto& c : cases)
      if (c.Smax <= 1100 && (c.splits > 1 || c.Sq > 1)) few.push_back(c);
    cases = few;
  }
  return cases;
}

// A 4-D [n0, n1, n2, D] view in a flat buffer: strides in elements (last dim contiguous).
struct View {
  int64_t s0, s1, s2, size;  // size: elements of the buffer
};

inline View make_view(int n0, int n1, int n2, int D, bool strided, int pad) {
  View v;
  if (!strided) {
    v.s2 = D;
    v.s1 = int64_t(n2) * D;
    v.s0 = int64_t(n1) * v.s1;
  } else {  // rows, heads and batches padded (multiples of 8 elements, as the kernel needs)
    v.s2 = D + 8 * pad;
    v.s1 = int64_t(n2) * v.s2 + 8;
    v.s0 = int64_t(n1) * v.s1 + 16;
  }
  v.size = std::max<int64_t>(8, int64_t(n0) * v.s0);  // a valid pointer for empty tensors
  return v;
}

// Inputs of one case. Buffers start as NaN: gaps between strided rows and cache slots past each
// length must never be read (a NaN there would reach the output). f* hold the same rounded
// values densely as float, for the reference.
struct CheckData {
  View vq, vk, vv, vo;
  std::vector<uint16_t> q, k, v;
  std::vector<float> fq, fk, fv;
  float scale;
  int num_splits;
  size_t workspace_bytes;
};

inline CheckData make_check_data(const CheckCase& c, std::mt19937& rng, int num_sms) {
  const int D = c.D, B = c.B, Sq = c.Sq, Hq = c.Hq, Hkv = c.Hkv, Smax = c.Smax;
  CheckData d;
  d.scale = c.scale > 0 ? c.scale : 1.f / std::sqrt(float(D));
  d.vq = make_view(B, Sq, Hq, D, c.strided, 1);
  d.vk = make_view(B, Smax, Hkv, D, c.strided, 2);
  d.vv = make_view(B, Smax, Hkv, D, c.strided, 1);
  d.vo = make_view(B, Sq, Hq, D, c.strided, 3);
  d.q.assign(d.vq.size, kNaNBits);
  d.k.assign(d.vk.size, kNaNBits);
  d.v.assign(d.vv.size, kNaNBits);
  d.fq.assign(size_t(B) * Sq * Hq * D, 0.f);
  d.fk.assign(size_t(B) * Smax * Hkv * D, 0.f);
  d.fv.assign(size_t(B) * Smax * Hkv * D, 0.f);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Sq; ++i)
      for (int h = 0; h < Hq; ++h)
        for (int e = 0; e < D; ++e) {
          const uint16_t u = to_bits(uni(rng), c.bf16);
          d.q[b * d.vq.s0 + i * d.vq.s1 + h * d.vq.s2 + e] = u;
          d.fq[((size_t(b) * Sq + i) * Hq + h) * D + e] = from_bits(u, c.bf16);
        }
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < c.lens[b] && j < Smax; ++j)
      for (int h = 0; h < Hkv; ++h)
        for (int e = 0; e < D; ++e) {
          const size_t f = ((size_t(b) * Smax + j) * Hkv + h) * D + e;
          const uint16_t uk = to_bits(uni(rng), c.bf16), uv = to_bits(uni(rng), c.bf16);
          d.k[b * d.vk.s0 + j * d.vk.s1 + h * d.vk.s2 + e] = uk;
          d.v[b * d.vv.s0 + j * d.vv.s1 + h * d.vv.s2 + e] = uv;
          d.fk[f] = from_bits(uk, c.bf16);
          d.fv[f] = from_bits(uv, c.bf16);
        }
  const int rows = Sq * (Hq / Hkv);
  d.num_splits = c.splits > 0 ? c.splits
                              : sa::decode_num_splits(B, Hkv, sa::decode_row_tiles(rows), Smax, D,
                                                      num_sms);
  d.workspace_bytes = sa::attention_decode_workspace_bytes(B, Hq, Sq, D, d.num_splits);
  return d;
}

// Everything but the pointers.
inline sa::AttentionDecodeParams make_params(const CheckCase& c, const CheckData& d) {
  sa::AttentionDecodeParams p;
  p.q_batch_stride = d.vq.s0, p.q_seq_stride = d.vq.s1, p.q_head_stride = d.vq.s2;
  p.k_batch_stride = d.vk.s0, p.k_seq_stride = d.vk.s1, p.k_head_stride = d.vk.s2;
  p.v_batch_stride = d.vv.s0, p.v_seq_stride = d.vv.s1, p.v_head_stride = d.vv.s2;
  p.out_batch_stride = d.vo.s0, p.out_seq_stride = d.vo.s1, p.out_head_stride = d.vo.s2;
  p.batch = c.B, p.seqlen_q = c.Sq, p.heads_q = c.Hq, p.heads_kv = c.Hkv, p.head_dim = c.D;
  p.max_seqlen = c.Smax;
  p.softmax_scale = d.scale;
  p.causal = c.causal;
  p.num_splits = d.num_splits;
  return p;
}

// Compares out (d.vo layout, dtype bits) and lse ([B, Hq, Sq]) with a float64 reference computed
// from the same rounded inputs; prints one line; true when every value is within tolerance.
// Tolerances: the reference sees the same rounded inputs, so the error is the output's rounding
// to the dtype (|out| <= 1: 2^-9 bf16, 2^-12 fp16) plus fp32 accumulation and exp2/log2
// approximation (~1e-6 relative). Rows that see no key must be exactly 0 with lse -inf.
inline bool verify(const CheckCase& c, const CheckData& d, const uint16_t* out, const float* lse,
                   const char* tag) {
  const int D = c.D, B = c.B, Sq = c.Sq, Hq = c.Hq, Hkv = c.Hkv, Smax = c.Smax, G = Hq / Hkv;
  const double atol = c.bf16 ? 6e-3 : 1.5e-3;
  double max_err = 0, max_lse_err = 0;
  long bad = 0;
  std::vector<double> s(std::max(1, Smax)), o(D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < Sq; ++i) {
        const int len = std::min(std::max(c.lens[b], 0), Smax);
        const int vis = std::max(0, std::min(len, c.causal ? len - Sq + i + 1 : len));
        const int hk = h / G;
        double m = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < vis; ++j) {
          double a = 0;
          for (int e = 0; e < D; ++e)
            a += double(d.fq[((size_t(b) * Sq + i) * Hq + h) * D + e]) *
                 d.fk[((size_t(b) * Smax + j) * Hkv + hk) * D + e];
          s[j] = a * d.scale;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        std::fill(o.begin(), o.end(), 0.0);
        for (int j = 0; j < vis; ++j) {
          const double w = std::exp(s[j] - m);
          sum += w;
          for (int e = 0; e < D; ++e) o[e] += w * d.fv[((size_t(b) * Smax + j) * Hkv + hk) * D + e];
        }
        const float got_lse = lse[(size_t(b) * Hq + h) * Sq + i];
        if (vis == 0) {
          if (!(std::isinf(got_lse) && got_lse < 0)) ++bad;
        } else {
          const double ref_lse = m + std::log(sum);
          const double e = std::fabs(double(got_lse) - ref_lse);
          if (!(e <= 1e-3 + 1e-5 * std::fabs(ref_lse))) ++bad;
          max_lse_err = std::isnan(e) ? INFINITY : std::max(max_lse_err, e);
        }
        for (int e = 0; e < D; ++e) {
          const double ref = vis > 0 ? o[e] / sum : 0.0;
          const double got = from_bits(out[b * d.vo.s0 + i * d.vo.s1 + h * d.vo.s2 + e], c.bf16);
          const double err = std::fabs(got - ref);
          if (!(vis > 0 ? err <= atol : got == 0.0)) ++bad;
          max_err = std::isnan(err) ? INFINITY : std::max(max_err, err);
        }
      }
  std::string lens;
  for (int b = 0; b < B && b < 4; ++b) lens += (b ? "," : "") + std::to_string(c.lens[b]);
  if (B > 4) lens += ",...";
  std::printf("%s %s%s D=%d B=%d Sq=%d Hq=%d Hkv=%d Smax=%d lens=[%s] causal=%d scale=%.3g "
              "splits=%d strided=%d: max|out err|=%.2e max|lse err|=%.2e",
              bad ? "FAIL" : "ok  ", tag, c.bf16 ? "bf16" : "fp16", D, B, Sq, Hq, Hkv, Smax,
              lens.c_str(), int(c.causal), d.scale, d.num_splits, int(c.strided), max_err,
              max_lse_err);
  if (bad) std::printf(" (%ld bad values)", bad);
  std::printf("\n");
  return bad == 0;
}

}  // namespace decode_check
