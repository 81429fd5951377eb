// Shared by the CUTLASS 2.x (w8a8_sm80.cuh) and 3.x (w8a8_sm90.cuh) W8A8 kernels: the output
// element types, the epilogue's arithmetic (one 4-input compute node of both visitor trees: acc
// converted int32 -> float32 (round to nearest), x scale (column broadcast), w scale and bias
// (row broadcasts, bias 0 when absent)) and the adapter calls that turn CUTLASS statuses into
// cudaError_t.
#pragma once
#include <cuda_runtime.h>

#include <cutlass/array.h>
#include <cutlass/cutlass.h>
#include <cutlass/numeric_types.h>

#include "gemm/w8a8_gemm.h"

namespace squash::gemm {

// The CUTLASS element type of an output dtype.
template <DType D>
struct W8A8OutElement;
template <>
struct W8A8OutElement<DType::kF16> { using type = cutlass::half_t; };
template <>
struct W8A8OutElement<DType::kBF16> { using type = cutlass::bfloat16_t; };
template <>
struct W8A8OutElement<DType::kF32> { using type = float; };

// ComputeFn of Sm80/Sm90 VisitorCompute: called as ComputeFn<Array<float, N>>{}(acc, xs, ws, b).
// __fmul_rn / __fadd_rn are never contracted into an FMA, so the order of roundings is the CPU
// op's ((acc * xs) * ws) + b, and a bias of 0 leaves the product unchanged: bit-identical
// results to the reference, which the GPU test asserts.
template <class T>
struct W8A8ScaleBias;

template <int N>
struct W8A8ScaleBias<cutlass::Array<float, N>> {
  using Frag = cutlass::Array<float, N>;
  CUTLASS_DEVICE Frag operator()(Frag const& acc, Frag const& xs, Frag const& ws,
                                 Frag const& bias) const {
    Frag out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = __fadd_rn(__fmul_rn(__fmul_rn(acc[i], xs[i]), ws[i]), bias[i]);
    return out;
  }
};

// can_implement, initialize and run of a CUTLASS device adapter (2.x and 3.x share the API).
// No workspace: none of our kernels asks for one (split-K and stream-K are not used), and a
// torch-free launcher cannot allocate it.
template <class Gemm>
cudaError_t w8a8_launch_adapter(typename Gemm::Arguments const& args, cudaStream_t stream) {
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
