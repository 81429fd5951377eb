// Weight-only GEMM for M = 1..64 tokens on tensor cores (mma.sync m16n8k16, fp32 accumulation):
// weights as the 16-row A operand (dequantized in registers), x^T as the B operand (8 tokens per
// n8 tile, from shared memory). The CUDA-core GEMV spends M FMAs per weight and turns
// compute-bound from M ~ 4; here the tensor cores do the multiply, the CUDA cores only dequantize
// (~1.4 instructions per int4 weight, independent of M).
//
// Work split: a block is 4 warps; warp w owns 16 output channels (rows n0 .. n0+15) and walks the
// block's K range; blocks tile N by 64 rows and K by gridDim.y splits (fp32 partials + the
// deterministic reduce kernel of woq_gemv_kernel.cuh when splits > 1).
//
// The k permutation: a dot product does not care about the order of k, as long as A and B use
// the same one. Thread (g, t) loads 16 contiguous bytes of rows n0+g and n0+g+8 (32 int4 or 16
// int8 weights at k = kb + t * KB/4, where KB = 128 (int4) / 64 (int8) is one "scale block") and
// feeds them to the mma's logical k slots {2t, 2t+1, 2t+8, 2t+9}; B must hold x at the same
// physical k's, which the x staging arranges:
//   int4: word w of the load has nibbles e0..e7 (k = 8w + 0..7); the cheap dequant yields the
//         pairs (e0,e4) (e1,e5) (e2,e6) (e3,e7); mma 2w takes a0/a1 = (e0,e4), a2/a3 = (e1,e5),
//         mma 2w+1 takes (e2,e6), (e3,e7). x is staged with each 8-group permuted to
//         (x0,x4,x1,x5,x2,x6,x3,x7), so one 16-byte shared load gives b0,b1 of mma 2w (words 0,1)
//         and of mma 2w+1 (words 2,3).
//   int8: word w has bytes e0..e3 (k = 4w + 0..3); mma w takes (e0,e1), (e2,e3); x in natural
//         order, 8 bytes per mma.
// Every scale block (KB consecutive k of a row) lies in one quantization group (group % KB == 0),
// so each block is accumulated separately and added as acc += scale * block_sum in fp32: the
// weights are never rounded to 16 bits beyond the exact q - z.
#pragma once
#include <cstdint>

#include "gemm/gemm_common.cuh"
#include "gemm/heuristics.h"
#include "gemm/woq_gemm.h"

namespace squash::gemm {

template <int BITS, MmaConfig CFG>
struct MmaTraits {
  static constexpr int kBits = BITS;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRowsPerBlock = kWarps * 16;
  static constexpr int kNT = mma_config_info(CFG).max_m / 8;    // n8 token tiles
  static constexpr int kMPad = kNT * 8;                           // token rows staged
  static constexpr int kKB = mma_scale_block(BITS);               // k per scale block
  static constexpr int kU = mma_config_info(CFG).blocks_per_chunk;  // scale blocks per chunk
  static constexpr int kKC = kKB * kU;                            // k per chunk
  static constexpr int kXC = kKC / 8;                             // 16-byte x chunks per token row
  static constexpr int kMmaPerWord = BITS == 4 ? 2 : 1;
  static constexpr int kSmemBytes = kMPad * kKC * 2;

  static_assert(BITS == 4 || BITS == 8, "int4 or int8 weights");
  static_assert(kNT == 1 || kNT == 2 || kNT == 4 || kNT == 8, "8..64 tokens");
  static_assert(kKC == mma_k_chunk(CFG, BITS), "chunk size agrees with heuristics.h");
  static_assert(kXC % 8 == 0, "x rows are whole 128-byte lines (swizzle stays within a row)");
  static_assert(kSmemBytes <= 48 * 1024, "x chunk fits the default shared-memory limit");
};

// 16-byte chunk swizzle of the staged x (per token row `row`, chunk c). Reads: a quarter-warp
// (8 lanes = g in {2i, 2i+1}, t = 0..3) loads chunks of rows g; conflict-free when the 8 chunks
// fall in distinct 16-byte slots mod 8 (row strides are multiples of 128 bytes).
//   int4: lane (g, t) reads c = 16 * blk + 4t + w: slot (4t + w) mod 8 repeats for t and t+2 and
//         across the 2 rows; XOR with bit 3 of c (= t >> 1) and with (row & 1) << 1 makes the 8
//         slots distinct: low 2 bits w ^ (t >> 1) ^ 2 (g & 1), bit 2 t & 1.
//   int8: lane (g, t) reads c = 8 * blk + 2t + h: slots repeat across the 2 rows; XOR with
//         row & 1 separates them.
// Staging writes 8 consecutive chunks of one row per quarter-warp: a permutation within the
// aligned 8 (the XORs touch bits 0-1 only): conflict-free too.
template <int BITS>
__device__ __forceinline__ int mma_x_swizzle(int c, int row) {
  if constexpr (BITS == 4) return c ^ ((c >> 3) & 1) ^ ((row & 1) << 1);
  else return c ^ (row & 1);
}

template <typename T, int BITS, MmaConfig CFG>
__global__ void __launch_bounds__(128, 1) woq_mma_kernel(const WoqGemmParams p) {
  using Tr = MmaTraits<BITS, CFG>;
  constexpr int U = Tr::kU, NT = Tr::kNT, KB = Tr::kKB;
  // [kMPad][kXC] 16-byte chunks of x (T), swizzled; own name: extern __shared__ arrays of all
  // kernels share one namespace.
  SQUASH_EXTERN_SHARED(uint4, xs_mma);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * Tr::kRowsPerBlock + warp * 16;
  const int M = p.M, N = p.N, K = p.K, group = p.group;
  const int groups = K / group;
  const int64_t row_bytes = static_cast<int64_t>(K) * BITS / 8;
  const uint8_t* __restrict__ wq = static_cast<const uint8_t*>(p.qweight);
  const T* __restrict__ x = static_cast<const T*>(p.x);

  const auto [c_begin, c_end] = split_k_chunks(K, Tr::kKC);

  // One chunk of this thread's weights: U scale blocks x rows (g, g+8) x one 16-byte load, with
  // the scale and (int4) the packed 16-bit magic zero of each.
  struct Frag {
    uint32_t w[U][2][4];
    float s[U][2];
    uint32_t z2[U][2];
  };

  auto load_chunk = [&](Frag& f, int c) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int kb = c * Tr::kKC + u * KB;  // K % KB == 0: a whole block is in or out
      const int k = kb + t * (KB / 4);
      const int gi = kb < K ? kb / group : 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int n = n0 + g + 8 * h;
        if (kb < K && n < N) {
          const uint4 v = __ldcs(reinterpret_cast<const uint4*>(wq + n * row_bytes + k * BITS / 8));
          f.w[u][h][0] = v.x; f.w[u][h][1] = v.y; f.w[u][h][2] = v.z; f.w[u][h][3] = v.w;
          const int64_t si = static_cast<int64_t>(n) * groups + gi;
          f.s[u][h] = p.scales_f32 ? __ldg(static_cast<const float*>(p.scales) + si)
                                   : Cvt<T>::to_float(static_cast<const T*>(p.scales)[si]);
          if constexpr (BITS == 4)
            f.z2[u][h] = int4_magic_zero2<T>(p.zeros != nullptr ? __ldg(p.zeros + si) : 8u);
          else
            f.z2[u][h] = 0u;
        } else {
          // Out of range: scale 0 (x past K is staged as 0 as well).
#pragma unroll
          for (int i = 0; i < 4; ++i) f.w[u][h][i] = 0u;
          f.s[u][h] = 0.0f;
          f.z2[u][h] = BITS == 4 ? int4_magic_zero2<T>(8u) : 0u;
        }
      }
    }
  };

  auto stage_x = [&](int c) {
    const int k0 = c * Tr::kKC;
#pragma unroll 2
    for (int i = threadIdx.x; i < Tr::kMPad * Tr::kXC; i += Tr::kThreads) {
      const int m = i / Tr::kXC, cc = i % Tr::kXC;
      const int k = k0 + cc * 8;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (m < M && k < K) {
        v = *reinterpret_cast<const uint4*>(x + m * p.ldx + k);  // K % 8 == 0, 16-byte aligned
        if constexpr (BITS == 4) {
          // (x0 x1)(x2 x3)(x4 x5)(x6 x7) -> (x0 x4)(x1 x5)(x2 x6)(x3 x7)
          const uint4 r = v;
          v.x = __byte_perm(r.x, r.z, 0x5410u);
          v.y = __byte_perm(r.x, r.z, 0x7632u);
          v.z = __byte_perm(r.y, r.w, 0x5410u);
          v.w = __byte_perm(r.y, r.w, 0x7632u);
        }
      }
      xs_mma[m * Tr::kXC + mma_x_swizzle<BITS>(cc, m)] = v;
    }
  };

  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;

  auto compute = [&](const Frag& f) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float blk[NT][4];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) blk[j][i] = 0.0f;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        if constexpr (BITS == 4) {
          uint32_t P[4], Q[4];  // rows g and g+8
          int4_pairs<T>(f.w[u][0][w], f.z2[u][0], P);
          int4_pairs<T>(f.w[u][1][w], f.z2[u][1], Q);
          const uint32_t a_even[4] = {P[0], Q[0], P[1], Q[1]};
          const uint32_t a_odd[4] = {P[2], Q[2], P[3], Q[3]};
          const int cc = u * (KB / 8) + 4 * t + w;  // this thread's 8 k's of word w
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            const int row = 8 * j + g;
            const uint4 b = xs_mma[row * Tr::kXC + mma_x_swizzle<4>(cc, row)];
            mma_16816(blk[j], a_even, b.x, b.y, T{});
            mma_16816(blk[j], a_odd, b.z, b.w, T{});
          }
        } else {
          uint32_t P[2], Q[2];
          int8_pairs(f.w[u][0][w], T{}, P);
          int8_pairs(f.w[u][1][w], T{}, Q);
          const uint32_t a[4] = {P[0], Q[0], P[1], Q[1]};
          const int cc = u * (KB / 8) + 2 * t + (w >> 1);  // 16-byte chunk holding word w's k's
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            const int row = 8 * j + g;
            const uint4 b = xs_mma[row * Tr::kXC + mma_x_swizzle<8>(cc, row)];
            if (w & 1) mma_16816(blk[j], a, b.z, b.w, T{});
            else mma_16816(blk[j], a, b.x, b.y, T{});
          }
        }
      }
      // d0, d1 belong to row g, d2, d3 to row g + 8.
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        acc[j][0] = fmaf(f.s[u][0], blk[j][0], acc[j][0]);
        acc[j][1] = fmaf(f.s[u][0], blk[j][1], acc[j][1]);
        acc[j][2] = fmaf(f.s[u][1], blk[j][2], acc[j][2]);
        acc[j][3] = fmaf(f.s[u][1], blk[j][3], acc[j][3]);
      }
    }
  };

  Frag cur{}, nxt{};
  if (c_begin < c_end) load_chunk(cur, c_begin);
  for (int c = c_begin; c < c_end; ++c) {
    if (c + 1 < c_end) load_chunk(nxt, c + 1);  // in flight while this chunk is computed
    __syncthreads();                             // every warp is done reading the previous x
    stage_x(c);
    __syncthreads();
    compute(cur);
    cur = nxt;
  }

  // acc[j][i]: row n0 + g + 8 * (i >> 1), token 8j + 2t + (i & 1).
  const bool direct = gridDim.y == 1;
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = n0 + g + 8 * (i >> 1);
      const int m = 8 * j + 2 * t + (i & 1);
      if (n < N && m < M) {
        if (direct) {
          float v = acc[j][i];
          if (bias != nullptr) v += Cvt<T>::to_float(bias[n]);
          static_cast<T*>(p.out)[m * p.ldo + n] = Cvt<T>::from_float(v);
        } else {
          p.workspace[(static_cast<int64_t>(blockIdx.y) * M + m) * N + n] = acc[j][i];
        }
      }
    }
}

}  // namespace squash::gemm
