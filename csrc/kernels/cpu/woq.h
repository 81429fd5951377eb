// Weight-only quantized GEMM (W4A16 / W8A16) on the CPU prepacked layout (docs/FORMATS.md,
// "CPU prepacked layout"). Torch-free: raw pointers and sizes; the binding (csrc/ops/cpu_woq.cpp)
// converts the activations to float32 once, splits the panels over threads and rounds the float32
// output to x.dtype.
//
// Layout (P = ceil(N / 16) panels of 16 output columns, padded columns hold code 0 and scale 0):
//  - int4 packed uint8 [P, K, 8]: byte j of (panel p, k) holds column 16p + j in its low nibble and
//    column 16p + 8 + j in its high nibble, so one 8-byte load + zero-extension gives 8 int32 lanes
//    whose `& 15` is columns 0..7 and `>> 4` columns 8..15 of the panel (two AVX2 ops per 16 values).
//    scales float32 [P, G, 16]; zeros uint8 [P, G, 16] (nullptr: zero point 8, symmetric); a zero
//    point above 15 makes its group's weights NaN, so its output channel is NaN (as on CUDA).
//  - int8 packed int8 [P, K, 16] (k-major, 16 columns per k); scales float32 [P, 16].
#pragma once
#include <cstdint>

#include "cpu/isa.h"

namespace squash::cpu_kernels {

constexpr int kWoqPanel = 16;  // output columns per panel: two 8-float AVX2 vectors

constexpr int64_t woq_panels(int64_t n) { return (n + kWoqPanel - 1) / kWoqPanel; }

struct WoqInt4Weight {
  const uint8_t* packed;  // [P, K, 8]
  const float* scales;    // [P, K / group, 16]
  const uint8_t* zeros;   // [P, K / group, 16], or nullptr (zero point 8)
  int64_t n, k, group;    // group divides k
};

struct WoqInt8Weight {
  const int8_t* packed;  // [P, K, 16]
  const float* scales;   // [P, 16]
  int64_t n, k;
};

// x float32 [m, k] with row stride ldx; out float32 [m, n] with row stride ldo (columns >= n are
// never written); bias float32 [n] or nullptr, added before the store.
struct WoqProblem {
  const float* x;
  int64_t m, ldx;
  const float* bias;
  float* out;
  int64_t ldo;
  // The same rows of x as bfloat16 [m, k] (row stride k) when the caller's activations are bf16,
  // else nullptr: the AVX-512 BF16 path multiplies them as they are (vdpbf16ps).
  const uint16_t* x_bf16 = nullptr;
};

// out[:, 16 p0 : 16 p1] (clipped to n) for the panels [p0, p1), on the `isa` path. kAvx512 runs
// bf16 activations on AVX-512 BF16 where woq_bf16_kernel says so (woq_avx512.cpp), everything
// else on the AVX2 kernel. Threads may call it on disjoint panel ranges.
void w4a16_gemm_panels(Isa isa, const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);
// Whether w4a16/w8a16_gemm_panels take the AVX-512 BF16 kernel: bf16 activations, an even k, the
// `isa` path at avx512 on a CPU with AVX-512 BF16 (and, for int4 weights, VBMI: its decode is one
// vpermb). The binding asks it too (that kernel keeps prefill-size M, which the others hand to a
// float32 GEMM), so both decide alike.
bool woq_bf16_kernel(Isa isa, bool x_bf16, int64_t k, bool int4);
void w8a16_gemm_panels(Isa isa, const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);

namespace woq_detail {
void w4a16_scalar(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);
void w8a16_scalar(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);
void w4a16_avx2(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);
void w8a16_avx2(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);
void w4a16_avx512_bf16(const WoqInt4Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);
void w8a16_avx512_bf16(const WoqInt8Weight& w, const WoqProblem& pr, int64_t p0, int64_t p1);  // k even
// The group sums of x that the int4 kernels' zero-point term needs: xsum[r * (k / group) + g].
void int4_group_sums(const WoqInt4Weight& w, const WoqProblem& pr, float* xsum);
}  // namespace woq_detail

}  // namespace squash::cpu_kernels
