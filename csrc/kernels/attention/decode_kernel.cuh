// attention_decode kernels (split-KV flash decoding on CUDA cores). Device code only: the launch
// is in decode_launch_template.cuh, so the CPU emulator (bench/cpp/emu) compiles this file as is.
// See decode.h for the semantics.
//
// Why CUDA cores and not mma: at Sq = 1 with GQA group 4 a CTA does 4 rows x D x 2 FLOP per
// 2*D bytes of K (and the same for V), i.e. 4 FLOP/byte; at ~3 TB/s that is ~12 TFLOP/s, under a
// fifth of the H100's FP32 FMA rate, so the dot products can stay simple (8 rows, GQA group 8,
// come closer to the limit; tensor cores would be the next step there). What matters is keeping
// enough bytes in flight: 16-byte cp.async copies of K/V tiles into a 3-stage shared-memory ring.
//
// Per CTA (128 threads = 4 warps): a contiguous key range [start, end) of one (batch, kv head),
// walked in tiles of kTileKeys keys (16 KB of K+V per tile). Each warp owns a quarter of every
// tile and keeps its own online-softmax state; the 4 warps are merged through shared memory at
// the end. Inside a warp, kLanesPerKey lanes share one key (8 contiguous dims each, one 16-byte
// shared-memory load), so a warp handles kKeysPerStep keys per step. The lanes that computed a
// key's score are exactly those that multiply its V row, so P never goes through shared memory.
//
// Numerics: q is pre-multiplied by softmax_scale * log2(e) so scores are in log2 units and the
// softmax uses exp2f; scores, max, sum and the output accumulators are fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attention/decode.h"
#include "attention/ptx_sm80.cuh"

namespace squash::attention {
namespace decode_detail {

constexpr float kNegInf = -__builtin_huge_valf();
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- element conversions (8 elements = one uint4 = 16 bytes) ----
template <typename T>
struct Elem;

template <>
struct Elem<__half> {
  static __device__ __forceinline__ float2 to_float2(uint32_t u) {
    __half2 h;
    __builtin_memcpy(&h, &u, 4);
    return __half22float2(h);
  }
  static __device__ __forceinline__ __half from_float(float a) { return __float2half_rn(a); }
  static __device__ __forceinline__ uint32_t from_float2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    uint32_t u;
    __builtin_memcpy(&u, &h, 4);
    return u;
  }
};

template <>
struct Elem<__nv_bfloat16> {
  // bf16 -> fp32 is exact: the bf16 bits are the high half of the fp32 bits.
  static __device__ __forceinline__ float2 to_float2(uint32_t u) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
  }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float a) {
    return __float2bfloat16_rn(a);
  }
  static __device__ __forceinline__ uint32_t from_float2(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    uint32_t u;
    __builtin_memcpy(&u, &h, 4);
    return u;
  }
};

template <typename T>
__device__ __forceinline__ void load8_to_float(const uint4& raw, float (&f)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = Elem<T>::to_float2(w[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

template <typename T>
__device__ __forceinline__ uint4 float8_to_raw(const float (&f)[8]) {
  uint4 r;
  r.x = Elem<T>::from_float2(f[0], f[1]);
  r.y = Elem<T>::from_float2(f[2], f[3]);
  r.z = Elem<T>::from_float2(f[4], f[5]);
  r.w = Elem<T>::from_float2(f[6], f[7]);
  return r;
}

using sm80::cp_async_16;
using sm80::cp_async_commit;
using sm80::cp_async_wait;
using sm80::pdl_launch_dependents;
using sm80::pdl_wait;

}  // namespace decode_detail

// Compile-time shape of the split kernel for one (element type, head dim, rows per CTA).
template <typename T, int kHeadDim, int kRows>
struct DecodeTraits {
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kVec = 8;                             // elements per 16-byte access
  static constexpr int kLanesPerKey = kHeadDim / kVec;       // 8, 16, 32 for D 64, 128, 256
  static constexpr int kKeysPerStep = 32 / kLanesPerKey;     // keys a warp covers per step
  static constexpr int kTileKeys = 4096 / kHeadDim;          // 8 KB of K + 8 KB of V per tile
  static constexpr int kStages = 3;                          // 48 KB ring: 2 tiles in flight
  static constexpr int kKeysPerWarp = kTileKeys / kWarps;    // per tile
  // Steps (of kKeysPerStep keys) whose scores are held in registers before one online-softmax
  // update: fewer with 8 rows to bound registers (each step holds kRows scores per lane).
  static constexpr int kSteps = kRows <= 4 ? 4 : 2;
  static constexpr int kSubBlocks = kKeysPerWarp / (kSteps * kKeysPerStep);
  static constexpr int kChunksPerKey = kHeadDim / kVec;
  static constexpr int kChunksPerThread = kTileKeys * kChunksPerKey / kThreads;  // per K or V
  static constexpr int kTileElems = kTileKeys * kHeadDim;
  static constexpr int kSmemBytes = kStages * 2 * kTileElems * static_cast<int>(sizeof(T));
  // After the key loop the ring is reused to merge the warps: kWarps x kRows x (D + 2) floats.
  static constexpr int kMergeBytes = kWarps * kRows * (kHeadDim + 2) * 4;
  // Register budget (ptxas, nvcc 13.0): 4 rows need ~143 registers without a cap (q 32 + acc 32
  // + scores 16 + K values in flight); capping them at 128 for 4 CTAs per SM spilled, so allow
  // 3 CTAs per SM (<= 168). 8 rows use ~250: 2 CTAs per SM. The split heuristic aims at ~2 CTAs
  // per SM anyway (decode_heuristics.h); both keep 2 x 16 KB of copies in flight per CTA.
  static constexpr int kMinBlocksPerSm = kRows <= 4 ? 3 : 2;

  static_assert(sizeof(T) == 2, "fp16/bf16 only");
  static_assert(kHeadDim % kVec == 0 && 32 % kLanesPerKey == 0, "head_dim must be 64/128/256");
  static_assert(kTileKeys % kWarps == 0, "tile must split evenly across warps");
  static_assert(kKeysPerWarp % (kSteps * kKeysPerStep) == 0 && kSubBlocks >= 1,
                "a warp's share of a tile must be whole sub-blocks");
  static_assert(kTileKeys * kChunksPerKey % kThreads == 0 && kThreads % kChunksPerKey == 0,
                "tile copy must split evenly across threads");
  static_assert(kSmemBytes <= 48 * 1024, "above 48 KB of shared memory the launch must opt in");
  static_assert(kMergeBytes <= kSmemBytes, "warp merge must fit in the K/V ring");
  static_assert(kRows == 4 || kRows == 8, "rows per CTA: 4 or 8 (decode_rows_per_cta)");
};

// grid.x = row_tiles * num_splits * (B * Hkv), row tile fastest so that the CTAs reading the same
// K/V range run side by side (L2 reuse when a group needs several row tiles).
template <typename T, int kHeadDim, int kRows>
__global__ void __launch_bounds__(128, DecodeTraits<T, kHeadDim, kRows>::kMinBlocksPerSm)
    attention_decode_split_kernel(const AttentionDecodeParams p) {
  using Tr = DecodeTraits<T, kHeadDim, kRows>;
  using namespace decode_detail;
  constexpr int D = kHeadDim, TPK = Tr::kLanesPerKey, KPS = Tr::kKeysPerStep;
  constexpr int KT = Tr::kTileKeys, J = Tr::kSteps;

  SQUASH_EXTERN_SHARED(unsigned char, smem_raw);  // kSmemBytes: [kStages][K, V][kTileElems]
  auto smem = reinterpret_cast<T(*)[2][Tr::kTileElems]>(smem_raw);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int group = p.heads_q / p.heads_kv;
  const int rows_total = p.seqlen_q * group;
  const int row_tiles = (rows_total + kRows - 1) / kRows;
  int bid = blockIdx.x;
  const int row_tile = bid % row_tiles;
  bid /= row_tiles;
  const int split = bid % p.num_splits;
  bid /= p.num_splits;
  const int kvh = bid % p.heads_kv;
  const int b = bid / p.heads_kv;

  // Clamp to the cache so a bad length can never read outside it (lengths are not checked on the
  // host: that would need a device-to-host copy).
  int len = p.cache_seqlens[b];
  len = len < 0 ? 0 : (len > p.max_seqlen ? p.max_seqlen : len);

  // This split's keys: [start, end), split boundaries on whole tiles of the actual length.
  const int tiles_total = (len + KT - 1) / KT;
  const int tiles_per_split = (tiles_total + p.num_splits - 1) / p.num_splits;
  const int start = split * tiles_per_split * KT;
  const int end = min(len, start + tiles_per_split * KT);
  const int n_tiles = end > start ? (end - start + KT - 1) / KT : 0;

  const T* kbase = static_cast<const T*>(p.k) + b * p.k_batch_stride + kvh * p.k_head_stride;
  const T* vbase = static_cast<const T*>(p.v) + b * p.v_batch_stride + kvh * p.v_head_stride;

  // Each thread copies kChunksPerThread 16-byte chunks of K and of V per tile, always at the same
  // column: keys copy_key0 + c * kKeysPerCopy. 16 (D=128) consecutive threads read one 256-byte
  // key row.
  constexpr int kKeysPerCopy = Tr::kThreads / Tr::kChunksPerKey;
  const int copy_key0 = tid / Tr::kChunksPerKey, copy_col = (tid % Tr::kChunksPerKey) * Tr::kVec;
  const T* kcopy = kbase + copy_col;
  const T* vcopy = vbase + copy_col;
  T* scopy = &smem[0][0][copy_key0 * D + copy_col];
  auto load_tile = [&](int tile, int stage) {
    const int t0 = start + tile * KT + copy_key0;
#pragma unroll
    for (int c = 0; c < Tr::kChunksPerThread; ++c) {
      const int gkey = t0 + c * kKeysPerCopy;
      const bool valid = gkey < end;
      const int64_t row = valid ? gkey : 0;  // any in-bounds address when nothing is copied
      T* dst = scopy + stage * (2 * Tr::kTileElems) + c * kKeysPerCopy * D;
      cp_async_16(dst, kcopy + row * p.k_seq_stride, valid);
      cp_async_16(dst + Tr::kTileElems, vcopy + row * p.v_seq_stride, valid);
    }
  };

  // Start the copies first; q and the masks are set up while they fly.
#pragma unroll
  for (int s = 0; s < Tr::kStages - 1; ++s) {
    if (s < n_tiles) load_tile(s, s);
    cp_async_commit();
  }
  // The combine kernel (when launched with PDL) may now be scheduled; it waits for this grid.
  pdl_launch_dependents();

  // Row r of this CTA is query i = gr / group of q head kvh * group + gr % group (gr the row's
  // index in the kv head's block). Padding rows (gr >= rows_total) get q = 0 and limit 0: every
  // key is masked for them and their results are never written.
  const int dcol = (lane % TPK) * Tr::kVec;  // this lane's 8 dims
  const float scale_log2 = p.softmax_scale * kLog2e;
  float q[kRows][8];
  int limit[kRows];  // keys < limit[r] are visible to row r (and belong to this split)
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int gr = row_tile * kRows + r;
    if (gr < rows_total) {
      const int i = gr / group, h = kvh * group + gr % group;
      const T* qp = static_cast<const T*>(p.q) + b * p.q_batch_stride + i * p.q_seq_stride +
                    h * p.q_head_stride + dcol;
      float f[8];
      load8_to_float<T>(*reinterpret_cast<const uint4*>(qp), f);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[r][e] = f[e] * scale_log2;
      const int visible = p.causal ? len - p.seqlen_q + i + 1 : len;
      limit[r] = min(visible, end);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[r][e] = 0.f;
      limit[r] = 0;
    }
  }

  // Online softmax state. m is identical in all lanes of the warp (butterfly reductions give
  // bitwise-equal results in every lane); l and acc are per lane: partial over this lane's keys
  // (l) and over its 8 dims (acc), summed across key slots after the loop.
  float m[kRows], l[kRows], acc[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = kNegInf;
    l[r] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[r][e] = 0.f;
  }

  const int key_slot = lane / TPK;
  for (int t = 0; t < n_tiles; ++t) {
    // Tile t has landed for this thread; the barrier makes it visible to all and guarantees that
    // everyone finished tile t-1, whose stage the next copy overwrites.
    cp_async_wait<Tr::kStages - 2>();
    __syncthreads();
    {
      const int next = t + Tr::kStages - 1;
      if (next < n_tiles) load_tile(next, next % Tr::kStages);
      cp_async_commit();  // possibly empty: keeps the group count that wait<> relies on
    }
    const T* sk = smem[t % Tr::kStages][0];
    const T* sv = smem[t % Tr::kStages][1];
    const int tile_start = start + t * KT;

#pragma unroll
    for (int sb = 0; sb < Tr::kSubBlocks; ++sb) {
      const int key0 = warp * Tr::kKeysPerWarp + sb * J * KPS + key_slot;  // + j * KPS
      float s[J][kRows];
#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int key = key0 + j * KPS;
        float kf[8];
        load8_to_float<T>(*reinterpret_cast<const uint4*>(sk + key * D + dcol), kf);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          float a = 0.f;
#pragma unroll
          for (int e = 0; e < 8; ++e) a = fmaf(q[r][e], kf[e], a);
          s[j][r] = a;
        }
#pragma unroll
        for (int off = TPK / 2; off > 0; off /= 2)
#pragma unroll
          for (int r = 0; r < kRows; ++r) s[j][r] += __shfl_xor_sync(0xffffffffu, s[j][r], off);
        const int gkey = tile_start + key;
#pragma unroll
        for (int r = 0; r < kRows; ++r) s[j][r] = gkey < limit[r] ? s[j][r] : kNegInf;
      }

#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float mx = s[0][r];
#pragma unroll
        for (int j = 1; j < J; ++j) mx = fmaxf(mx, s[j][r]);
#pragma unroll
        for (int off = TPK; off < 32; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float m_new = fmaxf(m[r], mx);
        // All keys masked so far: subtract 0 instead of -inf (avoids -inf - -inf = NaN); the
        // masked scores then give exp2(-inf) = 0.
        const float m_use = m_new == kNegInf ? 0.f : m_new;
        if (m_new != m[r]) {  // warp-uniform; rescaling is skipped once the max settles
          const float corr = exp2f(m[r] - m_use);
          l[r] *= corr;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][e] *= corr;
          m[r] = m_new;
        }
#pragma unroll
        for (int j = 0; j < J; ++j) {
          s[j][r] = exp2f(s[j][r] - m_use);
          l[r] += s[j][r];
        }
      }

#pragma unroll
      for (int j = 0; j < J; ++j) {
        const int key = key0 + j * KPS;
        float vf[8];
        load8_to_float<T>(*reinterpret_cast<const uint4*>(sv + key * D + dcol), vf);
#pragma unroll
        for (int r = 0; r < kRows; ++r)
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][e] = fmaf(s[j][r], vf[e], acc[r][e]);
      }
    }
  }

  // Sum the key slots of the warp (lanes with equal dcol); m is already common.
#pragma unroll
  for (int off = TPK; off < 32; off *= 2)
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], off);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[r][e] += __shfl_xor_sync(0xffffffffu, acc[r][e], off);
    }

  // Merge the warps through shared memory (the ring is free once every copy has landed and
  // every warp left the loop).
  cp_async_wait<0>();
  __syncthreads();
  float* m_acc = reinterpret_cast<float*>(&smem[0][0][0]);  // [kWarps][kRows][D]
  float* m_max = m_acc + Tr::kWarps * kRows * D;             // [kWarps][kRows]
  float* m_sum = m_max + Tr::kWarps * kRows;                 // [kWarps][kRows]
  if (lane < TPK) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float* dst = m_acc + (warp * kRows + r) * D + dcol;
      reinterpret_cast<float4*>(dst)[0] = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      m_max[warp * kRows + r] = m[r];
      m_sum[warp * kRows + r] = l[r];
    }
  }
  __syncthreads();

  // Final: one thread per (row, 8-dim chunk).
  const int rows_here = min(kRows, rows_total - row_tile * kRows);
  for (int item = tid; item < rows_here * Tr::kChunksPerKey; item += Tr::kThreads) {
    const int r = item / Tr::kChunksPerKey, col = (item % Tr::kChunksPerKey) * Tr::kVec;
    float mt = kNegInf;
#pragma unroll
    for (int w = 0; w < Tr::kWarps; ++w) mt = fmaxf(mt, m_max[w * kRows + r]);
    const float mu = mt == kNegInf ? 0.f : mt;
    float lt = 0.f, o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int w = 0; w < Tr::kWarps; ++w) {
      const float c = exp2f(m_max[w * kRows + r] - mu);  // 0 for a warp that saw no key
      lt += c * m_sum[w * kRows + r];
      const float* src = m_acc + (w * kRows + r) * D + col;
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] += c * src[e];
    }
    const float inv = lt > 0.f ? 1.f / lt : 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] *= inv;
    const float lse = lt > 0.f ? (mt + log2f(lt)) * kLn2 : kNegInf;

    const int gr = row_tile * kRows + r;
    const int i = gr / group, h = kvh * group + gr % group;
    const int64_t lse_row = (static_cast<int64_t>(b) * p.heads_q + h) * p.seqlen_q + i;
    if (p.num_splits == 1) {
      T* dst = static_cast<T*>(p.out) + b * p.out_batch_stride + i * p.out_seq_stride +
               h * p.out_head_stride + col;
      *reinterpret_cast<uint4*>(dst) = float8_to_raw<T>(o);
      if (col == 0) p.lse[lse_row] = lse;
    } else {
      // Partial result of this split, normalized by its own sum (the combine reweights by lse).
      const int64_t rows_all = static_cast<int64_t>(p.batch) * p.heads_q * p.seqlen_q;
      const int64_t prow = split * rows_all + lse_row;
      float* po = static_cast<float*>(p.workspace) + prow * D + col;
      reinterpret_cast<float4*>(po)[0] = make_float4(o[0], o[1], o[2], o[3]);
      reinterpret_cast<float4*>(po)[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (col == 0) {
        float* plse = static_cast<float*>(p.workspace) + p.num_splits * rows_all * D;
        plse[prow] = lse;
      }
    }
  }
}

// Merges the splits: one warp per output row (b, h, i), lse_row = (b * Hq + h) * Sq + i.
// out = sum_s exp(lse_s - lse) * out_s with lse = log sum_s exp(lse_s); empty splits have
// lse_s = -inf and weigh 0; a row with no key in any split gets out 0, lse -inf.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(128) attention_decode_combine_kernel(const AttentionDecodeParams p) {
  using namespace decode_detail;
  constexpr int kWarps = 4, kPerLane = kHeadDim / 32;
  static_assert(kHeadDim % 32 == 0, "head_dim must be a multiple of 32");
  __shared__ float weights[kWarps][kDecodeMaxSplits];

  pdl_wait();  // the split kernel's partial results are complete and visible after this
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows_all = static_cast<int64_t>(p.batch) * p.heads_q * p.seqlen_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= rows_all) return;  // whole warps only; no block-wide barrier below
  const int S = p.num_splits;
  const float* part_out = static_cast<const float*>(p.workspace);
  const float* part_lse = part_out + S * rows_all * kHeadDim;

  float mx = kNegInf;
  for (int s = lane; s < S; s += 32) mx = fmaxf(mx, part_lse[s * rows_all + row]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));

  const int i = static_cast<int>(row % p.seqlen_q);
  const int64_t bh = row / p.seqlen_q;
  const int h = static_cast<int>(bh % p.heads_q), b = static_cast<int>(bh / p.heads_q);
  T* dst = static_cast<T*>(p.out) + b * p.out_batch_stride + i * p.out_seq_stride +
           h * p.out_head_stride;

  float o[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) o[e] = 0.f;
  float lse = kNegInf;
  if (mx != kNegInf) {  // warp-uniform
    float sum = 0.f;
    for (int s = lane; s < S; s += 32) sum += expf(part_lse[s * rows_all + row] - mx);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    lse = mx + logf(sum);
    for (int s = lane; s < S; s += 32) weights[warp][s] = expf(part_lse[s * rows_all + row] - lse);
    __syncwarp();
    for (int s = 0; s < S; ++s) {
      const float w = weights[warp][s];
      const float* src = part_out + (s * rows_all + row) * kHeadDim;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) o[e] = fmaf(w, src[lane + 32 * e], o[e]);
    }
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) dst[lane + 32 * e] = Elem<T>::from_float(o[e]);
  if (lane == 0) p.lse[row] = lse;
}

}  // namespace squash::attention
