// W8A8 GEMM with CUTLASS 2.x (sm_80: mma.sync int8 m16n8k32, cp.async multistage mainloop; runs on
// sm_80 and sm_90a) and the scales and bias fused into the epilogue (scaled_gemm_sm80.cuh).
// Instantiated one (config, output dtype) per file: w8a8_sm80_<tile>_<dtype>.cu (declared in
// w8a8_launch.h).
//   A = x_q      int8 [M, K] row-major (ldx)
//   B = qweight  int8 [N, K] row-major = [K, N] column-major (ldw): the canonical checkpoint
//                layout, no reorder
//   D = out      [M, N] row-major (ldo)
#pragma once
#include "gemm/scaled_gemm_sm80.cuh"
#include "gemm/w8a8_gemm.h"
#include "gemm/w8a8_launch.h"

namespace squash::gemm {

template <W8A8Config C>
struct W8A8Sm80Config;
// 32x64x128, 2 warps of 32x32, 6 stages (72 KB): M <= 32.
template <>
struct W8A8Sm80Config<W8A8Config::kSm80_32x64> : Sm80Tile<32, 64, 128, 32, 32, 6> {};
// 64x128x128, 4 warps of 32x64, 4 stages (96 KB): M <= 128.
template <>
struct W8A8Sm80Config<W8A8Config::kSm80_64x128> : Sm80Tile<64, 128, 128, 32, 64, 4> {};
// 128x256x64, 8 warps of 64x64, 3 stages (72 KB): CUTLASS's default int8 sm_80 GEMM.
template <>
struct W8A8Sm80Config<W8A8Config::kSm80_128x256> : Sm80Tile<128, 256, 64, 64, 64, 3> {};

template <DType D, W8A8Config C>
cudaError_t w8a8_sm80_run(const W8A8GemmParams& p, cudaStream_t stream) {
  using Cfg = W8A8Sm80Config<C>;
  static_assert(w8a8_config_info(C).arch == 80 && w8a8_config_info(C).tile_m == Cfg::TileShape::kM &&
                    w8a8_config_info(C).tile_n == Cfg::TileShape::kN &&
                    w8a8_config_info(C).tile_k == Cfg::TileShape::kK,
                "w8a8_heuristics.h's table must describe this config");
  using ElementOut = typename CutlassElement<D>::type;
  using Kernel = Sm80ScaledGemm<int8_t, int8_t, int32_t, cutlass::arch::OpMultiplyAddSaturate, 32,
                                ElementOut, float, Cfg>;
  static_assert(kW8A8AlignK % Kernel::kAlignA == 0 && kW8A8AlignN % Kernel::kAlignOut == 0,
                "the binding's K/N alignment rule must cover the kernel's");
  return sm80_scaled_gemm<Kernel>({p.x, p.ldx, p.qweight, p.ldw, p.x_scales, p.x_scales_per_row,
                                   p.w_scales, p.w_scales_per_col, p.bias, p.out, p.ldo, p.M, p.N, p.K},
                                  stream);
}

}  // namespace squash::gemm
