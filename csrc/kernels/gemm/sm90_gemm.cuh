// The CUTLASS 3.x plumbing shared by the sm_90a kernels of the gemm family (W8A8: w8a8_sm90.cuh;
// weight-only large M: woq_cutlass_sm90.cuh): a warp-specialized TMA + wgmma GEMM built by the
// collective builders from operand types/layouts, tiles, schedules and an epilogue visitor tree
// (no C operand), with the mainloop getting all the shared memory the epilogue leaves.
#pragma once
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

#include "gemm/cutlass_common.cuh"

namespace squash::gemm {

// ElementA may be a mixed-input tuple {operand, scale[, zero]}. Alignments in elements (16 bytes).
template <class ElementA, class LayoutA, int AlignA, class ElementB, class LayoutB, int AlignB,
          class ElementAcc, class ElementD, class LayoutD, int AlignD, class TileShape,
          class ClusterShape, class MainloopSchedule, class EpilogueSchedule, class EVT>
struct Sm90Gemm {
  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, float,
      void, LayoutD, AlignD,  // no C operand
      ElementD, LayoutD, AlignD, EpilogueSchedule, EVT>::CollectiveOp;
  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA, LayoutA, AlignA, ElementB,
      LayoutB, AlignB, ElementAcc, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<
          static_cast<int>(sizeof(typename CollectiveEpilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<
      cute::Shape<int, int, int, int>, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

}  // namespace squash::gemm
