// attention / attention_varlen forward kernel (FlashAttention-2 scheme on sm_80-class tensor
// cores; runs on A100 and H100). Device code only: the launch is in
// prefill_launch_template.cuh, so the CPU emulator (bench/cpp/emu) can compile this file as is.
// See prefill.h for the semantics.
//
// One CTA computes kBlockM query rows of one (sequence, q head) against all the keys they see:
// - Q tile -> shared memory once (cp.async); K and V tiles of kBlockN keys stream through a
//   kStages-deep ring of shared-memory stages. K and V are separate cp.async groups, so the V
//   tile of step n may still be landing while S = Q K^T of step n runs, and K of step n + kStages
//   - 1 is loading while the softmax and O += P V of step n run.
// - Each warp owns 16 * kMTiles query rows, so everything row-wise stays in its registers: S
//   and P (mma accumulators), the running max m and sum l, and O. S -> P -> A fragment of the
//   P V mma needs no shared memory (the m16n8k16 accumulator layout of two adjacent 8-key
//   blocks is exactly the A-operand layout of a 16-key step).
// - K^T fragments come from ldmatrix on K rows; V fragments from ldmatrix.trans on V rows.
// - Online softmax in fp32 with exp2: p = exp2(s * scale * log2(e) - m), where m is the running
//   max already in those units; one FFMA + one EX2 per score. When m grows, l and O are rescaled
//   by exp2(m_old - m_new); O is divided by l once, at the end.
// - Causal: key tiles entirely above the diagonal are never loaded; tiles are walked from the
//   last one down, so the (at most ceil(kBlockM / kBlockN) + 1) tiles that need a per-element
//   mask come first and the rest run without mask code.
// - Shared memory rows are XOR-swizzled in 16-byte chunks (chunk c of row r stored at chunk
//   c ^ (r % 8)), so 8 ldmatrix row addresses, 8 cp.async chunks of a row and the epilogue's
//   32-bit stores each hit 32 distinct banks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attention/prefill.h"
#include "attention/ptx_sm80.cuh"

namespace squash::attention {

// Tile shape per head dim. A warp holds in registers O (kMTiles x D/8 x 4 fp32), S/P of one
// softmax step (kMTiles x kStepN/8 x 4 fp32), m and l (2 each per m tile), ldmatrix fragments
// and addressing. kBlockN keys are loaded per pipeline stage (one barrier pair per tile) and
// processed in kBlockN / kStepN softmax steps. Register counts: nvcc 13.0, -Xptxas -v, sm_80 /
// sm_90a, no spills (prefill_kernel.cuh as of this commit; re-check after changes).
// Not yet measured on a GPU: prefill_bench.cu --bench times each head dim; tune here from it.
template <int kHeadDim>
struct PrefillTileConfig;

// D 64: 128 x 64 tiles, 4 warps of 32 rows, 32-key softmax steps: O 64 + S 32 registers, so
// 3 CTAs per SM fit (163 / 161 registers under the 168 cap of __launch_bounds__(128, 3); with
// 64-key steps they spilled ~100 bytes). 3 stages: Q 16 KB + 3 x 16 KB = 64 KB per CTA, 192 KB
// for 3 CTAs on an H100 SM (227 KB); 2 CTAs on an A100 SM (163 KB).
template <>
struct PrefillTileConfig<64> {
  static constexpr int kWarps = 4, kMTiles = 2, kBlockN = 64, kStepN = 32, kStages = 3;
  static constexpr int kMinBlocksPerSm = 3;
};
// D 128: FlashAttention-2's sm80 forward tile (128 x 64, 4 warps of 32 rows). 32 rows per warp
// halve the shared-memory reads of K and V per FLOP compared with 16 rows (each ldmatrix'd K/V
// fragment feeds two m16 tiles), which matters because those reads are what limits mma.sync on
// both A100 and H100. O is 128 registers; with 64-key softmax steps (S 64) ptxas spilled 8-56
// bytes at the 255 cap, with 32-key steps (S 32) it uses 247 / 245 and none. 2 stages: Q 32 KB
// + 2 x 32 KB = 96 KB, 2 CTAs per H100 SM (1 on A100).
template <>
struct PrefillTileConfig<128> {
  static constexpr int kWarps = 4, kMTiles = 2, kBlockN = 64, kStepN = 32, kStages = 2;
  static constexpr int kMinBlocksPerSm = 2;
};
// D 256: O alone is 128 registers at 16 rows per warp, so one m tile per warp and 32-key tiles
// (S 16): 64 x 32 tiles, 241 / 245 registers; Q 32 KB + 2 x 32 KB = 96 KB.
template <>
struct PrefillTileConfig<256> {
  static constexpr int kWarps = 4, kMTiles = 1, kBlockN = 32, kStepN = 32, kStages = 2;
  static constexpr int kMinBlocksPerSm = 2;
};

template <typename T, int kHeadDim>
struct PrefillTraits : PrefillTileConfig<kHeadDim> {
  using Cfg = PrefillTileConfig<kHeadDim>;
  static constexpr int kThreads = Cfg::kWarps * 32;
  static constexpr int kRowsPerWarp = 16 * Cfg::kMTiles;
  static constexpr int kBlockM = Cfg::kWarps * kRowsPerWarp;
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kRowsPerCopy = kThreads / kChunks;  // rows one pass of cp.async covers
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kKVElems = Cfg::kBlockN * kHeadDim;  // one K or V stage
  static constexpr int kSmemBytes =
      (kQElems + 2 * Cfg::kStages * kKVElems) * static_cast<int>(sizeof(T));
  // Groups committed after K(n) when S = Q K(n)^T starts: V(n) and K/V of the kStages - 2 tiles
  // after n. The same count is in flight after V(n) when O += P V(n) starts (K(n + kStages - 1)
  // has been committed since).
  static constexpr int kGroupsInFlight = 2 * Cfg::kStages - 3;

  static_assert(sizeof(T) == 2, "fp16/bf16 only");
  static_assert(kHeadDim % 64 == 0, "the swizzle needs >= 8 chunks of 16 bytes per row");
  static_assert(Cfg::kStepN % 16 == 0 && Cfg::kBlockN % Cfg::kStepN == 0,
                "keys come in 16-key mma steps, softmax steps in whole tiles");
  static_assert(kThreads % kChunks == 0, "a copy pass must cover whole rows");
  static_assert(kBlockM % kRowsPerCopy == 0 && Cfg::kBlockN % kRowsPerCopy == 0,
                "tiles must split evenly into copy passes");
  static_assert(Cfg::kStages >= 2, "the ring needs at least two stages to overlap copies");
  static_assert(kSmemBytes <= 227 * 1024, "over the H100's shared memory per block");
  static_assert(kSmemBytes <= 163 * 1024, "over the A100's shared memory per block");
};

namespace prefill_detail {

constexpr float kNegInf = -__builtin_huge_valf();
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Element offset of 16-byte chunk c of row r in a swizzled [rows][D] tile.
template <int D>
__device__ __forceinline__ int swz(int r, int c) {
  return r * D + ((c ^ (r & 7)) << 3);
}

// ldmatrix addressing without a register per (row, chunk) pair: the inner loops read chunk
// c = 2 * cp + lo (cp a compile-time chunk pair, lo = 0/1 per lane) of rows R + row, where R is
// a compile-time multiple of 8, so r & 7 = row & 7 and the byte offset of the swizzled chunk is
//   (R + row) * 2D + (cp >> 2) * 128 + ((2 * (cp & 3) + lo) ^ (row & 7)) * 16.
// Only the last term depends on both the lane and the loop: 4 values, precomputed here (with
// row * 2D folded in); ldm_addr() adds the compile-time rest.
template <int D>
__device__ __forceinline__ void ldm_offsets(uint32_t (&off)[4], int row, int lo) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    off[j] = static_cast<uint32_t>(row * 2 * D + (((2 * j + lo) ^ (row & 7)) << 4));
}
template <int D>
__device__ __forceinline__ uint32_t ldm_addr(uint32_t base, const uint32_t (&off)[4], int R,
                                             int cp) {
  return base + off[cp & 3] + static_cast<uint32_t>(R * 2 * D + (cp >> 2) * 128);
}

// Copies rows [0, rows) of a [rows][D] tile from global (row stride `stride`, rows >= valid
// zero-filled) into the swizzled shared tile. Thread tid copies chunk tid % kChunks of rows
// tid / kChunks + i * kRowsPerCopy: consecutive threads read consecutive 16 bytes of a row.
template <typename Tr, int kRows, typename T>
__device__ __forceinline__ void load_tile(uint32_t s, const T* g, int64_t stride, int valid,
                                          int tid) {
  constexpr int D = Tr::kChunks * 8;
  const int c = tid % Tr::kChunks, r0 = tid / Tr::kChunks;
#pragma unroll
  for (int i = 0; i < kRows / Tr::kRowsPerCopy; ++i) {
    const int r = r0 + i * Tr::kRowsPerCopy;
    const bool ok = r < valid;
    // Rows past the end are zero-filled: K rows so their scores are finite before masking, V
    // rows because they are multiplied by p = 0 and 0 * NaN (stale memory) would be NaN.
    sm80::cp_async_16(s + 2 * swz<D>(r, c), g + (ok ? r : 0) * stride + c * 8, ok);
  }
}

template <int M, int N>
__device__ __forceinline__ void fill(float (&a)[M][N][4], float v) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) a[i][j][e] = v;
}

// A CTA's rows: its (batch, q head), first row m0, and its sequence's lengths and first rows
// (varlen lengths clamped to the maxima that sized the grid).
struct BlockRows {
  int b, h, m0, len_q, len_k;
  int64_t q_start, k_start;
};
template <int kBlockM>
__device__ __forceinline__ BlockRows block_rows(const AttentionPrefillParams& p) {
  BlockRows r;
  const unsigned heads = static_cast<unsigned>(p.batch * p.heads_q);
  const unsigned bh = blockIdx.x % heads, m_rev = blockIdx.x / heads;
  r.h = static_cast<int>(bh % p.heads_q);
  r.b = static_cast<int>(bh / p.heads_q);
  const int num_m_blocks = (p.seqlen_q + kBlockM - 1) / kBlockM;
  r.m0 = (num_m_blocks - 1 - static_cast<int>(m_rev)) * kBlockM;
  r.len_q = p.seqlen_q, r.len_k = p.seqlen_k;
  r.q_start = 0, r.k_start = 0;
  if (p.cu_seqlens_q != nullptr) {
    const int q0 = p.cu_seqlens_q[r.b], k0 = p.cu_seqlens_k[r.b];
    r.q_start = q0, r.k_start = k0;
    r.len_q = min(max(p.cu_seqlens_q[r.b + 1] - q0, 0), p.seqlen_q);
    r.len_k = min(max(p.cu_seqlens_k[r.b + 1] - k0, 0), p.seqlen_k);
  }
  return r;
}

}  // namespace prefill_detail

// 1-D grid of row blocks x B x Hq, blockIdx.x = m_rev * (B * Hq) + b * Hq + h (the launch order):
// the q heads that share a kv head run side by side (their K/V reads hit L2), and m_rev counts
// row blocks from the LAST one, so with causal masking the longest rows (the most key tiles) are
// scheduled first and the short ones fill the tail. (1-D: no 65535 limit on row blocks.)
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(PrefillTraits<T, kHeadDim>::kThreads,
                                  PrefillTraits<T, kHeadDim>::kMinBlocksPerSm)
    attention_prefill_kernel(const AttentionPrefillParams p) {
  using Tr = PrefillTraits<T, kHeadDim>;
  using namespace prefill_detail;
  constexpr int D = kHeadDim, BM = Tr::kBlockM, BN = Tr::kBlockN, SN = Tr::kStepN;
  constexpr int MT = Tr::kMTiles, kStages = Tr::kStages, kNAtoms = SN / 8, kDAtoms = D / 8;

  SQUASH_EXTERN_SHARED(unsigned char, smem_raw);
  T* sQ = reinterpret_cast<T*>(smem_raw);  // [BM][D], reused to stage the output
  constexpr uint32_t kKVBytes = Tr::kKVElems * sizeof(T);
  const uint32_t sQa = sm80::smem_u32(sQ);
  const uint32_t sKa = sQa + Tr::kQElems * sizeof(T);  // [kStages][BN][D]
  const uint32_t sVa = sKa + kStages * kKVBytes;        // [kStages][BN][D]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  int len_q, len_k, m0;
  const T *qg, *kg, *vg;
  {
    const BlockRows r = block_rows<BM>(p);
    if (r.m0 >= r.len_q) return;  // whole CTA: a shorter varlen sequence
    len_q = r.len_q, len_k = r.len_k, m0 = r.m0;
    const int hk = r.h / (p.heads_q / p.heads_kv);
    qg = static_cast<const T*>(p.q) + r.b * p.q_batch_stride +
         (r.q_start + m0) * p.q_seq_stride + r.h * p.q_head_stride;
    kg = static_cast<const T*>(p.k) + r.b * p.k_batch_stride + r.k_start * p.k_seq_stride +
         hk * p.k_head_stride;
    vg = static_cast<const T*>(p.v) + r.b * p.v_batch_stride + r.k_start * p.v_seq_stride +
         hk * p.v_head_stride;
  }

  // Query row i sees keys j < len_k with (causal) j <= i + diag. The block's last real row
  // bounds the keys any row of it sees.
  const int diag = len_k - len_q;
  const int rows_here = min(BM, len_q - m0);
  const int key_end = p.causal ? max(0, min(len_k, m0 + rows_here + diag)) : len_k;
  const int n_tiles = (key_end + BN - 1) / BN;

  // Tile `it` of the walk is key tile n_tiles - 1 - it (last first: the masked tiles come first).
  auto load_k = [&](int it) {
    const int n0 = (n_tiles - 1 - it) * BN;
    load_tile<Tr, BN>(sKa + (it % kStages) * kKVBytes, kg + n0 * p.k_seq_stride,
                      p.k_seq_stride, len_k - n0, tid);
  };
  auto load_v = [&](int it) {
    const int n0 = (n_tiles - 1 - it) * BN;
    load_tile<Tr, BN>(sVa + (it % kStages) * kKVBytes, vg + n0 * p.v_seq_stride,
                      p.v_seq_stride, len_k - n0, tid);
  };

  // Prologue: Q joins the first K group; kStages - 1 tiles of K and V in flight. Every step
  // commits a group even when it copies nothing, so the wait counts stay fixed.
  if (n_tiles > 0) load_tile<Tr, BM>(sQa, qg, p.q_seq_stride, len_q - m0, tid);
#pragma unroll
  for (int it = 0; it < kStages - 1; ++it) {
    if (it < n_tiles) load_k(it);
    sm80::cp_async_commit();
    if (it < n_tiles) load_v(it);
    sm80::cp_async_commit();
  }

  // ldmatrix.x4 of a 16-row x 16-column block, in the same matrix order for all three operands
  // (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15),
  // so they share one set of per-lane offsets: lane l gives row l % 8 + 8 * (l / 8 % 2) of
  // column half l / 16. Q rows x d: registers a0..a3 of the A operand. K keys x d: b0 of key
  // atoms 0 and 1, then b1 of both. V keys x d with .trans: b0, b1 of d atom 0, then of d atom 1.
  const int warp_row0 = warp * Tr::kRowsPerWarp;
  uint32_t ldm_off[4];
  ldm_offsets<D>(ldm_off, lane % 8 + (lane / 8 % 2) * 8, lane / 16);
  const uint32_t sQw = sQa + warp_row0 * 2 * D;  // a multiple of 16 rows: keeps row & 7

  // Masking, in few registers. A lane's score (row, key), row = m0 + warp_row0 + g + ro
  // (ro = 16 mt + 0/8), key = n0 + 2t + (8 j + 0/1), is visible iff
  //   non-causal: key < len_k, i.e. 8 j + 0/1 < lim - n0 with lim = len_k - 2t;
  //   causal:     key <= row + diag, i.e. 8 j + 0/1 < lim - n0 + ro with
  //               lim = m0 + warp_row0 + g + diag + 1 - 2t.
  // The causal bound alone suffices: for a real row (row < len_q) it is <= len_k. Padding rows
  // (row >= len_q) may then see zero-filled keys past the end; their results are never stored.
  // A tile needs the mask iff n0 + BN > mask_from (some key is invisible to the first row).
  const int lim = p.causal ? m0 + warp_row0 + g + diag + 1 - 2 * t : len_k - 2 * t;
  const int ro_step = p.causal ? 8 : 0;
  const int mask_from = p.causal ? min(len_k, m0 + diag + 1) : len_k;

  const float scale_log2 = p.softmax_scale * kLog2e;
  float o[MT][kDAtoms][4];
  float m[MT][2], l[MT][2];  // per row (g and g + 8 of each m tile), m in log2 units
  fill(o, 0.f);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) m[mt][hh] = kNegInf, l[mt][hh] = 0.f;

  for (int it = 0; it < n_tiles; ++it) {
    const int stage = it % kStages;
    const int n0 = (n_tiles - 1 - it) * BN;
    const bool masked = n0 + BN > mask_from;
    // K(it) (and Q) landed for this thread; the barrier publishes everyone's copies and
    // guarantees that every warp is done with step it - 1, whose K stage is refilled next.
    sm80::cp_async_wait<Tr::kGroupsInFlight>();
    __syncthreads();
    if (it + kStages - 1 < n_tiles) load_k(it + kStages - 1);
    sm80::cp_async_commit();
    const uint32_t sKs = sKa + stage * kKVBytes, sVs = sVa + stage * kKVBytes;

    // Not unrolled: interleaving one step's P V with the next step's Q K^T keeps two S tiles
    // live, which pushed D 128 past 255 registers.
#pragma unroll 1
    for (int step = 0; step < BN / SN; ++step) {
      // ---- S = Q K^T for keys [step * SN, step * SN + SN) of the tile (raw, fp32) ----
      float s[MT][kNAtoms][4];
      fill(s, 0.f);
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          sm80::ldmatrix_x4(a[mt], ldm_addr<D>(sQw, ldm_off, mt * 16, ks));
#pragma unroll
        for (int np = 0; np < kNAtoms / 2; ++np) {
          uint32_t bk[4];
          sm80::ldmatrix_x4(bk, ldm_addr<D>(sKs, ldm_off, step * SN + np * 16, ks));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            sm80::mma_16816(s[mt][2 * np], a[mt], bk[0], bk[2], T{});
            sm80::mma_16816(s[mt][2 * np + 1], a[mt], bk[1], bk[3], T{});
          }
        }
      }

      // ---- mask: keys past the end, and (causal) keys right of row i + diag ----
      if (masked) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int limit = lim - n0 - step * SN + ro_step * (2 * mt + hh);
#pragma unroll
            for (int j = 0; j < kNAtoms; ++j)
#pragma unroll
              for (int e = 0; e < 2; ++e)
                if (j * 8 + e >= limit) s[mt][j][2 * hh + e] = kNegInf;
          }
      }

      // ---- online softmax (rows g and g + 8 of each m tile; a row's 4 lanes share it) ----
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float mx = kNegInf;
#pragma unroll
          for (int j = 0; j < kNAtoms; ++j)
            mx = fmaxf(mx, fmaxf(s[mt][j][2 * hh], s[mt][j][2 * hh + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m[mt][hh], mx * scale_log2);
          // A row that has seen only masked keys keeps m = -inf: subtract 0 instead (its
          // scores are -inf and give p = 0, and exp2(-inf - 0) = 0 rescales nothing), never
          // -inf - -inf.
          const float m_use = m_new == kNegInf ? 0.f : m_new;
          const float corr = exp2f(m[mt][hh] - m_use);
          m[mt][hh] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int j = 0; j < kNAtoms; ++j)
#pragma unroll
            for (int e = 2 * hh; e < 2 * hh + 2; ++e) {
              s[mt][j][e] = exp2f(fmaf(s[mt][j][e], scale_log2, -m_use));
              sum += s[mt][j][e];
            }
          // l is this lane's partial sum (its 2 columns of each atom); the row's 4 lanes are
          // added once at the end.
          l[mt][hh] = l[mt][hh] * corr + sum;
#pragma unroll
          for (int j = 0; j < kDAtoms; ++j) {
            o[mt][j][2 * hh] *= corr;
            o[mt][j][2 * hh + 1] *= corr;
          }
        }

      if (step == 0) {
        // V(it) landed; the barrier also means every warp is done with step it - 1's V stage.
        sm80::cp_async_wait<Tr::kGroupsInFlight>();
        __syncthreads();
        if (it + kStages - 1 < n_tiles) load_v(it + kStages - 1);
        sm80::cp_async_commit();
      }

      // ---- O += P V: P (rounded to T) straight from the S accumulators ----
#pragma unroll
      for (int ps = 0; ps < SN / 16; ++ps) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = sm80::pack2(s[mt][2 * ps][0], s[mt][2 * ps][1], T{});
          a[mt][1] = sm80::pack2(s[mt][2 * ps][2], s[mt][2 * ps][3], T{});
          a[mt][2] = sm80::pack2(s[mt][2 * ps + 1][0], s[mt][2 * ps + 1][1], T{});
          a[mt][3] = sm80::pack2(s[mt][2 * ps + 1][2], s[mt][2 * ps + 1][3], T{});
        }
#pragma unroll
        for (int dp = 0; dp < kDAtoms / 2; ++dp) {
          uint32_t bv[4];
          sm80::ldmatrix_x4_trans(bv, ldm_addr<D>(sVs, ldm_off, step * SN + ps * 16, dp));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            sm80::mma_16816(o[mt][2 * dp], a[mt], bv[0], bv[1], T{});
            sm80::mma_16816(o[mt][2 * dp + 1], a[mt], bv[2], bv[3], T{});
          }
        }
      }
    }
  }
  // Only empty groups can be left; drain them (the Q stage is reused below).
  sm80::cp_async_wait<0>();

  // ---- epilogue: O / l rounded to T, staged through this warp's own Q rows ----
  // Row bounds and pointers are recomputed here (cu_seqlens reloaded) instead of being kept
  // live across the loop, where ptxas spilled them at the 255-register limit (D 128).
  const BlockRows r = block_rows<BM>(p);
  float* lse_g = p.lse + r.b * p.lse_batch_stride + r.h * p.lse_head_stride + r.q_start + r.m0;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float sum = l[mt][hh];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      // sum == 0: the row saw no key (every p was exp2(-inf) = 0): out 0, lse -inf.
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = warp_row0 + mt * 16 + g + hh * 8;
#pragma unroll
      for (int j = 0; j < kDAtoms; ++j) {
        // Warp-private rows: the last reads of them (this warp's ldmatrix) precede in program
        // order, so no barrier is needed before overwriting.
        *reinterpret_cast<uint32_t*>(sQ + swz<D>(row, j) + 2 * t) =
            sm80::pack2(o[mt][j][2 * hh] * inv, o[mt][j][2 * hh + 1] * inv, T{});
      }
      if (t == 0 && r.m0 + row < r.len_q)
        lse_g[row] = sum > 0.f ? (m[mt][hh] + log2f(sum)) * kLn2 : kNegInf;
    }
  __syncwarp();
  T* og = static_cast<T*>(p.out) + r.b * p.out_batch_stride +
          (r.q_start + r.m0) * p.out_seq_stride + r.h * p.out_head_stride;
#pragma unroll
  for (int i = lane; i < Tr::kRowsPerWarp * Tr::kChunks; i += 32) {
    const int row = warp_row0 + i / Tr::kChunks, c = i % Tr::kChunks;
    if (r.m0 + row < r.len_q)
      *reinterpret_cast<uint4*>(og + row * p.out_seq_stride + c * 8) =
          *reinterpret_cast<const uint4*>(sQ + swz<D>(row, c));
  }
}

}  // namespace squash::attention
