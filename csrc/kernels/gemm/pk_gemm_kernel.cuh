// Weight-only GEMM on prepacked weights (prepacked_layout.h) with mma.sync m16n8k16 and fp32
// accumulation, for 1..max_m tokens per block (Marlin-class; configs and heuristics in
// heuristics.h, "prepacked tensor-core kernel").
//
// Roles: x is the mma A operand (tokens as the 16 rows, padded with zeros in registers: rows past
// M are never loaded), the weights are the B operand (8 output channels per n8 tile). Per stage a
// block streams tile_n x stage_k weights plus the stage's x rows (and, for group-wise scales,
// the stage's scales and zero points) into shared memory with cp.async, `stages` deep. Each warp
// then reads, per k tile, one 16-byte chunk per n8 tile (prepacked_layout.h): four words, each
// the B fragments of two mma steps after a lop3 + sub per register (int4) or a byte-permute + sub
// (int8) - about 1.5 CUDA-core instructions per int4 weight and 2 mma per word, so the kernel
// can stream weights at DRAM speed (H100: ~26 int4 weights/clk/SM at 3 TB/s against
// 128 thread-instructions/clk/SM). x fragments are 16-byte shared loads of x in natural order
// (the k permutation of the layout), shared by the warp's n8 tiles.
//
// Scales in fp32, weights exact: the dequantized B registers hold q - z exactly (|q - z| <= 15
// int4, |q| <= 128 int8 are exact in fp16 and bf16). With group-wise scales, the mma accumulate
// one group window (32, 64 or 128 k) into `tmp`, then acc += s * tmp per output column in fp32
// (4 FFMA per n8 tile per window, ~0.1 instructions per weight at g = 128). Per-channel scales
// (and int8) multiply once in the epilogue. So the result equals the float32 CPU reference up to
// accumulation order, never rounding a weight to 16 bits.
//
// Split-K (gridDim.z > 1, deterministic): every split writes its fp32 partial tile to the
// workspace, then the last split to arrive at a tile (atomic counter per tile, reset by it)
// sums all partials in split order and writes the output - no second launch.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gemm/gemm_common.cuh"
#include "gemm/heuristics.h"
#include "gemm/pk_gemm.h"
#include "gemm/pk_ptx.cuh"
#include "gemm/prepacked_layout.h"

namespace squash::gemm {

template <int BITS, PkConfig CFG>
struct PkTraits {
  static constexpr int kMT = pk_config_info(CFG).mt;
  static constexpr int kNW = pk_config_info(CFG).nw;
  static constexpr int kKW = pk_config_info(CFG).kw;
  static constexpr int kWN = pk_config_info(CFG).wn;
  static constexpr int kWK = pk_config_info(CFG).wk;
  static constexpr int kStages = pk_config_info(CFG).stages;
  static constexpr int kWarps = kWN * kWK;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kMaxM = 16 * kMT;                 // token rows per block
  static constexpr int kTileK = pack::tile_k(BITS);      // k per prepacked tile
  static constexpr int kSlices = kTileK / pack::kSliceK; // k32 slices per tile
  static constexpr int kTilesN = kNW * kWN;              // n8 tiles per block
  static constexpr int kTN = 8 * kTilesN;                // output channels per block
  static constexpr int kUnits = kKW * kWK;               // k tiles per stage
  static constexpr int kTK = kTileK * kUnits;            // k per stage
  static constexpr int kXChunks = kTK / 8;               // 16-byte x chunks per row per stage
  static constexpr int kWBytes = kTilesN * kUnits * pack::kTileBytes;

  static_assert(BITS == 4 || BITS == 8, "int4 or int8 weights");
  static_assert(kTileK % pack::kSliceK == 0 && kSlices * (BITS == 4 ? 1 : 2) == 4,
                "a lane's 16 bytes are 4 slices (int4) or 2 slices x 2 steps (int8)");
  static_assert(kTN == pk_tile_n(CFG) && kUnits == pk_stage_units(CFG) && kMaxM == pk_max_m(CFG),
                "traits agree with heuristics.h");
  static_assert(kXChunks >= 8, "x rows of >= 128 bytes: the swizzle flips chunk bit 2 within a row");
  static_assert(kStages >= 2 && kThreads <= 1024, "pipeline and block size");

  // One pipeline stage in shared memory: weights | x rows | scales [tiles][gps][8] f32 |
  // zeros [tiles][gps][8] u8 (gps = groups per stage; scales/zeros only with group-wise scales).
  static constexpr size_t x_offset() { return kWBytes; }
  static constexpr size_t scales_offset(int rows) { return x_offset() + static_cast<size_t>(rows) * kTK * 2; }
  static constexpr size_t zeros_offset(int rows, int gps) {
    return scales_offset(rows) + static_cast<size_t>(kTilesN) * gps * 32;
  }
  static constexpr size_t stage_bytes(int rows, int gps, bool zeros) {
    const size_t end = zeros_offset(rows, gps) + (zeros ? static_cast<size_t>(kTilesN) * gps * 8 : 0);
    return (end + 15) / 16 * 16;
  }
  // The epilogue reuses the pipeline's memory for the k-warps' partial tiles [wk][rows][kTN] f32.
  static constexpr size_t smem_bytes(int rows, int gps, bool zeros) {
    const size_t pipe = kStages * stage_bytes(rows, gps, zeros);
    const size_t red = static_cast<size_t>(kWK) * rows * kTN * 4;
    return pipe > red ? pipe : red;
  }
};

// 16-byte x chunk c of token row r within a stage: the reads of a quarter-warp cover rows (r, r+1)
// x chunks 4s + t (t = 0..3); rows are multiples of 128 bytes apart, so without the swizzle both
// rows would hit the same banks. Flipping chunk bit 2 on odd rows puts them 64 bytes apart.
__device__ __forceinline__ int pk_x_swizzle(int c, int r) { return c ^ ((r & 1) << 2); }

// ---- in-register dequantization (exact q - z) ----

template <typename T>
struct PkMagic;
// fp16: OR-ing a nibble into the mantissa of 1024 (0x6400) gives 1024 + q; a nibble at bits 4..7
// gives 1024 + 16q, and fma(v, 1/16, -(64 + z)) = q - z exactly (Marlin's fp16 path: saves the
// two shifts of the plain path). A zero point above 15 gives (NaN, NaN) in lo and hi, so the
// group's B registers are NaN (gemm_common.cuh, "int4 zero points outside 0..15"): the check runs
// where a zero point is read (once per group window), never per weight.
template <>
struct PkMagic<__half> {
  static constexpr uint32_t kBase2 = 0x64006400u;
  static __device__ __forceinline__ uint32_t lo(uint32_t z) { return int4_magic_zero2<__half>(z); }
  static __device__ __forceinline__ uint32_t hi(uint32_t z) {
    return z <= kInt4MaxZero ? 0xD400D400u | ((z << 4) * 0x00010001u) : Int4Magic<__half>::kNaN2;
  }
};
// bf16 has 7 mantissa bits: 128 + q (q <= 15) is exact, 128 + 16q is not, so every pair is
// shifted down to bits 0..3 first.
template <>
struct PkMagic<__nv_bfloat16> {
  static constexpr uint32_t kBase2 = 0x43004300u;
  static __device__ __forceinline__ uint32_t lo(uint32_t z) { return int4_magic_zero2<__nv_bfloat16>(z); }
  static __device__ __forceinline__ uint32_t hi(uint32_t) { return 0u; }
};

__device__ __forceinline__ uint32_t hfma2_bits(uint32_t a, uint32_t b, uint32_t c) {
  return pair_bits(__hfma2(bits_as_half2(a), bits_as_half2(b), bits_as_half2(c)));
}

// One int4 word (prepacked_layout.h) -> B registers {b0, b1} of mma step 0 and step 1, holding
// q - z exactly; zlo / zhi from PkMagic<T>::lo / hi of the zero point.
template <typename T>
__device__ __forceinline__ void pk_dequant_int4(uint32_t w, uint32_t zlo, uint32_t zhi, uint32_t (&b)[4]) {
  constexpr uint32_t kBase2 = PkMagic<T>::kBase2;
  if constexpr (std::is_same_v<T, __half>) {
    constexpr uint32_t kSixteenth2 = 0x2C002C00u;  // (1/16, 1/16)
    b[0] = hsub2_bits(lop3<kLopAndOr>(w, 0x000F000Fu, kBase2), zlo, T{});
    b[1] = hfma2_bits(lop3<kLopAndOr>(w, 0x00F000F0u, kBase2), kSixteenth2, zhi);
    w >>= 8;
    b[2] = hsub2_bits(lop3<kLopAndOr>(w, 0x000F000Fu, kBase2), zlo, T{});
    b[3] = hfma2_bits(lop3<kLopAndOr>(w, 0x00F000F0u, kBase2), kSixteenth2, zhi);
  } else {
    (void)zhi;
#pragma unroll
    for (int s = 0; s < 4; ++s) b[s] = hsub2_bits(lop3<kLopAndOr>(w >> (4 * s), 0x000F000Fu, kBase2), zlo, T{});
  }
}

// One int8 word (bytes q + 128, prepacked_layout.h) -> {b0, b1} of one mma step, holding q.
__device__ __forceinline__ void pk_dequant_int8(uint32_t w, __half, uint32_t& b0, uint32_t& b1) {
  // bytes into the mantissa of 1024: 1024 + (q + 128), minus 1152.
  b0 = hsub2_bits(__byte_perm(w, 0x64646464u, 0x4140u), 0x64806480u, __half{});
  b1 = hsub2_bits(__byte_perm(w, 0x64646464u, 0x4342u), 0x64806480u, __half{});
}
__device__ __forceinline__ void pk_dequant_int8(uint32_t w, __nv_bfloat16, uint32_t& b0, uint32_t& b1) {
  // bf16 cannot hold 128 + 255: through the fp32 magic 2^23 (exact), then an exact narrowing.
  constexpr float kMagic128 = kMagic + 128.0f;
  b0 = pair_bits(__floats2bfloat162_rn(magic_byte<0>(w) - kMagic128, magic_byte<1>(w) - kMagic128));
  b1 = pair_bits(__floats2bfloat162_rn(magic_byte<2>(w) - kMagic128, magic_byte<3>(w) - kMagic128));
}

__device__ __forceinline__ uint32_t uint4_word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// ---- the kernel: grid (row chunks, column blocks, splits), PkTraits::kThreads threads ----

template <typename T, int BITS, bool GROUPED, PkConfig CFG>
__global__ void __launch_bounds__(PkTraits<BITS, CFG>::kThreads, 1) pk_gemm_kernel(const PkGemmParams p) {
  using Tr = PkTraits<BITS, CFG>;
  constexpr int MT = Tr::kMT, NW = Tr::kNW, KW = Tr::kKW, S = Tr::kStages, SL = Tr::kSlices;
  static_assert(!GROUPED || BITS == 4, "group-wise scales are int4 only");
  // Own name: extern __shared__ arrays of all kernels share one namespace.
  SQUASH_EXTERN_SHARED(uint4, pk_smem_raw);
  unsigned char* const smem = reinterpret_cast<unsigned char*>(pk_smem_raw);
  __shared__ int pk_is_last;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wn = warp % Tr::kWN, wk = warp / Tr::kWN;
  const int M = p.M, N = p.N, K = p.K, group = p.group;
  const int m0 = blockIdx.x * Tr::kMaxM;
  const int rows = min(Tr::kMaxM, M - m0);  // token rows of this block (>= 1)
  const int NT = N / pack::kTileN;
  const int nt0 = blockIdx.y * Tr::kTilesN;   // first n8 tile of the block
  const int KT = (K + Tr::kTileK - 1) / Tr::kTileK;
  const int G = GROUPED ? K / group : 1;
  const int gps = GROUPED ? Tr::kTK / group : 0;  // groups per stage (group divides kTK)
  const int gps_log2 = GROUPED ? __ffs(gps) - 1 : 0;  // gps is a power of two: shifts, not divisions
  const bool has_zeros = BITS == 4 && p.zeros != nullptr;

  // This split's stages [st_begin, st_begin + n_st) and k tiles up to unit_end.
  const int stages_total = (KT + Tr::kUnits - 1) / Tr::kUnits;
  const int per_split = (stages_total + gridDim.z - 1) / gridDim.z;
  const int st_begin = blockIdx.z * per_split;
  const int n_st = max(0, min(stages_total, st_begin + per_split) - st_begin);
  const int unit_end = min(KT, (st_begin + n_st) * Tr::kUnits);
  const int k_end = min(K, unit_end * Tr::kTileK);

  const size_t stage_bytes = Tr::stage_bytes(rows, gps, has_zeros);
  const size_t s_off = Tr::scales_offset(rows), z_off = Tr::zeros_offset(rows, gps);
  const T* __restrict__ x = static_cast<const T*>(p.x) + static_cast<int64_t>(m0) * p.ldx;

  auto load_stage = [&](int st, int buf) {
    unsigned char* sb = smem + buf * stage_bytes;
    const int u0 = st * Tr::kUnits;
    // Weights: tile (j, u) of the stage at (j * kUnits + u) * 512; tiles past N or past this
    // split's k range are zero-filled.
    constexpr int kWChunks = Tr::kTilesN * Tr::kUnits * 32;
#pragma unroll 2
    for (int c = tid; c < kWChunks; c += Tr::kThreads) {
      const int j = c / (Tr::kUnits * 32), u = (c / 32) % Tr::kUnits, l = c % 32;
      const int tn = nt0 + j, ku = u0 + u;
      const bool ok = tn < NT && ku < unit_end;
      const int64_t tile = ok ? static_cast<int64_t>(tn) * KT + ku : 0;
      cp_async16(sb + c * 16, p.packed + tile * pack::kTileBytes + l * 16, ok);
    }
    // x rows: chunk (r, c) = x[m0 + r, k0 + 8c .. +7], zero past k_end (K % 8 == 0: whole chunks).
    const int k0 = u0 * Tr::kTileK;
    for (int c = tid; c < rows * Tr::kXChunks; c += Tr::kThreads) {
      const int r = c / Tr::kXChunks, cc = c % Tr::kXChunks, k = k0 + 8 * cc;
      const bool ok = k < k_end;
      cp_async16(sb + Tr::x_offset() + (r * Tr::kXChunks + pk_x_swizzle(cc, r)) * 16,
                 x + static_cast<int64_t>(r) * p.ldx + (ok ? k : 0), ok);
    }
    if constexpr (GROUPED) {
      // Scales (32 bytes per tile and group) and zero points (8 bytes) of the stage's groups.
      const int gi0 = k0 / group;
      for (int c = tid; c < Tr::kTilesN * gps * 2; c += Tr::kThreads) {
        const int j = c >> (gps_log2 + 1), gg = (c >> 1) & (gps - 1);
        const int tn = nt0 + j, gi = gi0 + gg;
        const bool ok = tn < NT && gi < G;
        const int64_t off = ok ? (static_cast<int64_t>(tn) * G + gi) * pack::kTileN + 4 * (c & 1) : 0;
        cp_async16(sb + s_off + c * 16, p.scales + off, ok);
      }
      if (has_zeros) {
        for (int c = tid; c < Tr::kTilesN * gps; c += Tr::kThreads) {
          const int j = c >> gps_log2, gg = c & (gps - 1);
          const int tn = nt0 + j, gi = gi0 + gg;
          const bool ok = tn < NT && gi < G;
          const int64_t off = ok ? (static_cast<int64_t>(tn) * G + gi) * pack::kTileN : 0;
          cp_async8(sb + z_off + c * 8, p.zeros + off, ok);
        }
      }
    }
  };

  float acc[MT][NW][4];
  float tmp[MT][NW][4];  // group window partial sums (GROUPED only; otherwise dead)
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NW; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mt][j][r] = tmp[mt][j][r] = 0.0f;

  // Zero-point magic of each of this warp's n8 tiles (B column g). Per-channel: once, here.
  uint32_t zlo[NW], zhi[NW];
#pragma unroll
  for (int j = 0; j < NW; ++j) {
    const int tn = nt0 + wn * NW + j;
    const uint32_t z = (!GROUPED && has_zeros && tn < NT) ? p.zeros[tn * pack::kTileN + g] : 8u;
    zlo[j] = PkMagic<T>::lo(z);
    zhi[j] = PkMagic<T>::hi(z);
  }

  auto compute_stage = [&](int buf, int st) {
    const unsigned char* sb = smem + buf * stage_bytes;
    const int u0 = st * Tr::kUnits;
    const int gi0 = GROUPED ? u0 * Tr::kTileK / group : 0;
#pragma unroll
    for (int q = 0; q < KW; ++q) {
      const int u = wk * KW + q;
      if (u0 + u >= unit_end) break;  // warp-uniform: the split's last stage may be partial
      uint4 wv[NW];
#pragma unroll
      for (int j = 0; j < NW; ++j)
        wv[j] = *reinterpret_cast<const uint4*>(sb + ((wn * NW + j) * Tr::kUnits + u) * pack::kTileBytes + lane * 16);
#pragma unroll
      for (int i = 0; i < SL; ++i) {
        const int kslice = (u0 + u) * Tr::kTileK + pack::kSliceK * i;
        if constexpr (GROUPED) {
          if (has_zeros && kslice % group == 0) {  // a group window starts: its zero points
            const int gg = kslice / group - gi0;
#pragma unroll
            for (int j = 0; j < NW; ++j) {
              const uint32_t z = sb[z_off + ((wn * NW + j) * gps + gg) * pack::kTileN + g];
              zlo[j] = PkMagic<T>::lo(z);
              zhi[j] = PkMagic<T>::hi(z);
            }
          }
        }
        uint32_t b[NW][4];  // {b0, b1} of step 0, then of step 1
#pragma unroll
        for (int j = 0; j < NW; ++j) {
          if constexpr (BITS == 4) {
            pk_dequant_int4<T>(uint4_word(wv[j], i), zlo[j], zhi[j], b[j]);
          } else {
            pk_dequant_int8(uint4_word(wv[j], 2 * i), T{}, b[j][0], b[j][1]);
            pk_dequant_int8(uint4_word(wv[j], 2 * i + 1), T{}, b[j][2], b[j][3]);
          }
        }
        const int xc = pk_x_swizzle((u * Tr::kTileK + pack::kSliceK * i) / 8 + t, g);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if (16 * mt >= rows) break;  // warp-uniform
          const int r0 = 16 * mt + g;
          const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
          const uint4* xs = reinterpret_cast<const uint4*>(sb + Tr::x_offset());
          const uint4 lo = r0 < rows ? xs[r0 * Tr::kXChunks + xc] : zero4;
          const uint4 hi = (16 * mt + 8 < rows && r0 + 8 < rows) ? xs[(r0 + 8) * Tr::kXChunks + xc] : zero4;
          // a0/a2: row g, k slots 2t.., 2t+8..; a1/a3: row g + 8 (the layout's k permutation).
          const uint32_t a_step0[4] = {lo.x, hi.x, lo.y, hi.y};
          const uint32_t a_step1[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
          for (int j = 0; j < NW; ++j) {
            float(&d)[4] = *(GROUPED ? &tmp[mt][j] : &acc[mt][j]);
            mma_16816(d, a_step0, b[j][0], b[j][1], T{});
            mma_16816(d, a_step1, b[j][2], b[j][3], T{});
          }
        }
        if constexpr (GROUPED) {
          if ((kslice + pack::kSliceK) % group == 0) {  // the window ends: acc += s * tmp
            const int gg = kslice / group - gi0;
#pragma unroll
            for (int j = 0; j < NW; ++j) {
              // c0/c2: column 2t, c1/c3: column 2t + 1 of this n8 tile.
              const float2 s = *reinterpret_cast<const float2*>(
                  sb + s_off + ((wn * NW + j) * gps + gg) * pack::kTileN * 4 + 8 * t);
#pragma unroll
              for (int mt = 0; mt < MT; ++mt) {
                acc[mt][j][0] = fmaf(s.x, tmp[mt][j][0], acc[mt][j][0]);
                acc[mt][j][1] = fmaf(s.y, tmp[mt][j][1], acc[mt][j][1]);
                acc[mt][j][2] = fmaf(s.x, tmp[mt][j][2], acc[mt][j][2]);
                acc[mt][j][3] = fmaf(s.y, tmp[mt][j][3], acc[mt][j][3]);
#pragma unroll
                for (int r = 0; r < 4; ++r) tmp[mt][j][r] = 0.0f;
              }
            }
          }
        }
      }
    }
  };

  // Pipeline: stages - 1 loads in flight ahead of the compute; one commit group per stage
  // (empty groups past the end keep the wait count uniform).
#pragma unroll 1
  for (int i = 0; i < S - 1; ++i) {
    if (i < n_st) load_stage(st_begin + i, i);
    cp_async_commit();
  }
#pragma unroll 1
  for (int it = 0; it < n_st; ++it) {
    cp_async_wait<S - 2>();  // stage `it` has landed (this thread's copies) ...
    __syncthreads();         // ... everyone's, and every warp is done with buffer (it - 1) % S
    if (it + S - 1 < n_st) load_stage(st_begin + it + S - 1, (it + S - 1) % S);
    cp_async_commit();
    compute_stage(it % S, st_begin + it);
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: the k-warps' partial tiles through shared memory [wk][rows][kTN], summed in warp
  // order; then one output element per thread and step (coalesced along n).
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NW; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = 16 * mt + g + 8 * (r >> 1);
        const int col = (wn * NW + j) * pack::kTileN + 2 * t + (r & 1);
        if (row < rows) red[(wk * rows + row) * Tr::kTN + col] = acc[mt][j][r];
      }
  __syncthreads();

  const int n0 = nt0 * pack::kTileN;
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  auto finish = [&](int m, int n, float v) {
    if constexpr (!GROUPED) v *= __ldg(p.scales + n);  // per-channel: [N/8, 1, 8] == [N]
    if (bias != nullptr) v += Cvt<T>::to_float(bias[n]);
    out[static_cast<int64_t>(m) * p.ldo + n] = Cvt<T>::from_float(v);
  };
  const bool direct = gridDim.z == 1;
  for (int e = tid; e < rows * Tr::kTN; e += Tr::kThreads) {
    const int row = e / Tr::kTN, col = e % Tr::kTN, n = n0 + col;
    if (n >= N) continue;
    float v = red[row * Tr::kTN + col];
#pragma unroll
    for (int w = 1; w < Tr::kWK; ++w) v += red[(w * rows + row) * Tr::kTN + col];
    if (direct) finish(m0 + row, n, v);
    else p.workspace[(static_cast<int64_t>(blockIdx.z) * M + m0 + row) * N + n] = v;
  }
  if (direct) return;

  // Split-K: the last split to finish this tile sums the partials in split order (deterministic).
  __threadfence();  // this block's partials are visible device-wide before its arrival counts
  __syncthreads();
  const int counter = blockIdx.y * gridDim.x + blockIdx.x;
  if (tid == 0) pk_is_last = atomicAdd(p.counters + counter, 1) == static_cast<int>(gridDim.z) - 1;
  __syncthreads();
  if (!pk_is_last) return;
  __threadfence();
  for (int e = tid; e < rows * Tr::kTN; e += Tr::kThreads) {
    const int row = e / Tr::kTN, n = n0 + e % Tr::kTN;
    if (n >= N) continue;
    float v = 0.0f;
    for (int z = 0; z < static_cast<int>(gridDim.z); ++z)
      v += __ldcg(p.workspace + (static_cast<int64_t>(z) * M + m0 + row) * N + n);  // L2, not a stale L1
    finish(m0 + row, n, v);
  }
  if (tid == 0) p.counters[counter] = 0;  // ready for the next launch on this stream
}

// ---- packed -> dense [N, K] (large-M path): one thread per lane chunk of a tile ----

template <typename T, int BITS>
__global__ void pk_dequant_kernel(const PkGemmParams p, T* __restrict__ w) {
  const int N = p.N, K = p.K, group = p.group;
  const int KT = (K + pack::tile_k(BITS) - 1) / pack::tile_k(BITS);
  const int G = BITS == 4 ? K / group : 1;
  const int64_t total = static_cast<int64_t>(N / pack::kTileN) * KT * 32;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int l = static_cast<int>(idx % 32), g = l >> 2, t = l & 3;
    const int64_t tile = idx / 32;
    const int ku = static_cast<int>(tile % KT), tn = static_cast<int>(tile / KT);
    const int n = tn * pack::kTileN + g;
    const uint4 v = *reinterpret_cast<const uint4*>(p.packed + tile * pack::kTileBytes + l * 16);
    // Each k32 slice gives this lane 8 consecutive k (8t .. 8t+7): one 16-byte store.
#pragma unroll
    for (int s = 0; s < pack::tile_k(BITS) / pack::kSliceK; ++s) {
      const int k = ku * pack::tile_k(BITS) + pack::kSliceK * s + 8 * t;
      if (k >= K) break;  // K % 8 == 0: whole chunks
      float vals[8];
      float scale;
      if constexpr (BITS == 4) {
        const int64_t gi = (static_cast<int64_t>(tn) * G + k / group) * pack::kTileN + g;
        scale = p.scales[gi];
        const float mz = magic_zero(p.zeros != nullptr ? p.zeros[gi] : 8u);  // NaN for a zero above 15
        const uint32_t word = uint4_word(v, s);
        // nibble p = 4 (j & 1) + 2u + (j >> 1) holds k offset 4u + j
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int u = e >> 2, j = e & 3;
          const int pos = 4 * (j & 1) + 2 * u + (j >> 1);
          vals[e] = magic_byte<0>((word >> (4 * pos)) & 15u) - mz;  // q - z exactly
        }
      } else {
        scale = p.scales[n];
#pragma unroll
        for (int e = 0; e < 8; ++e)
          vals[e] = static_cast<float>(static_cast<int>((uint4_word(v, 2 * s + (e >> 2)) >> (8 * (e & 3))) & 255u) - 128);
      }
      T o[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = Cvt<T>::from_float(vals[e] * scale);
      uint4 packed_out;
      std::memcpy(&packed_out, o, sizeof(packed_out));
      *reinterpret_cast<uint4*>(w + static_cast<int64_t>(n) * K + k) = packed_out;
    }
  }
}

}  // namespace squash::gemm
