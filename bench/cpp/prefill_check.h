// Host side of the attention prefill correctness check, shared by the GPU run
// (prefill_bench.cu --check) and the CPU emulation (emu/prefill_emu.cpp): the cases, the inputs
// with NaN poison where nothing may be read or written, and the comparison with FlashAttention's
// tolerance rule against a float64 reference. Plain C++ (the fp16/bf16 conversions of
// cuda_fp16.h/cuda_bf16.h are host functions too).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/prefill.h"
#include "decode_check.h"  // to_bits, from_bits, kNaNBits

namespace prefill_check {

namespace sa = squash::attention;
using decode_check::from_bits;
using decode_check::kNaNBits;
using decode_check::to_bits;

struct PrefillCase {
  bool bf16;
  int D, Hq, Hkv;
  bool causal;
  float scale;   // <= 0: 1/sqrt(D)
  bool strided;  // padded head/seq/batch strides (gaps hold NaN)
  int B, Sq, Sk;  // fixed-length layout [B, S, H, D]
  // Varlen when non-empty (B = size): packed [T, H, D] with pad_front rows before the first
  // sequence and 3 after the last, which belong to no sequence and must stay untouched.
  std::vector<int> lens_q, lens_k;
  int pad_front;

  bool varlen() const { return !lens_q.empty(); }
};

inline PrefillCase fixed_case(bool bf16, int D, int B, int Sq, int Sk, int Hq, int Hkv, bool causal,
                              float scale = 0, bool strided = false) {
  return {bf16, D, Hq, Hkv, causal, scale, strided, B, Sq, Sk, {}, {}, 0};
}
inline PrefillCase varlen_case(bool bf16, int D, std::vector<int> lens_q, std::vector<int> lens_k,
                               int Hq, int Hkv, bool causal, bool strided = false) {
  const int B = static_cast<int>(lens_q.size());
  return {bf16, D, Hq, Hkv, causal, 0, strided, B, 0, 0, std::move(lens_q), std::move(lens_k), 2};
}

// The emulation set (also the GPU's quick set, for compute-sanitizer): every instantiation
// (fp16/bf16 x head dim 64/128/256), causal and not, seq 1/97/257, Sq < Sk and Sq > Sk (rows that
// see no key), GQA ratios 1/2/3/8, varlen with empty and length-1 sequences, strided layouts, a
// peaky softmax (large scale), no keys at all. Sizes keep the CPU emulation under a minute.
inline std::vector<PrefillCase> emu_cases() {
  std::vector<PrefillCase> c;
  for (bool bf16 : {true, false}) {
    const bool f = !bf16;  // alternate a few properties between the two dtypes
    c.push_back(fixed_case(bf16, 128, 1, 257, 257, 2, 1, true, 0, f));
    c.push_back(fixed_case(bf16, 128, 2, 97, 97, 2, 2, !f));
    c.push_back(fixed_case(bf16, 128, 1, 1, 257, 8, 1, true));          // one query, ratio 8
    c.push_back(fixed_case(bf16, 128, 1, 257, 97, 3, 1, true, 0, !f));  // Sq > Sk: empty rows
    c.push_back(fixed_case(bf16, 64, 2, 257, 257, 3, 1, f, 0, true));
    c.push_back(fixed_case(bf16, 64, 1, 97, 257, 4, 2, true));
    c.push_back(fixed_case(bf16, 64, 2, 1, 1, 2, 1, !f));
    c.push_back(fixed_case(bf16, 256, 1, 97, 97, 2, 1, true, 0, f));
    c.push_back(fixed_case(bf16, 256, 1, 257, 257, 1, 1, !f));
    c.push_back(fixed_case(bf16, 256, 1, 1, 257, 4, 1, true, 0, f));
    c.push_back(fixed_case(bf16, 256, 1, 33, 130, 2, 2, !f, 3.0f));  // peaky softmax
    c.push_back(fixed_case(bf16, 128, 1, 5, 0, 2, 1, f));           // no keys
    c.push_back(varlen_case(bf16, bf16 ? 128 : 64, {0, 1, 97, 5, 0, 33, 1}, {4, 1, 97, 0, 7, 130, 1},
                            4, 2, true, f));
    c.push_back(varlen_case(bf16, bf16 ? 64 : 256, {3, 0, 1, 40}, {3, 9, 1, 17}, 2, 1, false, !f));
  }
  return c;
}

// The GPU's full set: the emulation set plus long and awkward shapes (seq 1025 and 4096, causal
// Sq != Sk at length, every GQA ratio of 8 q heads, big varlen batches). Few heads: the float64
// host reference costs ~2.5 ns per (row, visible key, dim); this set is ~7e9 of them (~15 s).
inline std::vector<PrefillCase> gpu_cases() {
  std::vector<PrefillCase> c = emu_cases();
  for (bool bf16 : {true, false})
    for (int D : {64, 128, 256}) {
      c.push_back(fixed_case(bf16, D, 1, 1025, 1025, 2, 1, true, 0, D == 128));
      c.push_back(fixed_case(bf16, D, 1, 1025, 1025, 1, 1, false));
      c.push_back(fixed_case(bf16, D, 1, 300, 4096, 1, 1, true));
      c.push_back(fixed_case(bf16, D, 1, 4096, 1000, 1, 1, true));
    }
  for (int hkv : {1, 2, 4, 8}) c.push_back(fixed_case(true, 128, 1, 257, 600, 8, hkv, true));
  c.push_back(fixed_case(true, 64, 1, 4096, 4096, 1, 1, true));
  c.push_back(varlen_case(true, 128, {1025, 0, 1, 2000, 77}, {1025, 5, 1, 3000, 0}, 2, 1, true));
  c.push_back(varlen_case(false, 64, {1025, 0, 1, 2000, 77}, {1025, 5, 1, 3000, 0}, 2, 1, false));
  return c;
}

// A [n0, n1, n2, D] view in a flat buffer (strides in elements, last dim contiguous) that starts
// kGuard elements into the buffer and leaves kGuard elements after it: guard zones that must
// stay untouched.
constexpr int64_t kGuard = 64;
struct View {
  int64_t s0, s1, s2, size;  // size: elements of the whole buffer, guards included
};

inline View make_view(int n0, int n1, int n2, int D, bool strided, int pad) {
  const decode_check::View v = decode_check::make_view(n0, n1, n2, D, strided, pad);
  return {v.s0, v.s1, v.s2, v.size + 2 * kGuard};
}

// Inputs and expected-output layout of one case. Buffers start as NaN; f* hold the same rounded
// values densely as float ([b][s][h][d] per sequence, for the reference).
struct CheckData {
  View vq, vk, vv, vo;
  std::vector<uint16_t> q, k, v;
  std::vector<float> fq, fk, fv;
  std::vector<int32_t> cu_q, cu_k;  // varlen: [B + 1]
  int64_t Tq = 0, Tk = 0;           // varlen: rows of the packed tensors
  int64_t lse_size = 0;
  float scale = 0;
  int seqlen_q = 0, seqlen_k = 0;   // fixed: Sq/Sk; varlen: the maxima
  std::vector<int> len_q, len_k;    // per sequence
  std::vector<int64_t> row_q, row_k;  // first row of each sequence in the q / k view
};

inline CheckData make_check_data(const PrefillCase& c, std::mt19937& rng) {
  const int D = c.D, Hq = c.Hq, Hkv = c.Hkv;
  CheckData d;
  d.scale = c.scale > 0 ? c.scale : 1.f / std::sqrt(float(D));
  int nb = c.B, nq = c.Sq, nk = c.Sk;
  if (c.varlen()) {
    d.cu_q = {c.pad_front};
    d.cu_k = {0};
    for (int b = 0; b < c.B; ++b) {
      d.cu_q.push_back(d.cu_q.back() + c.lens_q[b]);
      d.cu_k.push_back(d.cu_k.back() + c.lens_k[b]);
      d.len_q.push_back(c.lens_q[b]);
      d.len_k.push_back(c.lens_k[b]);
      d.row_q.push_back(d.cu_q[b]);
      d.row_k.push_back(d.cu_k[b]);
    }
    d.Tq = d.cu_q.back() + 3;
    d.Tk = d.cu_k.back();
    d.seqlen_q = *std::max_element(c.lens_q.begin(), c.lens_q.end());
    d.seqlen_k = *std::max_element(c.lens_k.begin(), c.lens_k.end());
    nb = 1, nq = static_cast<int>(d.Tq), nk = static_cast<int>(d.Tk);
    d.lse_size = Hq * d.Tq;
  } else {
    for (int b = 0; b < c.B; ++b) {
      d.len_q.push_back(c.Sq), d.len_k.push_back(c.Sk);
      d.row_q.push_back(int64_t(b) * c.Sq), d.row_k.push_back(int64_t(b) * c.Sk);
    }
    d.seqlen_q = c.Sq, d.seqlen_k = c.Sk;
    d.lse_size = int64_t(c.B) * Hq * c.Sq;
  }
  d.vq = make_view(nb, nq, Hq, D, c.strided, 1);
  d.vk = make_view(nb, nk, Hkv, D, c.strided, 2);
  d.vv = make_view(nb, nk, Hkv, D, c.strided, 1);
  d.vo = make_view(nb, nq, Hq, D, c.strided, 3);
  d.q.assign(d.vq.size, kNaNBits);
  d.k.assign(d.vk.size, kNaNBits);
  d.v.assign(d.vv.size, kNaNBits);
  const int64_t rows_q = int64_t(nb) * nq, rows_k = int64_t(nb) * nk;
  d.fq.assign(rows_q * Hq * D, 0.f);
  d.fk.assign(rows_k * Hkv * D, 0.f);
  d.fv.assign(rows_k * Hkv * D, 0.f);
  std::normal_distribution<float> nrm(0.f, 1.f);
  // Element (row r of the flattened [nb * n] rows, head h, e) of a view.
  auto at = [](const View& v, int n, int64_t r, int h, int e) {
    return kGuard + (r / n) * v.s0 + (r % n) * v.s1 + h * v.s2 + e;
  };
  // Varlen rows outside every sequence stay NaN in q: they must never be read.
  for (int b = 0; b < c.B; ++b)
    for (int i = 0; i < d.len_q[b]; ++i)
      for (int h = 0; h < Hq; ++h)
        for (int e = 0; e < D; ++e) {
          const int64_t r = d.row_q[b] + i;
          const uint16_t u = to_bits(nrm(rng), c.bf16);
          d.q[at(d.vq, nq, r, h, e)] = u;
          d.fq[(r * Hq + h) * D + e] = from_bits(u, c.bf16);
        }
  for (int b = 0; b < c.B; ++b)
    for (int j = 0; j < d.len_k[b]; ++j)
      for (int h = 0; h < Hkv; ++h)
        for (int e = 0; e < D; ++e) {
          const int64_t r = d.row_k[b] + j;
          const uint16_t uk = to_bits(nrm(rng), c.bf16), uv = to_bits(nrm(rng), c.bf16);
          d.k[at(d.vk, nk, r, h, e)] = uk;
          d.v[at(d.vv, nk, r, h, e)] = uv;
          d.fk[(r * Hkv + h) * D + e] = from_bits(uk, c.bf16);
          d.fv[(r * Hkv + h) * D + e] = from_bits(uv, c.bf16);
        }
  return d;
}

// Everything but the pointers (q/k/v/out point kGuard elements into their buffers).
inline sa::AttentionPrefillParams make_params(const PrefillCase& c, const CheckData& d) {
  sa::AttentionPrefillParams p;
  const bool vl = c.varlen();
  p.q_batch_stride = vl ? 0 : d.vq.s0, p.q_seq_stride = d.vq.s1, p.q_head_stride = d.vq.s2;
  p.k_batch_stride = vl ? 0 : d.vk.s0, p.k_seq_stride = d.vk.s1, p.k_head_stride = d.vk.s2;
  p.v_batch_stride = vl ? 0 : d.vv.s0, p.v_seq_stride = d.vv.s1, p.v_head_stride = d.vv.s2;
  p.out_batch_stride = vl ? 0 : d.vo.s0, p.out_seq_stride = d.vo.s1, p.out_head_stride = d.vo.s2;
  if (vl) p.lse_batch_stride = 0, p.lse_head_stride = d.Tq;
  else p.lse_batch_stride = int64_t(c.Hq) * c.Sq, p.lse_head_stride = c.Sq;
  p.batch = c.B, p.seqlen_q = d.seqlen_q, p.seqlen_k = d.seqlen_k;
  p.heads_q = c.Hq, p.heads_kv = c.Hkv, p.head_dim = c.D;
  p.softmax_scale = d.scale;
  p.causal = c.causal;
  return p;
}

inline std::string describe(const PrefillCase& c) {
  char buf[256];
  std::string s;
  if (c.varlen()) {
    s = "varlen lens_q=[";
    for (size_t b = 0; b < c.lens_q.size(); ++b) s += (b ? "," : "") + std::to_string(c.lens_q[b]);
    s += "] lens_k=[";
    for (size_t b = 0; b < c.lens_k.size(); ++b) s += (b ? "," : "") + std::to_string(c.lens_k[b]);
    s += "]";
  } else {
    std::snprintf(buf, sizeof buf, "B=%d Sq=%d Sk=%d", c.B, c.Sq, c.Sk);
    s = buf;
  }
  std::snprintf(buf, sizeof buf, "%s D=%d Hq=%d Hkv=%d causal=%d scale=%s strided=%d",
                c.bf16 ? "bf16" : "fp16", c.D, c.Hq, c.Hkv, int(c.causal),
                c.scale > 0 ? std::to_string(c.scale).c_str() : "1/sqrt(D)", int(c.strided));
  return std::string(buf) + " " + s;
}

// Compares out (d.vo layout with guards, dtype bits) and lse with FlashAttention's rule:
//   max |out - ref| <= 2 * max |out_lowp - ref| + floor,
// ref = the attention in float64 from the same rounded inputs, out_lowp = the same math as
// PyTorch does it in the low dtype (scores and probabilities rounded to the dtype, fp32
// accumulation), floor = 64 fp32 ulps of max |ref| (matters only where out_lowp is exact, e.g.
// a single visible key). Rows that see no key must be exactly 0 with lse -inf; lse within
// 1e-5 + 1e-4 |ref| (fp32 scores: a wrong scale, log base or mask moves it by >= 1e-2). Every
// out/lse element outside the written rows (guards, stride gaps, varlen padding rows) must still
// hold its NaN poison. Prints one line; true when all holds.
inline bool verify(const PrefillCase& c, const CheckData& d, const uint16_t* out, const float* lse,
                   const char* tag) {
  const int D = c.D, Hq = c.Hq, Hkv = c.Hkv, G = Hq / Hkv;
  const bool vl = c.varlen();
  const int nq = vl ? static_cast<int>(d.Tq) : c.Sq;
  auto round_t = [&](double x) { return double(from_bits(to_bits(float(x), c.bf16), c.bf16)); };
  double err = 0, err_lowp = 0, max_ref = 0, lse_err = 0;
  long bad = 0;
  std::vector<bool> written_out(d.vo.size, false), written_lse(std::max<int64_t>(1, d.lse_size), false);
  std::vector<double> s, sl, o(D);
  std::vector<float> ol(D);
  for (int b = 0; b < c.B; ++b) {
    const int lq = d.len_q[b], lk = d.len_k[b];
    s.resize(std::max(1, lk));
    sl.resize(std::max(1, lk));
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < lq; ++i) {
        const int64_t r = d.row_q[b] + i;
        const int vis = std::max(0, std::min(lk, c.causal ? i + lk - lq + 1 : lk));
        const float* qr = &d.fq[(r * Hq + h) * D];
        double m = -INFINITY, ml = -INFINITY;
        for (int j = 0; j < vis; ++j) {
          const float* kr = &d.fk[((d.row_k[b] + j) * Hkv + h / G) * D];
          double a = 0;
          float af = 0;
          for (int e = 0; e < D; ++e) a += double(qr[e]) * kr[e], af += qr[e] * kr[e];
          s[j] = a * d.scale;
          sl[j] = round_t(float(round_t(af)) * d.scale);  // torch: q @ k^T in T, then * scale in T
          m = std::max(m, s[j]);
          ml = std::max(ml, sl[j]);
        }
        double sum = 0;
        float suml = 0;
        std::fill(o.begin(), o.end(), 0.0);
        std::fill(ol.begin(), ol.end(), 0.f);
        for (int j = 0; j < vis; ++j) suml += std::exp(float(sl[j] - ml));
        for (int j = 0; j < vis; ++j) {
          const float* vr = &d.fv[((d.row_k[b] + j) * Hkv + h / G) * D];
          const double w = std::exp(s[j] - m);
          const double wl = round_t(std::exp(float(sl[j] - ml)) / suml);  // softmax output in T
          sum += w;
          for (int e = 0; e < D; ++e) o[e] += w * vr[e], ol[e] += float(wl) * vr[e];  // fp32 accumulation
        }
        const int64_t lse_i = vl ? h * d.Tq + r : (int64_t(b) * Hq + h) * c.Sq + i;
        written_lse[lse_i] = true;
        if (vis == 0) {
          if (!(std::isinf(lse[lse_i]) && lse[lse_i] < 0)) ++bad;
        } else {
          const double ref_lse = m + std::log(sum), e = std::fabs(lse[lse_i] - ref_lse);
          if (!(e <= 1e-5 + 1e-4 * std::fabs(ref_lse))) ++bad;
          lse_err = std::isnan(e) ? INFINITY : std::max(lse_err, e);
        }
        const int64_t row_off = kGuard + (r / nq) * d.vo.s0 + (r % nq) * d.vo.s1 + h * d.vo.s2;
        for (int e = 0; e < D; ++e) {
          written_out[row_off + e] = true;
          const double got = from_bits(out[row_off + e], c.bf16);
          if (vis == 0) {
            if (got != 0.0) ++bad;
            continue;
          }
          const double ref = o[e] / sum;
          max_ref = std::max(max_ref, std::fabs(ref));
          const double ge = std::fabs(got - ref);
          err = std::isnan(ge) ? INFINITY : std::max(err, ge);
          err_lowp = std::max(err_lowp, std::fabs(round_t(ol[e]) - ref));
        }
      }
  }
  const double floor = 64 * std::numeric_limits<float>::epsilon() * std::max(1.0, max_ref);
  const bool rule_ok = err <= 2 * err_lowp + floor;
  long touched = 0;
  for (int64_t i = 0; i < d.vo.size; ++i) touched += !written_out[i] && out[i] != kNaNBits;
  for (int64_t i = 0; i < d.lse_size; ++i) touched += !written_lse[i] && !std::isnan(lse[i]);
  const bool ok = rule_ok && bad == 0 && touched == 0;
  std::printf("%s %s%s: max|err|=%.2e (lowp %.2e, bound %.2e) max|lse err|=%.1e", ok ? "ok  " : "FAIL",
              tag, describe(c).c_str(), err, err_lowp, 2 * err_lowp + floor, lse_err);
  if (bad) std::printf(" (%ld bad empty-row/lse values)", bad);
  if (touched) std::printf(" (%ld elements written outside the output rows)", touched);
  std::printf("\n");
  return ok;
}

}  // namespace prefill_check
