// Weight-only GEMM (W4A16 / W8A16) through CUTLASS mixed-input GEMMs: the large-M path
// (heuristics.h, choose_woq_plan_cutlass). Torch-free: raw pointers, element strides,
// cudaStream_t, cudaError_t.
//
// The quantized weight stays in the canonical checkpoint layout (docs/FORMATS.md): int8 [N, K],
// or uint8 [N, K/2] whose byte j holds element 2j in the low nibble - the order CUTLASS's 4-bit
// types use, read as cutlass::uint4b_t (0..15). Only the scales change layout: CUTLASS wants
// them "MN-major", [K/group, N] with N contiguous, in float32, and the zero point as an additive
// float per group (w = q * s + z', z' = -zero * s, zero 8 when symmetric). woq_cutlass_scales
// builds both from the canonical [N, K/group] scales and zeros: [2, K/group, N] float32, a
// 2 * N * K/group * 4-byte pass (256 KB for a 4096x4096 g128 layer) that a prepack op can do
// once at load time instead of per call.
//
// out[m, n] = round_to_T( sum_k x[m, k] * round_to_T(q[n, k] * s + z') + bias[n] ), float32
// accumulation: each dequantized weight is rounded to T once (as dequantize + cuBLAS does).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "heuristics.h"
#include "woq_gemm.h"  // DType

namespace squash::gemm {

struct WoqCutlassParams {
  const void* x = nullptr;          // [M, K] dtype (f16/bf16), row stride ldx elements
  const void* qweight = nullptr;    // canonical: bits 4 uint8 [N, K/2]; bits 8 int8 [N, K]
  const float* scales_t = nullptr;  // [K/group, N] float32 (woq_cutlass_scales)
  const float* zeros_t = nullptr;   // bits 4: [K/group, N] float32 = -zero * scale; bits 8: unused
  const void* bias = nullptr;       // [N] dtype or nullptr
  void* out = nullptr;              // [M, N] dtype, row stride ldo elements
  int M = 0, N = 0, K = 0;
  int group = 0;                    // effective group size (K: per channel)
  int64_t ldx = 0, ldo = 0;
  int bits = 4;
  DType dtype = DType::kBF16;
  int sm_count = 0;                 // of the device; 0: queried
};

// The shape rule of `config`: bits 4 (sm_90 configs only) with group == K or a multiple of 64
// (the K tile), K % 32 == 0 (16-byte rows of packed weights); bits 8 per channel (group == K)
// with K % 16 == 0; N % 8 == 0; dtype f16/bf16. Architecture: woq_cutlass_config_runs_on.
bool woq_cutlass_shape_ok(int M, int N, int K, int group, int bits, DType dtype, WoqCutlassConfig config);

// woq_cutlass_shape_ok, and x, qweight, out, scales_t, zeros_t (bits 4) and bias 16-byte aligned,
// ldx and ldo multiples of 8 (16-byte rows).
bool woq_cutlass_supported(const WoqCutlassParams& p, WoqCutlassConfig config);

cudaError_t woq_cutlass_gemm(const WoqCutlassParams& p, WoqCutlassConfig config, cudaStream_t stream);

// scales [N, groups] (float32 if scales_f32 else dtype) and zeros uint8 [N, groups] or nullptr
// (= 8) -> scales_t [groups, N] float32 and, when zeros_t is not null, zeros_t [groups, N] float32
// = -zero * scale. Both outputs contiguous. A zero point above 15 gives NaN in both (its output
// channel of the GEMM is NaN; gemm_common.cuh).
cudaError_t woq_cutlass_scales(const void* scales, bool scales_f32, DType dtype, const uint8_t* zeros,
                               int N, int groups, float* scales_t, float* zeros_t, cudaStream_t stream);

}  // namespace squash::gemm
