// The portable scalar path of the W4A16 / W8A16 CPU kernels (woq.h) and the ISA dispatch.
// Compiled without -m flags: it runs on any x86-64 (and is the path tests compare AVX2 against).
#include "cpu/woq.h"

#include <algorithm>
#include <limits>

namespace squash::cpu_kernels {
namespace woq_detail {

namespace {

// Epilogue shared by both formats: out[r, c] = acc[c] (+ bias) for the panel's valid columns.
void store_panel(const float* acc, const float* bias, float* out, int cols) {
  for (int c = 0; c < cols; ++c) out[c] = acc[c] + (bias ? bias[c] : 0.f);
}

}  // namespace

void w4a16_scalar(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  const int64_t groups = w.k / w.group;
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* wp = w.packed + p * w.k * 8;
    const float* sp = w.scales + p * groups * kWoqPanel;
    const uint8_t* zp = w.zeros ? w.zeros + p * groups * kWoqPanel : nullptr;
    const int cols = static_cast<int>(std::min<int64_t>(kWoqPanel, w.n - p * kWoqPanel));
    for (int64_t r = 0; r < pr.m; ++r) {
      const float* x = pr.x + r * pr.ldx;
      float acc[kWoqPanel] = {};
      for (int64_t g = 0; g < groups; ++g) {
        const float* s = sp + g * kWoqPanel;
        for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k) {
          const uint8_t* b = wp + k * 8;
          for (int c = 0; c < kWoqPanel; ++c) {
            const int q = c < 8 ? (b[c] & 15) : (b[c - 8] >> 4);
            const int z = zp ? zp[g * kWoqPanel + c] : 8;
            // A zero point above 15 (edited after prepacking) is NaN, as on the vector paths.
            const float zf = z > 15 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(z);
            acc[c] += x[k] * ((static_cast<float>(q) - zf) * s[c]);
          }
        }
      }
      store_panel(acc, pr.bias ? pr.bias + p * kWoqPanel : nullptr, pr.out + r * pr.ldo + p * kWoqPanel, cols);
    }
  }
}

void w8a16_scalar(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int8_t* wp = w.packed + p * w.k * kWoqPanel;
    const float* s = w.scales + p * kWoqPanel;
    const int cols = static_cast<int>(std::min<int64_t>(kWoqPanel, w.n - p * kWoqPanel));
    for (int64_t r = 0; r < pr.m; ++r) {
      const float* x = pr.x + r * pr.ldx;
      float acc[kWoqPanel] = {};
      for (int64_t k = 0; k < w.k; ++k)
        for (int c = 0; c < kWoqPanel; ++c) acc[c] += x[k] * static_cast<float>(wp[k * kWoqPanel + c]);
      // Per-channel scale applied once to the sum: the same function as dequantize-then-matmul
      // up to float32 rounding (the AVX2 path does the same).
      for (int c = 0; c < kWoqPanel; ++c) acc[c] *= s[c];
      store_panel(acc, pr.bias ? pr.bias + p * kWoqPanel : nullptr, pr.out + r * pr.ldo + p * kWoqPanel, cols);
    }
  }
}

}  // namespace woq_detail

bool woq_bf16_kernel(Isa isa, bool x_bf16, int64_t k, bool int4) {
  return x_bf16 && k % 2 == 0 && isa >= Isa::kAvx512 && has_avx512_bf16() && (!int4 || has_avx512_vbmi());
}

void w4a16_gemm_panels(Isa isa, const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  if (isa == Isa::kScalar)
    woq_detail::w4a16_scalar(w, pr, p0, p1);
  else if (woq_bf16_kernel(isa, pr.x_bf16 != nullptr, w.k, true))
    woq_detail::w4a16_avx512_bf16(w, pr, p0, p1);
  else
    woq_detail::w4a16_avx2(w, pr, p0, p1);
}

void w8a16_gemm_panels(Isa isa, const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1) {
  if (isa == Isa::kScalar)
    woq_detail::w8a16_scalar(w, pr, p0, p1);
  else if (woq_bf16_kernel(isa, pr.x_bf16 != nullptr, w.k, false))
    woq_detail::w8a16_avx512_bf16(w, pr, p0, p1);
  else
    woq_detail::w8a16_avx2(w, pr, p0, p1);
}

}  // namespace squash::cpu_kernels
