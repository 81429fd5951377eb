// Attention of one (sequence, head) block on the CPU, vectorized: the fast path of the attention,
// attention_varlen and attention_decode CPU ops (csrc/ops/attention_cpu.cpp holds their exact
// reference, attend_sequence, which the scalar ISA path runs). Torch-free: raw pointers, strides
// and the storage dtype.
//
// Same semantics as the reference: Sq query rows attend to Sk key rows, causal bottom-right
// aligned (query i sees key j iff j <= i + Sk - Sq); scores, softmax and P @ V in fp32, exact
// two-pass softmax per row (max, then exp / sum), output rounded once to the dtype, lse = max +
// log(sum); a row that sees no key gives out 0 and lse -inf. Only the order of the fp32 sums and
// exp's last bit differ from the reference (exp: Cephes' polynomial, <= 2 ulp).
//
// Why our own: torch's CPU SDPA has no varlen form, so packed sequences (PackedEncoder) paid one
// SDPA call per sequence from Python, serial and overhead-bound: 3.4-3.9 ms per MiniLM layer of
// 32 sequences (12 heads of 32) against 6.7-7.2 ms for the scalar reference
// (bench/results/2026-12-02_cpu-amd-epyc_probes.log).
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/convert.h"

namespace squash::cpu_kernels {

struct AttnBlock {
  const void* q;  // row r at q + r * q_stride elements, D contiguous elements per row
  int64_t q_stride;
  const void* k;
  int64_t k_stride;
  const void* v;
  int64_t v_stride;
  void* out;
  int64_t out_stride;
  float* lse;  // sq contiguous floats
  int64_t sq, sk;
};

// Per-thread buffers, reused across blocks.
struct AttnScratch {
  std::vector<float> kt, v, q, scores;
};

// The fast path holds head dims that are whole AVX2 vectors.
constexpr bool attend_block_supported(int64_t head_dim) { return head_dim > 0 && head_dim % 8 == 0; }

// q, k, v and out all of dtype `t`; head_dim satisfies attend_block_supported.
void attend_block_avx2(const AttnBlock& a, Dtype t, int64_t head_dim, float scale, bool causal, AttnScratch& s);

}  // namespace squash::cpu_kernels
