// A CUTLASS 2.x GEMM (sm_80 mma.sync, cp.async multistage mainloop; runs on sm_80 and sm_90a)
// whose epilogue visitor tree (Sm80EVT) computes
//   D[m, n] = round_to_out( ((acc * xs[m]) * ws[n]) + bias[n] )      (ScaleBiasRn, float32)
// with xs a column vector, a scalar or absent (1), ws a row vector or a scalar, bias a row vector
// or absent (0). Used by W8A8 (int8 x int8, w8a8_sm80.cuh) and the sm_80 weight-only large-M path
// (16-bit x int8 mixed-input upcast, woq_cutlass_sm80.cuh).
//   A [M, K] row-major (lda)   B [N, K] row-major = [K, N] column-major (ldb)   D [M, N] row-major
#pragma once
#include <cuda_runtime.h>

// Order matters: visitors.hpp relies on what the GEMM headers bring in.
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/default_gemm_universal_with_visitor.h>
#include <cutlass/gemm/threadblock/threadblock_swizzle.h>
#include <cutlass/epilogue/threadblock/fusion/visitors.hpp>

#include "gemm/cutlass_common.cuh"

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

// CTA and warp tiles and cp.async stages of one 2.x config; the shared memory of the stages is
// static_assert'ed under the 227 KB an SM can give a block (A and B element sizes in bytes).
template <int TileM, int TileN, int TileK, int WarpM, int WarpN, int Stages>
struct Sm80Tile {
  using TileShape = cutlass::gemm::GemmShape<TileM, TileN, TileK>;
  using WarpShape = cutlass::gemm::GemmShape<WarpM, WarpN, TileK>;
  static constexpr int kStages = Stages;
  static_assert(TileM % WarpM == 0 && TileN % WarpN == 0, "warps must tile the CTA tile");
  template <int BytesA, int BytesB>
  static constexpr int smem_bytes() { return (TileM * BytesA + TileN * BytesB) * TileK * Stages; }
};

// ElementA x ElementB -> ElementAcc with MathOp (mma.sync m16n8k<InstK>), out ElementOut, bias
// ElementBias (float32 or the output type), tiles Tile (an Sm80Tile).
template <class ElementA, class ElementB, class ElementAcc, class MathOp, int InstK,
          class ElementOut, class ElementBias, class Tile>
struct Sm80ScaledGemm {
  using Out = ElementOut;
  using BiasElement = ElementBias;
  static constexpr int kAlignA = 128 / cutlass::sizeof_bits<ElementA>::value;  // 16-byte cp.async
  static constexpr int kAlignB = 128 / cutlass::sizeof_bits<ElementB>::value;
  static constexpr int kAlignOut = 128 / cutlass::sizeof_bits<ElementOut>::value;
  static constexpr int kEpilogueStages = 1;
  using InstructionShape = cutlass::gemm::GemmShape<16, 8, InstK>;
  static_assert(Tile::WarpShape::kM % 16 == 0 && Tile::WarpShape::kN % 8 == 0 &&
                    Tile::TileShape::kK % InstK == 0,
                "warp tiles must hold whole mma.sync steps");
  static_assert(Tile::template smem_bytes<sizeof(ElementA), sizeof(ElementB)>() <= 227 * 1024,
                "mainloop stages exceed the shared memory of an SM");

  using ThreadMap = cutlass::epilogue::threadblock::OutputTileThreadLayout<
      typename Tile::TileShape, typename Tile::WarpShape, ElementOut, kAlignOut, kEpilogueStages>;

  using Acc = cutlass::epilogue::threadblock::VisitorAccFetch;
  // xs per row (stride 1) or one scalar (stride 0): an element-wise predicated load; nullptr
  // reads its null_default 1.
  using XScale = cutlass::epilogue::threadblock::VisitorColBroadcast<
      ThreadMap, float, cute::Stride<int64_t, cute::_0, cute::_0>>;
  using WScale = VisitorRowOrScalar<ThreadMap, float>;
  // nullptr bias reads its null_default 0 (adding +0 leaves every value unchanged).
  using Bias = cutlass::epilogue::threadblock::VisitorRowBroadcast<
      ThreadMap, ElementBias, cute::Stride<cute::_0, cute::_1, cute::_0>>;
  using Compute = cutlass::epilogue::threadblock::VisitorCompute<
      ScaleBiasRn, ElementOut, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using EVTCompute = cutlass::epilogue::threadblock::Sm80EVT<Compute, Acc, XScale, WScale, Bias>;
  using Store = cutlass::epilogue::threadblock::VisitorAuxStore<
      ThreadMap, ElementOut, cutlass::FloatRoundStyle::round_to_nearest,
      cute::Stride<int64_t, cute::_1, cute::_0>>;
  using EVT = cutlass::epilogue::threadblock::Sm80EVT<Store, EVTCompute>;

  using GemmKernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      ElementA, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignA,
      ElementB, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignB,
      ElementOut, cutlass::layout::RowMajor, kAlignOut,
      ElementAcc, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      typename Tile::TileShape, typename Tile::WarpShape, InstructionShape, EVT,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, Tile::kStages,
      MathOp, kEpilogueStages>::GemmKernel;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

// Pointers and strides of one Sm80ScaledGemm launch.
struct Sm80ScaledArgs {
  const void* a;
  int64_t lda;
  const void* b;
  int64_t ldb;
  const float* xs;  // nullptr: 1
  bool xs_per_row;
  const float* ws;
  bool ws_per_col;
  const void* bias;  // nullptr: 0
  void* out;
  int64_t ldo;
  int M, N, K;
};

template <class Kernel>
cudaError_t sm80_scaled_gemm(const Sm80ScaledArgs& a, cudaStream_t stream) {
  using Gemm = typename Kernel::Gemm;
  using ElementBias = typename Kernel::BiasElement;
  using cute::_0;
  using cute::_1;
  // Argument trees follow the EVT types: {children..., node}.
  typename Kernel::EVT::Arguments evt{
      {
          {},                                                                  // Acc
          {a.xs, 1.f, {int64_t{a.xs_per_row ? 1 : 0}, _0{}, _0{}}},            // XScale
          {a.ws, a.ws_per_col},                                                // WScale
          {static_cast<ElementBias const*>(a.bias), ElementBias(0), {}},       // Bias
          {}                                                                   // Compute
      },
      {static_cast<typename Kernel::Out*>(a.out), {a.ldo, _1{}, _0{}}}     // Store
  };
  typename Gemm::Arguments args(cutlass::gemm::GemmUniversalMode::kGemm, {a.M, a.N, a.K},
                                /*batch_count=*/1, evt, a.a, a.b, nullptr, nullptr,
                                0, 0, 0, 0, a.lda, a.ldb, 0, 0);
  return cutlass_launch_adapter<Gemm>(args, stream);
}

}  // namespace squash::gemm
