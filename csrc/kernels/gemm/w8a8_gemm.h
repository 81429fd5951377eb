// W8A8 GEMM on int8 tensor cores through CUTLASS (2.x on sm_80, 3.x on sm_90a). Torch-free: raw
// pointers, element strides, cudaStream_t, cudaError_t. Included by the CUDA binding (g++), the
// C++ benchmark and the kernels (nvcc).
//
//   out[m, n] = round_to_out( ((float(acc[m, n]) * x_scale[m]) * w_scale[n]) + bias[n] )
//   acc[m, n] = sum_k x_q[m, k] * qweight[n, k]        (int32, exact for K < 2^17)
//
// every step an IEEE float32 operation rounded to nearest in this order (no FMA contraction), so
// the result is bit-identical to the CPU op (csrc/ops/gemm_cpu.cpp). A scalar scale (numel 1)
// is broadcast; bias is float32 (the binding converts a fp16/bf16 bias: exact).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "w8a8_heuristics.h"  // same directory: also found from the binding (-Icsrc)
#include "woq_gemm.h"         // DType

namespace squash::gemm {

struct W8A8GemmParams {
  const int8_t* x = nullptr;        // [M, K], row stride ldx elements
  const float* x_scales = nullptr;  // [M] when x_scales_per_row, else 1 element
  const int8_t* qweight = nullptr;  // [N, K], row stride ldw elements (= B column-major)
  const float* w_scales = nullptr;  // [N] when w_scales_per_col, else 1 element
  const float* bias = nullptr;      // [N] float32 or nullptr
  void* out = nullptr;              // [M, N] out_dtype, row stride ldo elements
  int M = 0, N = 0, K = 0;
  int64_t ldx = 0, ldw = 0, ldo = 0;
  bool x_scales_per_row = true;
  bool w_scales_per_col = true;
  DType out_dtype = DType::kBF16;
  int sm_count = 0;  // of the device (persistent 3.x kernels size their grid with it); 0: query
};

// Whether `config` can run these arguments: M, N, K >= 1; K % 16 == 0, N % 8 == 0 (kW8A8AlignK/N);
// x, qweight and out 16-byte aligned with ldx, ldw multiples of 16 and ldo of 8; scales and bias
// 16-byte aligned (vector loads); non-null pointers. Architecture is the caller's business
// (w8a8_config_runs_on).
bool w8a8_supported(const W8A8GemmParams& p, W8A8Config config);

// Runs the GEMM with an explicit config on `stream`. Returns cudaErrorInvalidValue for arguments
// w8a8_supported rejects or a CUTLASS can_implement failure, cudaErrorNotSupported when a kernel
// asks for a workspace (none of ours does), else the launch's error.
cudaError_t w8a8_gemm(const W8A8GemmParams& p, W8A8Config config, cudaStream_t stream);

}  // namespace squash::gemm
