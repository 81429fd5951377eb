// Small-M weight-only GEMV on CUDA cores (decode: M = 1..16 tokens).
//
// Decode is memory-bound: the whole job is to stream the quantized weights once at HBM speed.
// Design:
// - A block is kGemvWarps warps; warp w owns rows_per_warp (R) consecutive output channels; its
//   32 lanes walk K together, each lane issuing coalesced 16-byte weight loads (32 int4 or 16
//   int8 values; narrower loads only when K is not a multiple of 32 / 16). A warp's load covers
//   512 contiguous bytes of a row.
// - K is processed in chunks of kKC elements. The next chunk's weights (and their scales and
//   zero points) are loaded into registers before the current chunk is computed, so each warp
//   keeps a chunk of loads in flight while it does the math.
// - The chunk of x (all M rows, up to max_m) is staged in shared memory as fp32 (converted once,
//   not per use), float4-swizzled so that lanes reading their own 32 consecutive k's hit 8
//   distinct 16-byte bank groups per quarter-warp (conflict-free 128-bit loads).
// - Dequantization is exact in fp32 (magic-number tricks in gemm_common.cuh): w = q - z. Each
//   lane sums x * (q - z) over its load (one group, since the load width divides the group),
//   then adds scale * partial to its fp32 accumulator: one multiply per load instead of per
//   weight, and the weights are never rounded to 16 bits (matches the fp32 reference closely).
// - After K, the 32 lanes' partial sums are reduced with shuffles. One block per R*4 output
//   channels covers all of K, so no cross-block reduction is needed when N alone fills the GPU
//   (N >= 4096: >= 512 blocks). For narrow N, split-K over gridDim.y writes fp32 partials and
//   a second tiny kernel sums them in a fixed order: deterministic, unlike atomics.
#pragma once
#include <cstdint>

#include "gemm/gemm_common.cuh"
#include "gemm/heuristics.h"
#include "gemm/woq_gemm.h"

namespace squash::gemm {

template <int BITS, int E, GemvConfig CFG>
struct GemvTraits {
  static constexpr int kBits = BITS;
  static constexpr int kE = E;                         // weight elements per lane per load
  static constexpr int kVec = E * BITS / 8;            // bytes per load: 16, 8 or 4
  static constexpr int kWords = kVec / 4;              // 32-bit words per load
  static constexpr int kElemsPerWord = 32 / BITS;      // 8 (int4) or 4 (int8)
  static constexpr int kMT = gemv_config_info(CFG).max_m;
  static constexpr int kR = gemv_config_info(CFG).rows_per_warp;
  // Loads per lane per row per chunk: the wide path issues loads16 16-byte loads; the narrow
  // fallback (K not a multiple of 32 / 16) issues twice as many narrower loads, not the full
  // 16/kVec times as many: the per-load scale/zero registers would otherwise push the int4
  // fallback past 200 registers (it is a rare path: odd K, per-channel scales only).
  static constexpr int kSteps = kVec == 16 ? gemv_config_info(CFG).loads16
                                           : 2 * gemv_config_info(CFG).loads16;
  static constexpr int kKC = 32 * E * kSteps;          // K elements per chunk
  static constexpr int kThreads = kGemvWarps * 32;
  static constexpr int kRowsPerBlock = kGemvWarps * kR;
  static constexpr int kXC = kKC / 4;                  // float4 per x row per chunk
  static constexpr int kP = E / 4;                     // float4 of x per lane per load
  static constexpr int kSwzMask = kP - 1;
  static constexpr int kSmemBytes = kMT * kKC * static_cast<int>(sizeof(float));

  static_assert(BITS == 4 || BITS == 8, "int4 or int8 weights");
  static_assert(E == 8 || E == 16 || E == 32, "8, 16 or 32 weights per load");
  static_assert(kVec == 4 || kVec == 8 || kVec == 16, "4-, 8- or 16-byte loads");
  static_assert(kSteps >= 1, "at least one load per chunk");
  static_assert(kVec != 16 || kKC == gemv_k_chunk(CFG, BITS), "chunk size agrees with heuristics.h");
  static_assert((kXC & (kXC - 1)) == 0 && kXC % 8 == 0, "swizzle works within 8-float4 blocks");
  static_assert(kP >= 2 && kP <= 8, "swizzle mask covers 2..8 float4 per lane");
  static_assert(kSmemBytes <= 64 * 1024, "x chunk fits the shared-memory budget");
};

// Widest load for this K and group: 16 bytes when rows stay 16-byte aligned, else 8 weights.
constexpr int gemv_elems_per_load(int bits, int K, int group) {
  const int wide = bits == 4 ? 32 : 16;
  return (K % wide == 0 && group % wide == 0) ? wide : 8;
}

// float4 index swizzle of the x chunk. Lane l reads float4s q = l * P + j (j = 0..P-1, fixed j
// per instruction); a 128-bit shared load is served per quarter-warp (8 lanes), conflict-free
// when those 8 lanes hit distinct float4 slots mod 8. XOR-ing the low bits of q with bits of
// q >> 3 (= l * P / 8) spreads them: P = 8: slot j ^ (l & 7); P = 4: (l & 1, j ^ ((l >> 1) & 3));
// P = 2: (l & 3, j ^ ((l >> 2) & 1)); each distinct over 8 consecutive lanes. The staging writes
// (8 consecutive q per quarter-warp) are a permutation within one 8-block: also conflict-free.
template <int MASK>
__device__ __forceinline__ int gemv_swizzle(int q) {
  return q ^ ((q >> 3) & MASK);
}

template <int VEC>
__device__ __forceinline__ void gemv_load_weights(const uint8_t* ptr, uint32_t (&w)[VEC / 4]) {
  // Streaming loads (.cs, evict-first): every weight byte is read exactly once per GEMV.
  if constexpr (VEC == 16) {
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(ptr));
    w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
  } else if constexpr (VEC == 8) {
    const uint2 v = __ldcs(reinterpret_cast<const uint2*>(ptr));
    w[0] = v.x; w[1] = v.y;
  } else {
    w[0] = __ldcs(reinterpret_cast<const unsigned int*>(ptr));
  }
}

template <typename T>
__device__ __forceinline__ float gemv_load_scale(const WoqGemmParams& p, int64_t i) {
  return p.scales_f32 ? __ldg(static_cast<const float*>(p.scales) + i)
                      : Cvt<T>::to_float(static_cast<const T*>(p.scales)[i]);
}

template <typename T, int BITS, int E, GemvConfig CFG>
__global__ void __launch_bounds__(kGemvWarps * 32) woq_gemv_kernel(const WoqGemmParams p) {
  using Tr = GemvTraits<BITS, E, CFG>;
  constexpr int R = Tr::kR, MT = Tr::kMT, S = Tr::kSteps, W = Tr::kWords;
  constexpr int EW = Tr::kElemsPerWord;
  SQUASH_EXTERN_SHARED(float4, xs);  // [MT][kXC] fp32 x chunk, float4 index swizzled

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = blockIdx.x * Tr::kRowsPerBlock + warp * R;
  const int M = p.M, N = p.N, K = p.K, group = p.group;
  const int groups = K / group;
  const int64_t row_bytes = static_cast<int64_t>(K) * BITS / 8;
  const uint8_t* __restrict__ wq = static_cast<const uint8_t*>(p.qweight);
  const T* __restrict__ x = static_cast<const T*>(p.x);

  const auto [c_begin, c_end] = split_k_chunks(K, Tr::kKC);

  // One chunk of weights for this lane: R rows x S loads, with the scale and 2^23 + zero of the
  // group each load falls in.
  struct Frag {
    uint32_t w[R][S][W];
    float s[R][S];
    float mz[R][S];
  };

  auto load_chunk = [&](Frag& f, int c) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int k = c * Tr::kKC + (s * 32 + lane) * E;  // first element of this load
      const bool k_ok = k < K;                            // K % E == 0: whole load in or out
      const int gi = k_ok ? k / group : 0;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int n = n0 + r;
        if (k_ok && n < N) {
          gemv_load_weights<Tr::kVec>(wq + n * row_bytes + k * BITS / 8, f.w[r][s]);
          const int64_t si = static_cast<int64_t>(n) * groups + gi;
          f.s[r][s] = gemv_load_scale<T>(p, si);
          if constexpr (BITS == 4) {
            f.mz[r][s] = magic_zero(p.zeros != nullptr ? __ldg(p.zeros + si) : 8u);
          } else {
            f.mz[r][s] = kMagic + 128.0f;
          }
        } else {
          // Out of range: scale 0 makes the contribution 0 (x past K is staged as 0 too).
#pragma unroll
          for (int i = 0; i < W; ++i) f.w[r][s][i] = 0u;
          f.s[r][s] = 0.0f;
          f.mz[r][s] = kMagic;
        }
      }
    }
  };

  auto stage_x = [&](int c) {
    const int k0 = c * Tr::kKC;
#pragma unroll 4
    for (int i = threadIdx.x; i < MT * Tr::kXC; i += Tr::kThreads) {
      const int m = i / Tr::kXC, q = i % Tr::kXC;
      const int k = k0 + q * 4;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (m < M && k < K) v = Cvt<T>::load4(x + m * p.ldx + k);  // K % 4 == 0
      xs[m * Tr::kXC + gemv_swizzle<Tr::kSwzMask>(q)] = v;
    }
  };

  float acc[R][MT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.0f;

  auto compute = [&](const Frag& f) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int q0 = (s * 32 + lane) * Tr::kP;  // first float4 of this load's x, within the chunk
      float part[R][MT];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) part[r][m] = 0.0f;
#pragma unroll
      for (int i = 0; i < W; ++i) {
        float w[R][EW];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if constexpr (BITS == 4) {
            dequant_int4_word(f.w[r][s][i], f.mz[r][s], w[r]);
          } else {
            dequant_int8_word(f.w[r][s][i], f.mz[r][s], w[r]);
          }
        }
#pragma unroll
        for (int h = 0; h < EW / 4; ++h) {
          const int sq = gemv_swizzle<Tr::kSwzMask>(q0 + i * (EW / 4) + h);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            const float4 xv = xs[m * Tr::kXC + sq];
#pragma unroll
            for (int r = 0; r < R; ++r) {
              part[r][m] = fmaf(xv.x, w[r][4 * h + 0], part[r][m]);
              part[r][m] = fmaf(xv.y, w[r][4 * h + 1], part[r][m]);
              part[r][m] = fmaf(xv.z, w[r][4 * h + 2], part[r][m]);
              part[r][m] = fmaf(xv.w, w[r][4 * h + 3], part[r][m]);
            }
          }
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) acc[r][m] = fmaf(f.s[r][s], part[r][m], acc[r][m]);
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

  // Sum the 32 lanes' partials (butterfly: every lane ends with the totals).
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
      acc[r][m] = v;
    }

  // Lane (r * MT + m) % 32 writes entry (r, m): spreads the stores over the warp.
  const bool direct = gridDim.y == 1;
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const int n = n0 + r;
      if (lane == (r * MT + m) % 32 && m < M && n < N) {
        if (direct) {
          float v = acc[r][m];
          if (bias != nullptr) v += Cvt<T>::to_float(bias[n]);
          static_cast<T*>(p.out)[m * p.ldo + n] = Cvt<T>::from_float(v);
        } else {
          p.workspace[(static_cast<int64_t>(blockIdx.y) * M + m) * N + n] = acc[r][m];
        }
      }
    }
}

// out[m, n] = sum over splits of workspace[s, m, n] (+ bias), in split order: deterministic.
template <typename T>
__global__ void woq_splitk_reduce_kernel(const WoqGemmParams p, int splits) {
  const int64_t total = static_cast<int64_t>(p.M) * p.N;
  const T* bias = static_cast<const T*>(p.bias);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = i / p.N, n = i % p.N;
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += p.workspace[s * total + i];
    if (bias != nullptr) v += Cvt<T>::to_float(bias[n]);
    static_cast<T*>(p.out)[m * p.ldo + n] = Cvt<T>::from_float(v);
  }
}

}  // namespace squash::gemm
