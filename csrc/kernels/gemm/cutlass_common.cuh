// Shared by the CUTLASS kernels of the gemm family (W8A8: w8a8_sm80.cuh, w8a8_sm90.cuh; weight-only
// large M: woq_cutlass_sm80.cuh, woq_cutlass_sm90.cuh): output element types, the scale-and-bias
// arithmetic of the 2.x/3.x epilogue visitor trees, and the adapter calls that turn CUTLASS
// statuses into cudaError_t.
#pragma once
#include <cuda_runtime.h>

#include <cutlass/array.h>
#include <cutlass/cutlass.h>
#include <cutlass/kernel_hardware_info.h>
#include <cutlass/numeric_types.h>

#include "gemm/woq_gemm.h"  // DType

namespace squash::gemm {

// The CUTLASS element type of a dtype.
template <DType D>
struct CutlassElement;
template <>
struct CutlassElement<DType::kF16> { using type = cutlass::half_t; };
template <>
struct CutlassElement<DType::kBF16> { using type = cutlass::bfloat16_t; };
template <>
struct CutlassElement<DType::kF32> { using type = float; };

// ComputeFn of a 4-input Sm80/Sm90 VisitorCompute node: ComputeFn<Array<float, N>>{}(acc, xs, ws,
// bias) = ((acc * xs) * ws) + bias, acc already converted to float32 (int32 -> float rounds to
// nearest). __fmul_rn / __fadd_rn are never contracted into an FMA, so the roundings happen in the
// CPU W8A8 op's order, and xs = 1 or bias = 0 leave the value unchanged: W8A8 results are
// bit-identical to the CPU op (the GPU test asserts it).
template <class T>
struct ScaleBiasRn;

template <int N>
struct ScaleBiasRn<cutlass::Array<float, N>> {
  using Frag = cutlass::Array<float, N>;
  CUTLASS_DEVICE Frag operator()(Frag const& acc, Frag const& xs, Frag const& ws,
                                 Frag const& bias) const {
    Frag out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = __fadd_rn(__fmul_rn(__fmul_rn(acc[i], xs[i]), ws[i]), bias[i]);
    return out;
  }
};

// The SM count the persistent 3.x kernels size their grid with (queried when 0).
inline cutlass::KernelHardwareInfo cutlass_hw_info(int sm_count) {
  cutlass::KernelHardwareInfo hw;
  if (sm_count <= 0 && cudaGetDevice(&hw.device_id) == cudaSuccess)
    sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(hw.device_id);
  hw.sm_count = sm_count;
  return hw;
}

// can_implement, initialize and run of a CUTLASS device adapter (2.x and 3.x share the API).
// No workspace: none of our kernels asks for one (no split-K or stream-K), and a torch-free
// launcher cannot allocate it.
template <class Gemm>
cudaError_t cutlass_launch_adapter(typename Gemm::Arguments const& args, cudaStream_t stream) {
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (Gemm::get_workspace_size(args) != 0) return cudaErrorNotSupported;
  if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) {
    const cudaError_t e = cudaGetLastError();  // e.g. cudaFuncSetAttribute for the shared memory
    return e != cudaSuccess ? e : cudaErrorInvalidValue;
  }
  const cutlass::Status s = gemm.run(stream);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return s == cutlass::Status::kSuccess ? cudaSuccess : cudaErrorLaunchFailure;
}

}  // namespace squash::gemm
