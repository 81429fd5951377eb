// Fused LayerNorm / RMSNorm kernels (+residual add, +int8 per-token quantization): the torch-free
// interface. Host-only C++ (no CUDA device code), so the torch bindings and the C++ benchmark
// include it with any compiler. Semantics: docs in python/squash_ops/ops/norm.py and the brief:
//   h   = residual ? round_to_dtype(float(x) + float(residual)) : x     (h stored as residual_out)
//   LN  : y = (h - mean) * rsqrt(var_biased + eps)  [* weight] [+ bias]  (fp32 statistics)
//   RMS : y = h * rsqrt(mean(h^2) + eps)            [* weight] [+ bias]
//   out = round_to_dtype(y)                                              (non-quant)
//   q   = clamp(rne(y * inv), -127, 127), y in fp32                      (quant)
//         dynamic: inv = absmax>0 ? 127/absmax : 0, scales[row] = absmax/127
//         static : inv = 1/scale, scales[row] = scale (scale read on the device, never synced)
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace squash::norm {

enum class DType : int32_t { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };
enum class Kind : int32_t { kLayerNorm = 0, kRMSNorm = 1 };

inline int dtype_size(DType d) { return d == DType::kFloat32 ? 4 : 2; }

// All row strides are in elements of their tensor; the last dimension is contiguous (stride 1).
// Optional inputs are nullptr when absent. Exactly one of `out` (non-quant) and `q` (quant) is
// set; `residual` and `residual_out` are set together.
struct NormParams {
  Kind kind = Kind::kLayerNorm;
  DType dtype = DType::kFloat16;   // x, residual, out, residual_out
  DType wdtype = DType::kFloat16;  // weight and bias (both): dtype or kFloat32
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;

  const void* x = nullptr;
  int64_t x_stride = 0;
  const void* residual = nullptr;
  int64_t residual_stride = 0;
  const void* weight = nullptr;  // [hidden]
  const void* bias = nullptr;    // [hidden]; with weight == nullptr: the gamma-migrated form

  void* out = nullptr;  // dtype [rows, hidden]
  int64_t out_stride = 0;
  void* residual_out = nullptr;  // dtype [rows, hidden]
  int64_t residual_out_stride = 0;
  int8_t* q = nullptr;  // int8 [rows, hidden]
  int64_t q_stride = 0;
  float* scales = nullptr;              // float32 [rows] (quant only)
  const float* static_scale = nullptr;  // device float32, numel 1 (quant only); nullptr: dynamic
};

// One launch configuration. Each thread of a row keeps up to `nv` vectors of `vec` elements in
// registers; a row is handled by `threads_per_row` threads (a multiple of 32) and a block holds
// `rows_per_block` rows. `fallback` re-reads the row from L2 instead (any hidden).
struct NormConfig {
  int vec = 0;
  int nv = 0;
  bool fallback = false;
  int threads_per_row = 0;
  int rows_per_block = 0;
};

// Launches the kernel for `p` on `stream` (rows == 0: nothing to do). `force` (may be nullptr)
// overrides the heuristic for benchmarks: a non-zero force->vec lowers the vector width (it must
// be a power of two no larger than what the pointers allow), force->fallback or a non-zero
// force->nv picks the kernel; the thread counts are always derived. Returns
// cudaErrorInvalidValue for inconsistent params, cudaErrorInvalidConfiguration for a forced
// config that cannot hold the row, else the launch's error.
cudaError_t norm_launch(const NormParams& p, cudaStream_t stream, const NormConfig* force = nullptr);

// The configuration norm_launch would use (same errors, nothing launched).
cudaError_t norm_select_config(const NormParams& p, const NormConfig* force, NormConfig* config);

}  // namespace squash::norm
