// W8A8 GEMM with CUTLASS 2.x (sm_80: mma.sync int8 m16n8k32, cp.async multistage mainloop) and
// the scales and bias fused into an epilogue visitor tree (Sm80EVT). Instantiated one
// (config, output dtype) per file: w8a8_sm80_<tile>_<dtype>.cu (declared in w8a8_launch.h). Runs on sm_80 and sm_90a.
//
//   A = x_q      int8 [M, K] row-major (ldx)
//   B = qweight  int8 [N, K] row-major = [K, N] column-major (ldw): no reorder of the canonical
//                 checkpoint layout is needed
//   D = out      [M, N] row-major (ldo)
#pragma once
#include <cuda_runtime.h>

// Order matters: visitors.hpp relies on what the GEMM headers bring in.
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/default_gemm_universal_with_visitor.h>
#include <cutlass/gemm/threadblock/threadblock_swizzle.h>
#include <cutlass/epilogue/threadblock/fusion/visitors.hpp>

#include "gemm/w8a8_common.cuh"
#include "gemm/w8a8_gemm.h"
#include "gemm/w8a8_launch.h"

namespace squash::gemm {

// A row vector [N] or one scalar, chosen at run time (uniform per launch, so no divergence).
// CUTLASS's VisitorRowBroadcast loads 16-byte vectors of a contiguous row and cannot take a
// zero stride; this wraps it and, for a scalar, has every thread load the one element instead.
template <class ThreadMap, class Element>
struct VisitorRowOrScalar {
  using Row = cutlass::epilogue::threadblock::VisitorRowBroadcast<
      ThreadMap, Element, cute::Stride<cute::_0, cute::_1, cute::_0>>;

  struct Arguments {
    Element const* ptr = nullptr;
    bool per_column = true;
  };
  struct Params {
    typename Row::Params row;  // row.ptr_row is the vector or the scalar
    bool per_column = true;
  };
  struct SharedStorage {};

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return {{args.ptr, Element(0), {}}, args.per_column};
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }

  CUTLASS_HOST_DEVICE VisitorRowOrScalar() {}
  CUTLASS_HOST_DEVICE VisitorRowOrScalar(Params const& params, SharedStorage const&)
      : params_ptr(&params), row(params.row, typename Row::SharedStorage{}) {}

  Params const* params_ptr = nullptr;
  Row row;

  template <class RowCallbacks>
  struct Callbacks : cutlass::epilogue::threadblock::EmptyCallbacks {
    CUTLASS_DEVICE Callbacks(RowCallbacks&& row_cb, Element const* ptr, bool per_column)
        : row_cb(cute::forward<RowCallbacks>(row_cb)), ptr(ptr), per_column(per_column) {}

    RowCallbacks row_cb;
    Element const* ptr;
    bool per_column;
    Element scalar = Element(0);

    CUTLASS_DEVICE void begin_epilogue() {
      if (per_column) row_cb.begin_epilogue();
      else scalar = *ptr;
    }

    template <class ElementAccumulator, int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<Element, FragmentSize> visit(
        int iter_idx, int row_idx, int column_idx, int frg_idx,
        cutlass::Array<ElementAccumulator, FragmentSize> const& frg_acc) {
      if (per_column) return row_cb.visit(iter_idx, row_idx, column_idx, frg_idx, frg_acc);
      cutlass::Array<Element, FragmentSize> frg;
      frg.fill(scalar);
      return frg;
    }
  };

  template <class ProblemShape>
  CUTLASS_DEVICE auto get_callbacks(cutlass::gemm::GemmCoord tile_offset, int thread_idx,
                                    ProblemShape problem_shape) {
    auto row_cb = row.get_callbacks(tile_offset, thread_idx, problem_shape);
    return Callbacks<decltype(row_cb)>(cute::move(row_cb), params_ptr->row.ptr_row,
                                       params_ptr->per_column);
  }
};

// Compile-time choices of one 2.x config. kStages: cp.async stages of A and B tiles
// ((TileM + TileN) * TileK bytes each), static_assert'ed under the 227 KB an SM can give a block.
template <int TileM, int TileN, int TileK, int WarpM, int WarpN, int Stages>
struct W8A8Sm80Traits {
  using TileShape = cutlass::gemm::GemmShape<TileM, TileN, TileK>;
  using WarpShape = cutlass::gemm::GemmShape<WarpM, WarpN, TileK>;
  using InstructionShape = cutlass::gemm::GemmShape<16, 8, 32>;  // mma.sync int8
  static constexpr int kStages = Stages;
  static constexpr int kSmemBytes = (TileM + TileN) * TileK * Stages;
  static_assert(TileM % WarpM == 0 && TileN % WarpN == 0, "warps must tile the CTA tile");
  static_assert(WarpM % 16 == 0 && WarpN % 8 == 0 && TileK % 32 == 0, "whole mma.sync m16n8k32 steps");
  static_assert(kSmemBytes <= 227 * 1024, "mainloop stages exceed the shared memory of an SM");
};

template <W8A8Config C>
struct W8A8Sm80Config;
// 32x64x128, 2 warps of 32x32, 6 stages (72 KB): M <= 32.
template <>
struct W8A8Sm80Config<W8A8Config::kSm80_32x64> : W8A8Sm80Traits<32, 64, 128, 32, 32, 6> {};
// 64x128x128, 4 warps of 32x64, 4 stages (96 KB): M <= 128.
template <>
struct W8A8Sm80Config<W8A8Config::kSm80_64x128> : W8A8Sm80Traits<64, 128, 128, 32, 64, 4> {};
// 128x256x64, 8 warps of 64x64, 3 stages (72 KB): CUTLASS's default int8 sm_80 GEMM.
template <>
struct W8A8Sm80Config<W8A8Config::kSm80_128x256> : W8A8Sm80Traits<128, 256, 64, 64, 64, 3> {};

template <class ElementOut, W8A8Config C>
struct W8A8Sm80Kernel {
  using Cfg = W8A8Sm80Config<C>;
  static_assert(w8a8_config_info(C).arch == 80 && w8a8_config_info(C).tile_m == Cfg::TileShape::kM &&
                    w8a8_config_info(C).tile_n == Cfg::TileShape::kN &&
                    w8a8_config_info(C).tile_k == Cfg::TileShape::kK,
                "w8a8_heuristics.h's table must describe this config");
  static constexpr int kAlignAB = 16;  // int8 elements per 16-byte cp.async
  static constexpr int kAlignOut = 128 / cutlass::sizeof_bits<ElementOut>::value;
  static_assert(kW8A8AlignK % kAlignAB == 0 && kW8A8AlignN % kAlignOut == 0,
                "the binding's K/N alignment rule must cover the kernel's");
  static constexpr int kEpilogueStages = 1;

  using ThreadMap = cutlass::epilogue::threadblock::OutputTileThreadLayout<
      typename Cfg::TileShape, typename Cfg::WarpShape, ElementOut, kAlignOut, kEpilogueStages>;

  using Acc = cutlass::epilogue::threadblock::VisitorAccFetch;
  // x scale per row (stride 1) or one scalar (stride 0): an element-wise predicated load.
  using XScale = cutlass::epilogue::threadblock::VisitorColBroadcast<
      ThreadMap, float, cute::Stride<int64_t, cute::_0, cute::_0>>;
  using WScale = VisitorRowOrScalar<ThreadMap, float>;
  // nullptr bias: filled with its null_default 0 (adding +0 leaves every product unchanged).
  using Bias = cutlass::epilogue::threadblock::VisitorRowBroadcast<
      ThreadMap, float, cute::Stride<cute::_0, cute::_1, cute::_0>>;
  using Compute = cutlass::epilogue::threadblock::VisitorCompute<
      W8A8ScaleBias, ElementOut, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using EVTCompute = cutlass::epilogue::threadblock::Sm80EVT<Compute, Acc, XScale, WScale, Bias>;
  using Store = cutlass::epilogue::threadblock::VisitorAuxStore<
      ThreadMap, ElementOut, cutlass::FloatRoundStyle::round_to_nearest,
      cute::Stride<int64_t, cute::_1, cute::_0>>;
  using EVT = cutlass::epilogue::threadblock::Sm80EVT<Store, EVTCompute>;

  using GemmKernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      int8_t, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignAB,
      int8_t, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignAB,
      ElementOut, cutlass::layout::RowMajor, kAlignOut,
      int32_t, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      typename Cfg::TileShape, typename Cfg::WarpShape, typename Cfg::InstructionShape, EVT,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, Cfg::kStages,
      cutlass::arch::OpMultiplyAddSaturate, kEpilogueStages>::GemmKernel;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

template <DType D, W8A8Config C>
cudaError_t w8a8_sm80_run(const W8A8GemmParams& p, cudaStream_t stream) {
  using ElementOut = typename W8A8OutElement<D>::type;
  using K = W8A8Sm80Kernel<ElementOut, C>;
  using Gemm = typename K::Gemm;
  using cute::_0;
  using cute::_1;
  // Argument trees follow the EVT types: {children..., node}.
  typename K::EVT::Arguments evt{
      {
          {},                                                                        // Acc
          {p.x_scales, 0.f, {int64_t{p.x_scales_per_row ? 1 : 0}, _0{}, _0{}}},     // XScale
          {p.w_scales, p.w_scales_per_col},                                         // WScale
          {p.bias, 0.f, {}},                                                         // Bias
          {}                                                                         // Compute
      },
      {static_cast<ElementOut*>(p.out), {p.ldo, _1{}, _0{}}}                         // Store
  };
  typename Gemm::Arguments args(cutlass::gemm::GemmUniversalMode::kGemm, {p.M, p.N, p.K},
                                /*batch_count=*/1, evt, p.x, p.qweight, nullptr, nullptr,
                                0, 0, 0, 0, p.ldx, p.ldw, 0, 0);
  return w8a8_launch_adapter<Gemm>(args, stream);
}

}  // namespace squash::gemm
