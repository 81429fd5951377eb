// Host entry points of the W8A8 GEMM (w8a8_gemm.h): argument checks and dispatch to the
// per-(config, dtype) CUTLASS launchers (w8a8_launch.h). No CUTLASS header here: this file
// compiles in about a second.
#include <cuda_runtime.h>

#include <cstdint>

#include "gemm/w8a8_gemm.h"
#include "gemm/w8a8_launch.h"

namespace squash::gemm {

namespace {

bool aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

template <W8A8Config C>
cudaError_t run_config(const W8A8GemmParams& p, cudaStream_t stream) {
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

}  // namespace

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
    case W8A8Config::kSm80_32x64: return run_config<W8A8Config::kSm80_32x64>(p, stream);
    case W8A8Config::kSm80_64x128: return run_config<W8A8Config::kSm80_64x128>(p, stream);
    case W8A8Config::kSm80_128x256: return run_config<W8A8Config::kSm80_128x256>(p, stream);
    case W8A8Config::kSm90_64x64: return run_config<W8A8Config::kSm90_64x64>(p, stream);
    case W8A8Config::kSm90_64x128: return run_config<W8A8Config::kSm90_64x128>(p, stream);
    case W8A8Config::kSm90_128x128: return run_config<W8A8Config::kSm90_128x128>(p, stream);
    case W8A8Config::kSm90_128x256: return run_config<W8A8Config::kSm90_128x256>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace squash::gemm
