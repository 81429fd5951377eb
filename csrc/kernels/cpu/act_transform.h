// quantize_activation_int8_transformed on the CPU, torch-free: each row of x is multiplied by a
// per-channel factor, rotated by normalised Hadamard blocks, then quantized to int8 with the rule
// of act_quant.h, in one pass per row (the transformed row lives in a float32 buffer of K).
//
// The rotation is the fast Walsh-Hadamard transform (log2(b) stages of a + b, a - b), then one
// multiply by 1/sqrt(b) (rounded once to float32: exact when b is an even power of two). Every ISA
// path performs the same float32 operations in the same order, so they agree bit for bit.
#pragma once
#include <cstdint>

#include "cpu/act_quant.h"

namespace squash::cpu_kernels {

struct ActTransformParams {
  ActQuantParams quant;        // x rows [rows, K] (row stride ldx, dtype), q, scales, mode
  const float* mul = nullptr;  // [K] channel factors, or nullptr
  int64_t block = 0;           // Hadamard block size (a power of two >= 2 dividing K), or 0
};

// Rows [r0, r1); buf: float32 scratch of K elements, one per thread.
void act_transform_quant_rows(const ActTransformParams& p, int64_t r0, int64_t r1, float* buf, Isa isa);
// Row r transformed into buf (float32 x * mul, then the Hadamard blocks), per ISA path.
void act_transform_row_scalar(const ActTransformParams& p, int64_t r, float* buf);
void act_transform_row_avx2(const ActTransformParams& p, int64_t r, float* buf);

}  // namespace squash::cpu_kernels
