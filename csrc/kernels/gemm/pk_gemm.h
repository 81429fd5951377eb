// Weight-only GEMM (W4A16 / W8A16) on prepacked weights (prepacked_layout.h): the small-M
// tensor-core kernel (pk_gemm_kernel.cuh) and the dequantize kernel of the large-M path.
// Torch-free: raw pointers, element strides, cudaStream_t, cudaError_t. Included by the CUDA
// binding (g++), the C++ benchmark and the kernels (nvcc).
//
// out[m, n] = round_to_T( sum_k x[m, k] * (q[n, k] - z[n, k / g]) * s[n, k / g] + bias[n] ), fp32
// accumulation (int8: z = 0, one scale per channel). An int4 zero point above 15 makes its group's
// weights NaN, so out[:, n] is NaN (gemm_common.cuh): the GEMM reads zeros without a sync.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "heuristics.h"  // same directory: also found from the binding (-Icsrc)
#include "prepacked_layout.h"
#include "woq_gemm.h"    // DType

namespace squash::gemm {

struct PkGemmParams {
  const void* x = nullptr;          // [M, K] dtype, row stride ldx elements (16-byte aligned rows)
  const uint8_t* packed = nullptr;  // [N/8, ceil(K / tile_k), 512], 16-byte aligned
  const float* scales = nullptr;    // int4: [N/8, K/group, 8]; int8: [N]
  const uint8_t* zeros = nullptr;   // int4: [N/8, K/group, 8], or nullptr meaning 8; int8: unused
  const void* bias = nullptr;       // [N] dtype or nullptr
  void* out = nullptr;              // [M, N] dtype, row stride ldo elements
  float* workspace = nullptr;       // splits > 1: [splits, M, N] fp32 partial sums
  int* counters = nullptr;          // splits > 1: pk_counter_count() ints, zero; left zero
  int M = 0, N = 0, K = 0;
  int group = 0;                    // int4: 32, 64, 128, or K (per-channel); int8: K
  int64_t ldx = 0, ldo = 0;
  int bits = 4;                     // 4 or 8
  DType dtype = DType::kF16;        // of x, out and bias
};

// Whether the weight tensors are usable: bits 4/8, fp16/bf16, N % 8 == 0, K % 8 == 0, int4 group
// in {32, 64, 128, K} (int8: K); packed and scales 16-byte aligned, zeros 8-byte aligned (cp.async
// moves weights and scales in 16-byte chunks, zero points in 8-byte chunks).
inline bool pk_weights_supported(const PkGemmParams& p) {
  auto aligned = [](const void* ptr, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; };
  if (p.bits != 4 && p.bits != 8) return false;
  if (p.dtype != DType::kF16 && p.dtype != DType::kBF16) return false;
  if (p.N < 8 || p.N % 8 != 0 || p.K < 8 || p.K % 8 != 0) return false;
  const bool group_ok = p.group == p.K || (p.bits == 4 && (p.group == 32 || p.group == 64 || p.group == 128) &&
                                           p.K % p.group == 0);
  if (!group_ok) return false;
  if (p.packed == nullptr || !aligned(p.packed, 16) || p.scales == nullptr || !aligned(p.scales, 16)) return false;
  return p.zeros == nullptr || aligned(p.zeros, 8);
}

// Whether the kernel can run these arguments: the weights as above, M >= 1, x 16-byte aligned
// with ldx % 8 == 0 (x is copied 8 elements at a time), out with ldo >= N.
inline bool pk_gemm_supported(const PkGemmParams& p) {
  if (!pk_weights_supported(p) || p.M < 1) return false;
  if (p.x == nullptr || reinterpret_cast<uintptr_t>(p.x) % 16 != 0) return false;
  if (p.M > 1 && (p.ldx < p.K || p.ldx % 8 != 0)) return false;
  return p.out != nullptr && p.ldo >= p.N;
}

// fp32 workspace bytes and zeroed counter ints that `splits` needs with `config` (0 for 1 split).
inline size_t pk_workspace_bytes(int M, int N, int splits) {
  return splits > 1 ? static_cast<size_t>(splits) * M * N * sizeof(float) : 0;
}
inline int pk_counter_count(PkConfig config, int M, int N, int splits) {
  return splits > 1 ? pk_blocks(config, M, N) : 0;
}

// out = x @ dequant(W)^T + bias with an explicit config and split-K factor (any M: rows beyond
// the config's max_m run as further row chunks of the same launch). splits > 1 needs
// p.workspace and p.counters. Returns cudaErrorInvalidValue for unsupported arguments.
cudaError_t pk_gemm(const PkGemmParams& p, PkConfig config, int splits, cudaStream_t stream);

// Large-M path: w_out [N, K] of p.dtype, contiguous, w = round_to_T((q - z) * s) (the same
// values woq_dequantize gives from the canonical layout). Uses packed, scales, zeros, N, K,
// group, bits, dtype of p.
cudaError_t pk_dequantize(const PkGemmParams& p, void* w_out, cudaStream_t stream);

}  // namespace squash::gemm
