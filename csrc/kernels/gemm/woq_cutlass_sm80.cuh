// W8A16 on sm_80 (also runs on sm_90a) with CUTLASS 2.x's mixed-input upcast: x (fp16/bf16) times
// int8 weights converted to x's type in registers (exact: |q| <= 127), mma.sync m16n8k16 with
// float32 accumulators; the per-channel scale and the bias are applied in the epilogue
// (scaled_gemm_sm80.cuh): out = round(acc * s[n] + bias[n]). Per channel, sum_k x q s = s sum_k x q,
// so the weights are never rounded. CUTLASS 2.x has no 4-bit x 16-bit path (BUILD_NOTES): int4
// large-M on sm_80 stays on dequantize + cuBLAS. One dtype per file:
// woq_cutlass_sm80_<tile>_int8_<dtype>.cu.
//   A = x [M, K] row-major (ldx)   B = qweight int8 [N, K] (canonical, = [K, N] column-major)
#pragma once
#include "gemm/scaled_gemm_sm80.cuh"
#include "gemm/woq_cutlass.h"
#include "gemm/woq_cutlass_launch.h"

namespace squash::gemm {

template <WoqCutlassConfig C>
struct WoqSm80Config;
// 128x128x64, 4 warps of 64x64, 4 stages (A 16 KB + B 8 KB per stage: 96 KB).
template <>
struct WoqSm80Config<WoqCutlassConfig::kSm80_128x128> : Sm80Tile<128, 128, 64, 64, 64, 4> {};

template <DType D, WoqCutlassConfig C>
cudaError_t woq_cutlass_sm80_run(const WoqCutlassParams& p, cudaStream_t stream) {
  using Cfg = WoqSm80Config<C>;
  static_assert(woq_cutlass_config_info(C).arch == 80 &&
                    woq_cutlass_config_info(C).tile_t == Cfg::TileShape::kM &&
                    woq_cutlass_config_info(C).tile_w == Cfg::TileShape::kN,
                "heuristics.h's table must describe this config");
  using T = typename CutlassElement<D>::type;
  using Kernel = Sm80ScaledGemm<T, int8_t, float, cutlass::arch::OpMultiplyAddMixedInputUpcast, 16, T, T, Cfg>;
  if (p.bits != 8) return cudaErrorInvalidValue;
  return sm80_scaled_gemm<Kernel>({p.x, p.ldx, p.qweight, p.K, nullptr, false, p.scales_t, true, p.bias,
                                   p.out, p.ldo, p.M, p.N, p.K},
                                  stream);
}

}  // namespace squash::gemm
