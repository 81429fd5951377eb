// Host entry points of the CUTLASS GEMMs of the gemm family: W8A8 (w8a8_gemm.h) and the
// weight-only large-M path (woq_cutlass.h). Argument checks and dispatch to the per-(config,
// dtype) launchers declared in w8a8_launch.h / woq_cutlass_launch.h, and the small kernel that
// puts weight-only scales and zero points in CUTLASS's layout. No CUTLASS header here: this file
// compiles in seconds, the launchers each in their own file.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gemm/w8a8_gemm.h"
#include "gemm/w8a8_launch.h"
#include "gemm/woq_cutlass.h"
#include "gemm/woq_cutlass_launch.h"
#include "gemm/woq_dequant_kernel.cuh"  // woq_cutlass_scales_kernel

namespace squash::gemm {

namespace {

bool aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

template <W8A8Config C>
cudaError_t run_w8a8(const W8A8GemmParams& p, cudaStream_t stream) {
  if constexpr (w8a8_config_info(C).arch == 90) {
    switch (p.out_dtype) {
      case DType::kF16: return w8a8_sm90_run<DType::kF16, C>(p, stream);
      case DType::kBF16: return w8a8_sm90_run<DType::kBF16, C>(p, stream);
      case DType::kF32: return w8a8_sm90_run<DType::kF32, C>(p, stream);
    }
  } else {
    switch (p.out_dtype) {
      case DType::kF16: return w8a8_sm80_run<DType::kF16, C>(p, stream);
      case DType::kBF16: return w8a8_sm80_run<DType::kBF16, C>(p, stream);
      case DType::kF32: return w8a8_sm80_run<DType::kF32, C>(p, stream);
    }
  }
  return cudaErrorInvalidValue;
}

template <WoqCutlassConfig C>
cudaError_t run_woq(const WoqCutlassParams& p, cudaStream_t stream) {
  const bool bf16 = p.dtype == DType::kBF16;
  if constexpr (woq_cutlass_config_info(C).arch == 90) {
    if (p.bits == 4)
      return bf16 ? woq_cutlass_sm90_run<DType::kBF16, 4, C>(p, stream)
                  : woq_cutlass_sm90_run<DType::kF16, 4, C>(p, stream);
    return bf16 ? woq_cutlass_sm90_run<DType::kBF16, 8, C>(p, stream)
                : woq_cutlass_sm90_run<DType::kF16, 8, C>(p, stream);
  } else {
    return bf16 ? woq_cutlass_sm80_run<DType::kBF16, C>(p, stream)
                : woq_cutlass_sm80_run<DType::kF16, C>(p, stream);
  }
}

}  // namespace

// ---- W8A8 ----

bool w8a8_supported(const W8A8GemmParams& p, W8A8Config config) {
  const int c = static_cast<int>(config);
  if (c < 0 || c >= static_cast<int>(W8A8Config::kCount)) return false;
  if (p.out_dtype != DType::kF16 && p.out_dtype != DType::kBF16 && p.out_dtype != DType::kF32)
    return false;
  if (p.M < 1 || p.N < 1 || p.K < 1 || p.K % kW8A8AlignK != 0 || p.N % kW8A8AlignN != 0) return false;
  if (!p.x || !p.qweight || !p.x_scales || !p.w_scales || !p.out) return false;
  // 16-byte cp.async / TMA rows of A, B and D; 16-byte vector loads of the row broadcasts (2.x).
  if (!aligned(p.x, 16) || !aligned(p.qweight, 16) || !aligned(p.out, 16)) return false;
  if (p.ldx < p.K || p.ldx % 16 != 0 || p.ldw < p.K || p.ldw % 16 != 0) return false;
  if (p.ldo < p.N || p.ldo % 8 != 0) return false;
  if (!aligned(p.x_scales, 4) || !aligned(p.w_scales, p.w_scales_per_col ? 16 : 4)) return false;
  if (p.bias != nullptr && !aligned(p.bias, 16)) return false;
  return true;
}

cudaError_t w8a8_gemm(const W8A8GemmParams& p, W8A8Config config, cudaStream_t stream) {
  if (!w8a8_supported(p, config)) return cudaErrorInvalidValue;
  switch (config) {
    case W8A8Config::kSm80_32x64: return run_w8a8<W8A8Config::kSm80_32x64>(p, stream);
    case W8A8Config::kSm80_64x128: return run_w8a8<W8A8Config::kSm80_64x128>(p, stream);
    case W8A8Config::kSm80_128x256: return run_w8a8<W8A8Config::kSm80_128x256>(p, stream);
    case W8A8Config::kSm90_64x64: return run_w8a8<W8A8Config::kSm90_64x64>(p, stream);
    case W8A8Config::kSm90_64x128: return run_w8a8<W8A8Config::kSm90_64x128>(p, stream);
    case W8A8Config::kSm90_128x128: return run_w8a8<W8A8Config::kSm90_128x128>(p, stream);
    case W8A8Config::kSm90_128x256: return run_w8a8<W8A8Config::kSm90_128x256>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

// ---- weight-only, large M ----

bool woq_cutlass_shape_ok(int M, int N, int K, int group, int bits, DType dtype, WoqCutlassConfig config) {
  const int c = static_cast<int>(config);
  if (c < 0 || c >= static_cast<int>(WoqCutlassConfig::kCount)) return false;
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (M < 1 || N < 1 || K < 1 || N % 8 != 0 || group < 1 || K % group != 0) return false;
  if (bits == 4)  // sm_90 only; 16-byte rows of packed weights; groups of whole K tiles of 64
    return woq_cutlass_config_info(config).arch == 90 && K % 32 == 0 && (group == K || group % 64 == 0);
  return bits == 8 && group == K && K % 16 == 0;
}

bool woq_cutlass_supported(const WoqCutlassParams& p, WoqCutlassConfig config) {
  if (!woq_cutlass_shape_ok(p.M, p.N, p.K, p.group, p.bits, p.dtype, config)) return false;
  if (!p.x || !p.qweight || !p.scales_t || !p.out || (p.bits == 4 && !p.zeros_t)) return false;
  if (!aligned(p.x, 16) || !aligned(p.qweight, 16) || !aligned(p.out, 16) || !aligned(p.scales_t, 16))
    return false;
  if ((p.bits == 4 && !aligned(p.zeros_t, 16)) || (p.bias != nullptr && !aligned(p.bias, 16))) return false;
  return p.ldx >= p.K && p.ldx % 8 == 0 && p.ldo >= p.N && p.ldo % 8 == 0;
}

cudaError_t woq_cutlass_gemm(const WoqCutlassParams& p, WoqCutlassConfig config, cudaStream_t stream) {
  if (!woq_cutlass_supported(p, config)) return cudaErrorInvalidValue;
  switch (config) {
    case WoqCutlassConfig::kSm90_64x128: return run_woq<WoqCutlassConfig::kSm90_64x128>(p, stream);
    case WoqCutlassConfig::kSm90_128x128: return run_woq<WoqCutlassConfig::kSm90_128x128>(p, stream);
    case WoqCutlassConfig::kSm80_128x128: return run_woq<WoqCutlassConfig::kSm80_128x128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t woq_cutlass_scales(const void* scales, bool scales_f32, DType dtype, const uint8_t* zeros,
                               int N, int groups, float* scales_t, float* zeros_t, cudaStream_t stream) {
  if (!scales || !scales_t || N < 1 || groups < 1) return cudaErrorInvalidValue;
  if (!scales_f32 && dtype != DType::kF16 && dtype != DType::kBF16) return cudaErrorInvalidValue;
  const int64_t total = static_cast<int64_t>(N) * groups;
  const int threads = 256;
  const int64_t want = (total + threads - 1) / threads;
  const int blocks = static_cast<int>(want < 1024 ? want : 1024);
  if (scales_f32) {
    woq_cutlass_scales_kernel<<<blocks, threads, 0, stream>>>(static_cast<const float*>(scales), zeros, N,
                                                              groups, scales_t, zeros_t);
  } else if (dtype == DType::kF16) {
    woq_cutlass_scales_kernel<<<blocks, threads, 0, stream>>>(static_cast<const __half*>(scales), zeros, N,
                                                              groups, scales_t, zeros_t);
  } else {
    woq_cutlass_scales_kernel<<<blocks, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(scales),
                                                              zeros, N, groups, scales_t, zeros_t);
  }
  return cudaGetLastError();
}

}  // namespace squash::gemm
