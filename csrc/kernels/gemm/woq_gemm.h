// Weight-only quantized GEMM (W4A16 / W8A16) on the canonical checkpoint layout, and the
// per-token int8 activation quantizer. Torch-free: raw pointers, element strides, cudaStream_t,
// cudaError_t. Included by the CUDA binding (g++) and by the kernels (nvcc).
//
// Canonical weight W [N, K] (nn.Linear.weight), docs/FORMATS.md:
//   int8: qweight int8 [N, K], scales [N] (one group spanning K).
//   int4: qweight uint8 [N, K/2], byte j of a row holds element 2j in its low nibble and 2j+1 in
//         its high nibble (unsigned 0..15); scales [N, K/group]; zeros uint8 [N, K/group] or none
//         (= 8). Dequant: w = (q - z) * s. A zero point above 15 is not refused (that needs a
//         sync): its group's weights are NaN, so out[:, n] is NaN (gemm_common.cuh).
// out[m, n] = round_to_T( sum_k x[m, k] * w[n, k] + bias[n] ) with fp32 accumulation.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "heuristics.h"  // same directory: also found from the binding (-Icsrc)

namespace squash::gemm {

enum class DType : int { kF16 = 0, kBF16 = 1, kF32 = 2 };

struct WoqGemmParams {
  const void* x = nullptr;         // [M, K] dtype (f16/bf16), row stride ldx elements
  const void* qweight = nullptr;   // bits 4: uint8 [N, K/2]; bits 8: int8 [N, K]; rows contiguous
  const void* scales = nullptr;    // [N, K/group], float32 if scales_f32 else dtype; contiguous
  const uint8_t* zeros = nullptr;  // [N, K/group] (int4 only) or nullptr meaning 8
  const void* bias = nullptr;      // [N] dtype or nullptr
  void* out = nullptr;             // [M, N] dtype, row stride ldo elements
  float* workspace = nullptr;      // [splits, M, N] fp32 partial sums when splits > 1
  int M = 0, N = 0, K = 0;
  int group = 0;                   // effective group size: K for per-channel scales
  int64_t ldx = 0, ldo = 0;
  int bits = 4;                    // 4 or 8
  DType dtype = DType::kF16;       // of x, out and bias
  bool scales_f32 = true;          // scales are float32 (else dtype)
};

// ---- small-M GEMV path (CUDA cores, weights streamed once) ----

// Whether the GEMV kernels can run these arguments: K % 8 == 0, group % 8 == 0 and K % group == 0,
// x 8-byte aligned with ldx % 4 == 0, qweight 16-byte aligned, 1 <= M <= 16. Anything else goes
// through dequantize + cuBLAS (heuristics), which handles every shape the op contract allows.
bool woq_gemv_supported(const WoqGemmParams& p);

// Bytes of fp32 workspace the GEMV needs for `splits` (0 when splits == 1).
size_t woq_gemv_workspace_bytes(int M, int N, int splits);

// Runs out = x @ dequant(W)^T + bias with an explicit config (see gemv_config_traits) and
// split-K factor; p.workspace must hold woq_gemv_workspace_bytes(M, N, splits) when splits > 1.
// M must not exceed the config's max M. Returns cudaErrorInvalidValue for unsupported arguments.
cudaError_t woq_gemv(const WoqGemmParams& p, GemvConfig config, int splits, cudaStream_t stream);

// ---- tensor-core path (mma.sync m16n8k16; M <= 64) ----

// Whether the tensor-core kernel can run these arguments: int4 with group % 128 == 0 (group 128
// or per-channel with K % 128 == 0), int8 with K % 64 == 0; x rows 16-byte aligned (ldx % 8 == 0),
// qweight 16-byte aligned, 1 <= M <= 64.
bool woq_mma_supported(const WoqGemmParams& p);

// Same contract as woq_gemv with a tensor-core config; workspace: woq_gemv_workspace_bytes.
cudaError_t woq_mma(const WoqGemmParams& p, MmaConfig config, int splits, cudaStream_t stream);

// ---- large-M path: dequantize to dense dtype [N, K] (then cuBLAS in the binding) ----

// w_out [N, K] of p.dtype, contiguous: w = round_to_T((q - z) * s). Uses qweight, scales, zeros,
// N, K, group, bits, dtype, scales_f32 of p. Any even K (int4) / any K (int8).
cudaError_t woq_dequantize(const WoqGemmParams& p, void* w_out, cudaStream_t stream);

// ---- per-token int8 activation quantization ----

// x [rows, K] (row stride ldx elements) of dtype f16/bf16/f32 -> q int8 [rows, K] contiguous,
// scales f32 [rows]. static_scale == nullptr: dynamic per row, s = absmax / 127,
// inv = absmax > 0 ? 127 / absmax : 0. Else inv = 1 / *static_scale and scales filled with it.
// q = clamp(rne(x * inv), -127, 127).
cudaError_t quantize_activation_int8(const void* x, DType dtype, int64_t rows, int64_t K,
                                     int64_t ldx, const float* static_scale, int8_t* q,
                                     float* scales, cudaStream_t stream);

}  // namespace squash::gemm
