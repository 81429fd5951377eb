// The prepacked weight layout of the small-M tensor-core GEMM (pk_gemm_kernel.cuh), derived once
// at load time from the canonical layout (docs/FORMATS.md, "Prepack"). Torch-free and CUDA-free:
// the prepack ops (csrc/ops/prepack.cpp), the kernels, the host emulation and the C++ benchmark
// all read the same definition.
//
// Why this order: the kernel multiplies x (the mma A operand, tokens as rows) by the weights (the
// B operand, 8 output channels per n8 tile). One 16-byte load per lane must give the B fragments
// of several mma.m16n8k16 after an in-register dequantization, and the x fragments must come
// from plain 16-byte shared loads of x in its natural order. The dot product does not care about
// the order of k as long as A and B agree, so each k32 slice is permuted: mma step u (0, 1) of
// lane t (= lane % 4) takes the logical k slots {2t, 2t+1, 2t+8, 2t+9} from the physical
// k = 8t + 4u + {0, 1, 2, 3}. Lane t's A fragments for both steps are then x[8t .. 8t+7] (one
// 16-byte load per token row), and its B fragments are the same 8 consecutive k of column
// g (= lane / 4).
//
// A tile is 8 output channels x kTileK(bits) k, 512 bytes, lane l = 4g + t owning bytes
// [16l, 16l + 16) = four 32-bit words:
//   int4 (tile k 128): word i covers the k32 slice i; its 8 nibbles are column g at
//     k = 32i + 8t + 4u + j (u: mma step, j: 0..3) at nibble position p = 4 (j & 1) + 2u + (j >> 1),
//     so that ((word >> 4s) & 0x000F000F) is the (low, high) pair of one B register:
//     s = 0: step 0, k +0/+1 (b0); s = 1: step 0, k +2/+3 (b1); s = 2, 3: the same for step 1
//     (Marlin's interleave, which one lop3 per register turns into fp16/bf16).
//   int8 (tile k 64): word i covers k32 slice i >> 1, step i & 1: bytes j = 0..3 hold column g at
//     k = 32 (i >> 1) + 8t + 4 (i & 1) + j, stored as q + 128 (uint8), so b0 = bytes (0, 1) and
//     b1 = bytes (2, 3) become fp16 with one byte-permute into the mantissa of 1024.
// Tiles are stored [N / 8][ceil(K / kTileK)][512 bytes]: one tile column (8 channels) is one
// contiguous run along K, so a block streaming a k range reads long contiguous runs. K is padded
// with zero nibbles (int8: q = 0) to whole tiles; x is zero there (the kernel zero-fills x past K).
//
// Scales: float32 [N / 8][G][8] (G = K / group, 1 for per-channel; [N / 8][1][8] is the same memory
// as [N]), zeros: uint8 [N / 8][G][8] (int4 only): the 8 channels of a tile are contiguous per
// group, so a lane reads its two output columns' scales (2t, 2t+1) with one 8-byte load and its
// B column's zero point (g) with one byte load.
#pragma once

namespace squash::gemm::pack {

constexpr int kTileN = 8;          // output channels per tile (one mma n8 tile)
constexpr int kTileBytes = 512;    // 32 lanes x 16 bytes
constexpr int kLaneBytes = 16;
constexpr int kSliceK = 32;        // k per permuted slice (two mma k16 steps)

constexpr int tile_k(int bits) { return bits == 4 ? 128 : 64; }
constexpr int tiles_k(int bits, long long K) {
  return static_cast<int>((K + tile_k(bits) - 1) / tile_k(bits));
}

// Column (0..7) of the tile held by byte b (0..511) of a tile.
constexpr int byte_col(int b) { return (b >> 4) >> 2; }

// k (within the tile) of the nibble `high` (0: low, 1: high) of byte b of an int4 tile.
constexpr int int4_byte_k(int b, int high) {
  const int t = (b >> 4) & 3, i = (b >> 2) & 3, bw = b & 3;
  // nibble p = 2 bw + high = 4 (j & 1) + 2u + (j >> 1)  =>  j & 1 = bw >> 1, u = bw & 1, j >> 1 = high
  return kSliceK * i + 8 * t + 4 * (bw & 1) + 2 * high + (bw >> 1);
}

// k (within the tile) of byte b of an int8 tile.
constexpr int int8_byte_k(int b) {
  const int t = (b >> 4) & 3, i = (b >> 2) & 3, j = b & 3;
  return kSliceK * (i >> 1) + 8 * t + 4 * (i & 1) + j;
}

// Spot checks of the formulas against the text above (lane 5 = g 1, t 1).
static_assert(byte_col(5 * 16) == 1 && int4_byte_k(5 * 16, 0) == 8 && int4_byte_k(5 * 16, 1) == 10);
static_assert(int4_byte_k(5 * 16 + 1, 0) == 12 && int4_byte_k(5 * 16 + 2, 0) == 9);
static_assert(int4_byte_k(5 * 16 + 4 * 3 + 3, 1) == 96 + 8 + 4 + 2 + 1);
static_assert(int8_byte_k(5 * 16 + 4 * 3 + 2) == 32 + 8 + 4 + 2);

}  // namespace squash::gemm::pack
