// W4A16 / W8A16 with CUTLASS 3.x mixed-input GEMM on sm_90a (TMA + wgmma, warp-specialized).
// One (weight bits, dtype, config) per file: woq_cutlass_<tile>_int<bits>_<dtype>_sm90.cu.
//
// wgmma reads its A operand from registers when A must be converted, so the quantized weight is A
// and the problem is computed transposed, out^T = W x^T, which needs no data movement:
//   A = qweight   [N, K] K-major (canonical rows), cutlass::uint4b_t or int8_t, + scales/zeros
//   B = x         [M, K] K-major (row stride ldx)                    -> CUTLASS (M_c, N_c) = (N, M)
//   D = out       [M, N] row-major = (N, M) column-major (ldo): still a TMA store
// The mainloop converts each weight to float32, applies w = q * s + z' (z' = -zero * s) in
// float32 and rounds to T once before the MMA; the epilogue adds the bias (a column broadcast in
// the transposed problem).
#pragma once
#include <cuda_runtime.h>

#include "gemm/sm90_gemm.cuh"
#include "gemm/woq_cutlass.h"
#include "gemm/woq_cutlass_launch.h"

namespace squash::gemm {

template <WoqCutlassConfig C>
struct WoqSm90Config;
// 64 weight rows x 128 tokens, ping-pong (each consumer warp group owns a whole tile).
template <>
struct WoqSm90Config<WoqCutlassConfig::kSm90_64x128> {
  using TileShape = cute::Shape<cute::_64, cute::_128, cute::_64>;
  using MainloopSchedule = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
  using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecialized;
};
// 128 x 128, cooperative (two consumer warp groups of 64 weight rows share a tile).
template <>
struct WoqSm90Config<WoqCutlassConfig::kSm90_128x128> {
  using TileShape = cute::Shape<cute::_128, cute::_128, cute::_64>;
  using MainloopSchedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
  using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecializedCooperative;
};

template <class T, int Bits, WoqCutlassConfig C>
struct WoqSm90Kernel {
  using Cfg = WoqSm90Config<C>;
  using TileShape = typename Cfg::TileShape;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  // K tile = one 128-byte swizzle atom of the 16-bit operand; CUTLASS needs group % K tile == 0.
  static_assert(cute::size<2>(TileShape{}) == 64, "woq_cutlass_supported's group rule assumes a K tile of 64");
  static_assert(woq_cutlass_config_info(C).arch == 90 &&
                    woq_cutlass_config_info(C).tile_w == cute::size<0>(TileShape{}) &&
                    woq_cutlass_config_info(C).tile_t == cute::size<1>(TileShape{}),
                "heuristics.h's table must describe this config");

  using ElementQ = cute::conditional_t<Bits == 4, cutlass::uint4b_t, int8_t>;
  // {operand, scale, zero}: int4 always carries a zero (8 when symmetric); int8 is symmetric.
  using ElementAPair = cute::conditional_t<Bits == 4, cute::tuple<ElementQ, float, float>,
                                           cute::tuple<ElementQ, float>>;
  static constexpr int kAlignA = 128 / cutlass::sizeof_bits<ElementQ>::value;  // 16-byte TMA rows
  static constexpr int kAlignB = 8;
  static constexpr int kAlignD = 8;

  // out = acc + bias[row of the transposed problem]; nullptr bias reads 0.
  using Bias = cutlass::epilogue::fusion::Sm90ColBroadcast<
      0, TileShape, T, float, cute::Stride<cute::_1, cute::_0, cute::_0>>;
  using EVT = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, T, float, cutlass::FloatRoundStyle::round_to_nearest>,
      cutlass::epilogue::fusion::Sm90AccFetch, Bias>;

  using Gemm = typename Sm90Gemm<ElementAPair, cutlass::layout::RowMajor, kAlignA, T,
                                 cutlass::layout::ColumnMajor, kAlignB, float, T,
                                 cutlass::layout::ColumnMajor, kAlignD, TileShape, ClusterShape,
                                 typename Cfg::MainloopSchedule, typename Cfg::EpilogueSchedule,
                                 EVT>::Gemm;
};

template <DType D, int Bits, WoqCutlassConfig C>
cudaError_t woq_cutlass_sm90_run(const WoqCutlassParams& p, cudaStream_t stream) {
  using T = typename CutlassElement<D>::type;
  using K = WoqSm90Kernel<T, Bits, C>;
  using Gemm = typename K::Gemm;
  using GK = typename Gemm::GemmKernel;
  using cute::_0;
  using cute::_1;
  typename K::EVT::Arguments evt{
      {},                                                           // Acc
      {static_cast<T const*>(p.bias), T(0), {_1{}, _0{}, _0{}}},   // Bias
      {}                                                            // plus
  };
  typename GK::MainloopArguments mainloop{
      static_cast<typename K::ElementQ const*>(p.qweight), typename GK::StrideA{p.K, _1{}, int64_t{0}},
      static_cast<T const*>(p.x), typename GK::StrideB{p.ldx, _1{}, int64_t{0}},
      p.scales_t, typename GK::CollectiveMainloop::StrideScale{_1{}, int64_t{p.N}, int64_t{0}},
      p.group, Bits == 4 ? p.zeros_t : nullptr};
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {p.N, p.M, p.K, 1},
      mainloop,
      {evt, nullptr, typename GK::StrideC{}, static_cast<T*>(p.out),
       typename GK::StrideD{_1{}, p.ldo, int64_t{0}}},
      cutlass_hw_info(p.sm_count)};
  return cutlass_launch_adapter<Gemm>(args, stream);
}

}  // namespace squash::gemm
