// W8A8 GEMM with CUTLASS 3.x on sm_90a: TMA loads, wgmma int8 (s32 accumulators), warp-specialized
// producer/consumer warp groups, and an epilogue visitor tree (Sm90EVT) that scales and biases the
// accumulators before the TMA store. Instantiated one (config, output dtype) per file:
// w8a8_<tile>_<dtype>_sm90.cu (built only for sm_90a; declared in w8a8_launch.h).
//
//   A = x_q      int8 [M, K] K-major (ldx)     B = qweight int8 [N, K] K-major (ldw): the
//   canonical checkpoint layout is what wgmma wants for int8 (both operands K-major), no reorder.
//   D = out      [M, N] row-major (ldo)
#pragma once
#include <cuda_runtime.h>

#include "gemm/sm90_gemm.cuh"
#include "gemm/w8a8_gemm.h"
#include "gemm/w8a8_launch.h"

namespace squash::gemm {

// Compile-time choices of one 3.x config: CTA tile, cluster (TMA multicast of the operand shared
// along the cluster), mainloop and epilogue schedules. Stages: as many as shared memory holds
// after the epilogue's (StageCountAutoCarveout).
template <int TileM, int TileN, int TileK, int ClusterM, class Mainloop, class Epilogue>
struct W8A8Sm90Traits {
  using TileShape = cute::Shape<cute::Int<TileM>, cute::Int<TileN>, cute::Int<TileK>>;
  using ClusterShape = cute::Shape<cute::Int<ClusterM>, cute::_1, cute::_1>;
  using MainloopSchedule = Mainloop;
  using EpilogueSchedule = Epilogue;
  static_assert(TileM % 64 == 0, "wgmma tiles M by 64 per warp group");
  static_assert(TileK % 64 == 0, "TMA boxes of int8 K are 64-byte swizzle atoms or wider");
};

template <W8A8Config C>
struct W8A8Sm90Config;
// M <= 64: one warp group of MMA (64 rows) per CTA, not persistent: a 64-row tile covers every
// token, and the grid is simply one CTA per N tile. K = 256 per stage halves the barrier round
// trips per byte of weights streamed.
template <>
struct W8A8Sm90Config<W8A8Config::kSm90_64x64>
    : W8A8Sm90Traits<64, 64, 256, 1, cutlass::gemm::KernelTmaWarpSpecialized,
                     cutlass::epilogue::TmaWarpSpecialized> {};
// Ping-pong: two consumer warp groups alternate whole 64x128 tiles, so one's epilogue overlaps
// the other's MMA. Cluster 1: at M <= 64 there is a single M tile to share weights with.
template <>
struct W8A8Sm90Config<W8A8Config::kSm90_64x128>
    : W8A8Sm90Traits<64, 128, 128, 1, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                     cutlass::epilogue::TmaWarpSpecialized> {};
// 128x128 ping-pong with 2x1 clusters: the two CTAs of a cluster (adjacent M tiles) receive each
// weight tile from one TMA multicast.
template <>
struct W8A8Sm90Config<W8A8Config::kSm90_128x128>
    : W8A8Sm90Traits<128, 128, 128, 2, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                     cutlass::epilogue::TmaWarpSpecialized> {};
// Cooperative: both consumer warp groups share one 128x256 tile (64x256 each, 128 s32
// accumulator registers per thread), 2x1 clusters as above.
template <>
struct W8A8Sm90Config<W8A8Config::kSm90_128x256>
    : W8A8Sm90Traits<128, 256, 128, 2, cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                     cutlass::epilogue::TmaWarpSpecializedCooperative> {};

template <class ElementOut, W8A8Config C>
struct W8A8Sm90Kernel {
  using Cfg = W8A8Sm90Config<C>;
  using TileShape = typename Cfg::TileShape;
  static_assert(w8a8_config_info(C).arch == 90 &&
                    w8a8_config_info(C).tile_m == cute::size<0>(TileShape{}) &&
                    w8a8_config_info(C).tile_n == cute::size<1>(TileShape{}) &&
                    w8a8_config_info(C).tile_k == cute::size<2>(TileShape{}),
                "w8a8_heuristics.h's table must describe this config");
  static constexpr int kAlignAB = 16;  // int8 elements per 16 bytes (TMA)
  static constexpr int kAlignOut = 128 / cutlass::sizeof_bits<ElementOut>::value;
  static_assert(kW8A8AlignK % kAlignAB == 0 && kW8A8AlignN % kAlignOut == 0,
                "the binding's K/N alignment rule must cover the kernel's");

  // EVT: out = ScaleBiasRn(acc, x_scale[m], w_scale[n], bias[n]). The scale strides are
  // run-time bools (CUTLASS's dynamic broadcast): true = a vector, false = one scalar.
  using Acc = cutlass::epilogue::fusion::Sm90AccFetch;
  using XScale = cutlass::epilogue::fusion::Sm90ColBroadcast<
      0, TileShape, float, float, cute::Stride<bool, cute::_0, cute::_0>>;
  using WScale = cutlass::epilogue::fusion::Sm90RowBroadcast<
      0, TileShape, float, float, cute::Stride<cute::_0, bool, cute::_0>>;
  // nullptr bias: its null_default 0 (adding +0 leaves every product unchanged).
  using Bias = cutlass::epilogue::fusion::Sm90RowBroadcast<
      0, TileShape, float, float, cute::Stride<cute::_0, cute::_1, cute::_0>>;
  using Compute = cutlass::epilogue::fusion::Sm90Compute<
      ScaleBiasRn, ElementOut, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using EVT = cutlass::epilogue::fusion::Sm90EVT<Compute, Acc, XScale, WScale, Bias>;

  using Gemm = typename Sm90Gemm<int8_t, cutlass::layout::RowMajor, kAlignAB, int8_t,
                                 cutlass::layout::ColumnMajor, kAlignAB, int32_t, ElementOut,
                                 cutlass::layout::RowMajor, kAlignOut, TileShape,
                                 typename Cfg::ClusterShape, typename Cfg::MainloopSchedule,
                                 typename Cfg::EpilogueSchedule, EVT>::Gemm;
};

template <DType D, W8A8Config C>
cudaError_t w8a8_sm90_run(const W8A8GemmParams& p, cudaStream_t stream) {
  using ElementOut = typename CutlassElement<D>::type;
  using K = W8A8Sm90Kernel<ElementOut, C>;
  using Gemm = typename K::Gemm;
  using StrideA = typename Gemm::GemmKernel::StrideA;
  using StrideB = typename Gemm::GemmKernel::StrideB;
  using StrideC = typename Gemm::GemmKernel::StrideC;
  using StrideD = typename Gemm::GemmKernel::StrideD;
  using cute::_0;
  using cute::_1;

  // Argument trees follow the EVT types: {children..., node}.
  typename K::EVT::Arguments evt{
      {},                                                    // Acc
      {p.x_scales, 0.f, {p.x_scales_per_row, _0{}, _0{}}},   // XScale
      {p.w_scales, 0.f, {_0{}, p.w_scales_per_col, _0{}}},   // WScale
      {p.bias, 0.f, {}},                                     // Bias
      {}                                                     // Compute
  };
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {p.M, p.N, p.K, 1},
      {p.x, StrideA{p.ldx, _1{}, int64_t{0}}, p.qweight, StrideB{p.ldw, _1{}, int64_t{0}}},
      {evt, nullptr, StrideC{}, static_cast<ElementOut*>(p.out), StrideD{p.ldo, _1{}, int64_t{0}}},
      cutlass_hw_info(p.sm_count)};
  return cutlass_launch_adapter<Gemm>(args, stream);
}

}  // namespace squash::gemm
