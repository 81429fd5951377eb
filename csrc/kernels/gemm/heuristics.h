// Which kernel runs a weight-only GEMM, as pure functions of the problem (FA3 tile_size.h style).
// Torch-free and CUDA-free: the binding, the C++ benchmark and the kernels all read the same
// tables, so a config forced by a benchmark is exactly what the heuristic could pick.
//
// NOT YET MEASURED: every branch below states what we expect and why; the numbers come from the
// lead's first H100 run (bench/cpp/gemv_bench.cu sweeps every config and split count).
#pragma once

namespace squash::gemm {

// GEMV configs (CUDA-core kernel, csrc/kernels/gemm/woq_gemv.cuh). A block is kGemvWarps warps;
// each warp owns rows_per_warp output channels and walks K with all 32 lanes; each lane issues
// loads16 16-byte weight loads per row per K chunk (fewer bytes per load when K forces narrower
// loads, with proportionally more loads so the chunk's bytes in flight stay the same).
// max_m: the kernel holds max_m activation rows in shared memory and registers (rows past M are
// zero and cost wasted FMAs, so the smallest config that covers M is the right one).
// Splits whose K ranges are all non-empty: each split takes ceil(chunks / s) chunks, so only
// ceil(chunks / that) splits get work; the rest would just write zero partials.
constexpr int effective_splits(int s, int chunks) {
  if (s <= 1 || chunks <= 1) return 1;
  if (s > chunks) s = chunks;
  const int per = (chunks + s - 1) / s;
  return (chunks + per - 1) / per;
}

enum class GemvConfig : int { kM1 = 0, kM2, kM4, kM8, kM16, kCount };

struct GemvConfigInfo {
  const char* name;
  int max_m;
  int rows_per_warp;
  int loads16;  // 16-byte weight loads per lane per row per K chunk
};

constexpr int kGemvWarps = 4;

// Why these shapes: x sits in shared memory as fp32, and each x value read from shared memory is
// reused by rows_per_warp rows, so shared-memory traffic per weight byte is
// 4 B * (8 / bits) * max_m / rows_per_warp; at M=1 int4 with 2 rows per warp that is ~40% of the
// H100's shared-memory bandwidth at full HBM speed (1 row per warp would be ~80%, too close).
// Accumulators are 2 * rows_per_warp * max_m fp32 registers (per-group partial + total), which
// caps rows_per_warp at 2 for max_m >= 8; loads16 * max_m is capped by the shared-memory chunk
// (max_m * K_chunk * 4 bytes <= 64 KB).
constexpr GemvConfigInfo kGemvConfigs[] = {
    {"gemv_m1", 1, 2, 2},
    {"gemv_m2", 2, 2, 2},
    {"gemv_m4", 4, 4, 1},
    {"gemv_m8", 8, 2, 1},
    {"gemv_m16", 16, 2, 1},
};
static_assert(sizeof(kGemvConfigs) / sizeof(kGemvConfigs[0]) == static_cast<int>(GemvConfig::kCount),
              "one GemvConfigInfo per GemvConfig");

constexpr const GemvConfigInfo& gemv_config_info(GemvConfig c) {
  return kGemvConfigs[static_cast<int>(c)];
}

// K elements per chunk of the wide (16-byte load) path: 32 lanes * loads16 * 16 bytes of a row.
// (The narrow fallback for K % 32 != 0 uses smaller chunks; the split heuristic ignores that.)
constexpr int gemv_k_chunk(GemvConfig c, int bits) {
  return 32 * gemv_config_info(c).loads16 * 16 * (8 / bits);
}

constexpr int gemv_rows_per_block(GemvConfig c) {
  return kGemvWarps * gemv_config_info(c).rows_per_warp;
}

// Largest M the GEMV path serves (choose_woq_plan below decides between it, the tensor-core
// kernel and dequantize + cuBLAS).
constexpr int kGemvMaxM = 16;

// The smallest config whose max_m covers M (M in 1..kGemvMaxM).
constexpr GemvConfig gemv_config_for_m(int M) {
  // Expected: M=1 and M=2 stream the weights at close to HBM speed (dequant + FMA fit in the
  // issue budget: ~3-4 instructions per int4 weight at 26 weights/clk/SM). From M=4 the FMAs
  // (M per weight) dominate and the kernel turns compute-bound on the CUDA cores: int4 M=16
  // reaches only ~25-30% of HBM speed, still ~1x cuBLAS fp16 and well above dequant+cuBLAS
  // (which reads 1.25x the fp16 weight bytes before cuBLAS even starts).
  return M <= 1 ? GemvConfig::kM1
       : M <= 2 ? GemvConfig::kM2
       : M <= 4 ? GemvConfig::kM4
       : M <= 8 ? GemvConfig::kM8
                : GemvConfig::kM16;
}

// Split-K factor: only when the N tiles alone cannot fill the GPU. Deterministic split-K writes
// fp32 partials and a second tiny kernel sums them in a fixed order (adds bias, converts), so it
// costs one extra launch (~2-3 us without CUDA graphs): never used for the Llama shapes, where
// N >= 4096 gives >= 512 blocks of 4 warps (~16 warps per SM on 132 SMs, ~30 KB of weight loads in
// flight per SM, above the ~20 KB Little's law asks for at ~3 TB/s and ~1 us latency).
// Expected to matter for narrow layers (k/v projections with N = 1024 under GQA).
constexpr int gemv_splits(GemvConfig c, int N, int K, int bits, int sm_count) {
  const int rows = gemv_rows_per_block(c);
  const int blocks = (N + rows - 1) / rows;
  const int chunks = (K + gemv_k_chunk(c, bits) - 1) / gemv_k_chunk(c, bits);
  const int target = 2 * (sm_count > 0 ? sm_count : 132);  // >= 2 blocks (8 warps) per SM
  if (blocks >= target) return 1;
  int s = (target + blocks - 1) / blocks;
  if (s > 8) s = 8;  // more partials than that cost more traffic than the parallelism gains
  return effective_splits(s, chunks);
}

// Tensor-core configs (woq_mma_kernel.cuh): a block is 4 warps x 16 output channels; max_m
// tokens in n8 tiles; blocks_per_chunk scale blocks (128 k for int4, 64 k for int8) of weights
// per K chunk per thread (one 16-byte load per block per row half): 4 for <= 16 tokens (8 KB of
// weights per warp in flight with the prefetch), 2 above (the accumulators take the registers).
enum class MmaConfig : int { kM8 = 0, kM16, kM32, kM64, kCount };

struct MmaConfigInfo {
  const char* name;
  int max_m;
  int blocks_per_chunk;
};

constexpr MmaConfigInfo kMmaConfigs[] = {
    {"mma_m8", 8, 4},
    {"mma_m16", 16, 4},
    {"mma_m32", 32, 2},
    {"mma_m64", 64, 2},
};
static_assert(sizeof(kMmaConfigs) / sizeof(kMmaConfigs[0]) == static_cast<int>(MmaConfig::kCount),
              "one MmaConfigInfo per MmaConfig");

constexpr const MmaConfigInfo& mma_config_info(MmaConfig c) { return kMmaConfigs[static_cast<int>(c)]; }

// k per scale block: 4 threads x 16 bytes of a row. Every group must be a multiple of it.
constexpr int mma_scale_block(int bits) { return bits == 4 ? 128 : 64; }
constexpr int mma_k_chunk(MmaConfig c, int bits) {
  return mma_scale_block(bits) * mma_config_info(c).blocks_per_chunk;
}
constexpr int kMmaRowsPerBlock = 64;
constexpr int kMmaMaxM = 64;

constexpr MmaConfig mma_config_for_m(int M) {
  return M <= 8 ? MmaConfig::kM8 : M <= 16 ? MmaConfig::kM16 : M <= 32 ? MmaConfig::kM32 : MmaConfig::kM64;
}

// Same rule as the GEMV: split K only until there are ~2 blocks per SM. With 64 rows per block,
// N = 4096 gives 64 blocks, so 4096-wide layers split K ~4-5 ways (partials: splits * M * N * 4
// bytes, L2-resident at these sizes) plus one reduce launch.
constexpr int mma_splits(MmaConfig c, int N, int K, int bits, int sm_count) {
  const int blocks = (N + kMmaRowsPerBlock - 1) / kMmaRowsPerBlock;
  const int chunks = (K + mma_k_chunk(c, bits) - 1) / mma_k_chunk(c, bits);
  const int target = 2 * (sm_count > 0 ? sm_count : 132);
  if (blocks >= target) return 1;
  int s = (target + blocks - 1) / blocks;
  if (s > 8) s = 8;
  return effective_splits(s, chunks);
}

enum class WoqPath : int { kGemv = 0, kMma = 1, kDequantMatmul = 2, kCutlass = 3 };

struct WoqPlan {
  WoqPath path;
  GemvConfig gemv;  // when path == kGemv
  MmaConfig mma;    // when path == kMma
  int splits;       // kGemv / kMma
};

// M, N, K: the GEMM; bits: 4 or 8; sm_count/arch (e.g. 132/90, 108/80) of the device;
// gemv_ok / mma_ok: woq_gemv_supported() / woq_mma_supported() for these pointers and shapes.
constexpr WoqPlan choose_woq_plan(int M, int N, int K, int bits, int sm_count, int arch,
                                  bool gemv_ok, bool mma_ok) {
  (void)arch;  // same choice on sm_80 and sm_90 until measurements say otherwise
  // M <= 4: the CUDA-core GEMV streams the weights at close to HBM speed (its FMAs still fit the
  // issue budget) with no split-K launch. Expected to hold at M = 1, 2; the tensor-core kernel
  // needs fewer instructions per weight (~1.4 vs ~4 for int4), so if it also reaches HBM speed at
  // M = 1 here, prefer it - compare gemv_m1 vs mma_m8 in bench/cpp/gemv_bench.
  if (M >= 1 && M <= 4 && gemv_ok)
    return {WoqPath::kGemv, gemv_config_for_m(M), MmaConfig::kM8,
            gemv_splits(gemv_config_for_m(M), N, K, bits, sm_count)};
  // 4 < M <= 64: tensor cores; the CUDA-core GEMV would be FMA-bound (M FMAs per weight).
  if (M >= 1 && M <= kMmaMaxM && mma_ok)
    return {WoqPath::kMma, GemvConfig::kM1, mma_config_for_m(M),
            mma_splits(mma_config_for_m(M), N, K, bits, sm_count)};
  // Shapes the tensor-core kernel does not take (int4 groups 32/64, K % 128 != 0): GEMV to 16.
  if (M >= 1 && M <= kGemvMaxM && gemv_ok)
    return {WoqPath::kGemv, gemv_config_for_m(M), MmaConfig::kM8,
            gemv_splits(gemv_config_for_m(M), N, K, bits, sm_count)};
  // Larger M (or anything else): cuBLAS on dequantized weights (one extra pass writing N*K*2
  // bytes). TARGETS asks ">= 1.0x cublas" at M = 32..128, which this cannot reach (expected
  // ~0.6-0.9x): a known gap above 64 tokens and for groups 32/64 above 16 tokens.
  return {WoqPath::kDequantMatmul, GemvConfig::kM1, MmaConfig::kM8, 1};
}

// What the heuristic picks for the TARGETS shapes on an H100 (132 SMs), checked at compile time
// so a change to the rules shows up here.
static_assert(choose_woq_plan(1, 4096, 4096, 4, 132, 90, true, true).path == WoqPath::kGemv);
static_assert(choose_woq_plan(1, 4096, 4096, 4, 132, 90, true, true).splits == 1);
static_assert(choose_woq_plan(16, 4096, 4096, 4, 132, 90, true, true).path == WoqPath::kMma);
static_assert(choose_woq_plan(16, 4096, 4096, 4, 132, 90, true, true).splits == 4);  // 8 chunks / 2
static_assert(choose_woq_plan(16, 28672, 8192, 4, 132, 90, true, true).splits == 1);
static_assert(choose_woq_plan(16, 4096, 4096, 4, 132, 90, true, false).path == WoqPath::kGemv);
static_assert(choose_woq_plan(32, 4096, 4096, 4, 132, 90, true, false).path == WoqPath::kDequantMatmul);
static_assert(choose_woq_plan(128, 4096, 4096, 4, 132, 90, true, true).path == WoqPath::kDequantMatmul);
static_assert(effective_splits(5, 8) == 4 && effective_splits(3, 2) == 2 && effective_splits(4, 1) == 1);


// ---- prepacked tensor-core kernel (pk_gemm_kernel.cuh; layout prepacked_layout.h) ----
// NOT YET MEASURED either: the table and the rules below are the design's expectations, to be
// tuned from bench/cpp/pk_bench.cu's sweep (every config x split count) on the lent H100.
//
// A block is wn x wk warps; warp (wn, wk) owns nw n8 tiles (8 output channels each) and, in each
// pipeline stage, kw k tiles (128 k int4 / 64 k int8, prepacked_layout.h), so a stage is
// tile_n = 8 nw wn channels by stage_units = kw wk k tiles; warps sharing n (wk > 1) are summed
// through shared memory at the end. mt m16 token tiles (max_m = 16 mt rows per block; larger M
// runs ceil(M / max_m) row chunks side by side on the same weights, which L2 then serves once).
// Every config moves 4-8 KB of weights per stage (16 KB of x at most), and stages - 1 stages are
// in flight: 16-40 KB per block, above the ~20 KB per SM that Little's law asks for at ~3 TB/s
// over 132 SMs with ~1 us of DRAM latency.
// Why tile_n grows with M: every block re-reads its x rows (M x K x 2 bytes) from L2 while it
// streams tile_n x K / 2 weight bytes from DRAM; x traffic / weight traffic = 4M / tile_n (int4),
// which stays <= 1 up to M = 16 and 2 above (L2 has ~2-3x DRAM bandwidth).
enum class PkConfig : int { kM16N16 = 0, kM16N32, kM16N64, kM32N64, kM64N128, kCount };

struct PkConfigInfo {
  const char* name;
  int mt;      // m16 token tiles per block
  int nw;      // n8 tiles per warp
  int kw;      // k tiles per warp per stage
  int wn, wk;  // warps along n and along k
  int stages;  // cp.async pipeline depth
};

constexpr PkConfigInfo kPkConfigs[] = {
    // M <= 4: 16 channels per block, so even N = 4096 makes 256 blocks (~2 per SM) without split-K.
    {"pk_m16_n16", 1, 2, 1, 1, 4, 6},
    {"pk_m16_n32", 1, 4, 1, 1, 4, 5},
    {"pk_m16_n64", 1, 4, 1, 2, 2, 5},
    // Accumulators: mt * nw * 4 fp32 per thread, twice for group-wise scales (see the kernel).
    {"pk_m32_n64", 2, 4, 1, 2, 2, 4},
    {"pk_m64_n128", 4, 4, 1, 4, 1, 4},
};
static_assert(sizeof(kPkConfigs) / sizeof(kPkConfigs[0]) == static_cast<int>(PkConfig::kCount),
              "one PkConfigInfo per PkConfig");

constexpr const PkConfigInfo& pk_config_info(PkConfig c) { return kPkConfigs[static_cast<int>(c)]; }
constexpr int pk_max_m(PkConfig c) { return 16 * pk_config_info(c).mt; }
constexpr int pk_tile_n(PkConfig c) { return 8 * pk_config_info(c).nw * pk_config_info(c).wn; }
constexpr int pk_stage_units(PkConfig c) { return pk_config_info(c).kw * pk_config_info(c).wk; }
constexpr int pk_tile_k(int bits) { return bits == 4 ? 128 : 64; }  // = pack::tile_k

// Above this many tokens the prepacked op dequantizes to a dense weight and calls cuBLAS (until
// the CUTLASS mixed-input path takes large M): from M ~ 128 cuBLAS's wgmma GEMM is compute-bound
// and mma.sync with per-block dequantization cannot beat it.
constexpr int kPkMaxM = 256;

// Smallest tile_n whose x re-reads stay <= 1x the weight traffic (4M / tile_n for int4, 2M /
// tile_n for int8), then the 32- and 64-token configs.
constexpr PkConfig pk_config_for_m(int M, int bits) {
  const int m = bits == 8 ? (M + 1) / 2 : M;  // int8 weights are twice the bytes per channel
  return m <= 4 ? PkConfig::kM16N16 : m <= 8 ? PkConfig::kM16N32
       : M <= 16 ? PkConfig::kM16N64 : M <= 32 ? PkConfig::kM32N64 : PkConfig::kM64N128;
}

// Blocks of one launch (row chunks x column blocks), before split-K.
constexpr int pk_blocks(PkConfig c, int M, int N) {
  return ((M + pk_max_m(c) - 1) / pk_max_m(c)) * ((N + pk_tile_n(c) - 1) / pk_tile_n(c));
}
constexpr int pk_k_stages(PkConfig c, int K, int bits) {
  const int tiles = (K + pk_tile_k(bits) - 1) / pk_tile_k(bits);
  return (tiles + pk_stage_units(c) - 1) / pk_stage_units(c);
}
// Split s as the kernel runs it: each split takes ceil(stages / s) stages, so only
// ceil(stages / that) splits have work (effective_splits).
// Split-K: the kernel stays bandwidth-bound, so the time goes as (bytes moved) / (fraction of
// the SMs busy in the last wave). Per output column a split costs 8 M bytes of fp32 partials
// (written, then read by the block that finishes the tile) against K * bits / 8 weight bytes;
// the SMs are evenly busy when blocks * s fills whole waves of sm_count. A split keeps at least
// kPkMinSplitStages pipeline stages, or its prologue (stages - 1 loads before any compute)
// dominates.
constexpr int kPkMinSplitStages = 4;
constexpr double pk_wave_efficiency(int units, int sm_count) {
  const int waves = (units + sm_count - 1) / sm_count;
  return static_cast<double>(units) / (static_cast<double>(waves) * sm_count);
}
constexpr int pk_splits(PkConfig c, int M, int N, int K, int bits, int sm_count) {
  const int sms = sm_count > 0 ? sm_count : 132;
  const int blocks = pk_blocks(c, M, N);
  const int stages = pk_k_stages(c, K, bits);
  const double weight_bytes = static_cast<double>(K) * bits / 8.0;
  int best = 1;
  double best_cost = weight_bytes / pk_wave_efficiency(blocks, sms);
  for (int s = 2; s <= 16; ++s) {
    const int per = (stages + s - 1) / s;
    if (per < kPkMinSplitStages) break;
    const int es = effective_splits(s, stages);
    const double cost = (weight_bytes + 8.0 * M * es) / pk_wave_efficiency(blocks * es, sms);
    if (cost < 0.97 * best_cost) {  // a split must pay for its extra partials and launch logic
      best = es;
      best_cost = cost;
    }
  }
  return best;
}

struct PkPlan {
  bool dequant;  // M > kPkMaxM: dequantize + cuBLAS
  PkConfig config;
  int splits;
};

// M, N, K: the GEMM; bits 4 or 8; sm_count/arch of the device (same rules on sm_80 and sm_90
// until measurements say otherwise).
constexpr PkPlan choose_pk_plan(int M, int N, int K, int bits, int sm_count, int arch) {
  (void)arch;
  if (M > kPkMaxM) return {true, PkConfig::kM64N128, 1};
  const PkConfig c = pk_config_for_m(M, bits);
  return {false, c, pk_splits(c, M, N, K, bits, sm_count)};
}

// The TARGETS shapes on an H100 (132 SMs): M = 1 fills the GPU without split-K; 64-channel blocks
// at M = 16 need 2 splits on 4096-wide layers; 1024-wide (GQA k/v) layers split at M = 1.
static_assert(choose_pk_plan(1, 4096, 4096, 4, 132, 90).config == PkConfig::kM16N16);
static_assert(choose_pk_plan(1, 4096, 4096, 4, 132, 90).splits == 1);
static_assert(choose_pk_plan(1, 28672, 8192, 4, 132, 90).splits == 1);
static_assert(choose_pk_plan(16, 4096, 4096, 4, 132, 90).config == PkConfig::kM16N64);
static_assert(choose_pk_plan(16, 4096, 4096, 4, 132, 90).splits == 2);
static_assert(choose_pk_plan(1, 1024, 4096, 4, 132, 90).splits == 2);
static_assert(choose_pk_plan(8, 4096, 4096, 8, 132, 90).config == PkConfig::kM16N16);
static_assert(choose_pk_plan(300, 4096, 4096, 4, 132, 90).dequant);

// ---- large M: CUTLASS mixed-input GEMM (woq_cutlass.h) instead of dequantize + cuBLAS ----
// The weights stay int4/int8 in memory and are converted to the activation dtype in registers
// right before the tensor-core MMA: the GEMM reads N*K*bits/8 weight bytes instead of the
// dequantize pass's N*K*(bits/8 + 2) written + N*K*2 read again by cuBLAS. Measured before
// (bench/results, H100): dequantize + cuBLAS at M = 128 ran at 0.43-0.55x cuBLAS fp16.
// sm_90a: 3.x TMA + wgmma with the quantized operand as A through registers (int4 and int8,
// group-wise scales and zero points); sm_80: 2.x mixed-input upcast (int8 only: CUTLASS 2.x has
// no 4-bit x 16-bit path, BUILD_NOTES), per-channel scales applied in the epilogue.
enum class WoqCutlassConfig : int { kSm90_64x128 = 0, kSm90_128x128, kSm80_128x128, kCount };

struct WoqCutlassConfigInfo {
  const char* name;  // SQUASH_WOQ_CONFIG value that forces it
  int arch;          // 90: sm_90a only; 80: sm_80..sm_90 (compiled for both)
  int tile_w;        // weight rows (output channels) per CTA tile
  int tile_t;        // tokens per CTA tile
};

constexpr WoqCutlassConfigInfo kWoqCutlassConfigs[] = {
    {"cutlass_sm90_64x128", 90, 64, 128},
    {"cutlass_sm90_128x128", 90, 128, 128},
    {"cutlass_sm80_128x128", 80, 128, 128},
};
static_assert(sizeof(kWoqCutlassConfigs) / sizeof(kWoqCutlassConfigs[0]) ==
                  static_cast<int>(WoqCutlassConfig::kCount),
              "one WoqCutlassConfigInfo per WoqCutlassConfig");

constexpr const WoqCutlassConfigInfo& woq_cutlass_config_info(WoqCutlassConfig c) {
  return kWoqCutlassConfigs[static_cast<int>(c)];
}

constexpr bool woq_cutlass_config_runs_on(WoqCutlassConfig c, int arch, int bits) {
  return woq_cutlass_config_info(c).arch == 90 ? arch == 90 : (bits == 8 && arch >= 80 && arch < 100);
}

// NOT YET MEASURED. sm_90: up to 128 tokens one 128-token tile holds them all, so each weight tile
// is read by exactly one CTA (the GEMM is weight-bandwidth-bound there) and 64-row weight tiles
// give N/64 CTAs (64 for N = 4096); two ping-pong warp groups overlap one tile's epilogue with
// the other's MMA. Above 128 tokens, 128x128 cooperative tiles halve the B (activation) reloads
// per weight byte. Justified when the w4a16/w8a16 suites show squash >= cublas at M = 128 (the
// >= 1.0x goal) and forcing cutlass_sm90_64x128 is slower than the default from M = 256.
constexpr WoqCutlassConfig choose_woq_cutlass_config(int M, int N, int K, int bits, int arch) {
  (void)N, (void)K, (void)bits;
  if (arch == 90) return M <= 128 ? WoqCutlassConfig::kSm90_64x128 : WoqCutlassConfig::kSm90_128x128;
  return WoqCutlassConfig::kSm80_128x128;
}

// choose_woq_plan, with its dequantize + cuBLAS fallback replaced by the CUTLASS GEMM wherever
// that can run (cutlass_ok: woq_cutlass_supported for choose_woq_cutlass_config's pick). It takes
// every M the small-M kernels leave (M > 64, int4 groups 32/64 above 16 tokens): one pass over
// the quantized weights is cheaper than dequantizing them, whatever M.
constexpr WoqPlan choose_woq_plan_cutlass(int M, int N, int K, int bits, int sm_count, int arch,
                                          bool gemv_ok, bool mma_ok, bool cutlass_ok) {
  WoqPlan plan = choose_woq_plan(M, N, K, bits, sm_count, arch, gemv_ok, mma_ok);
  if (plan.path == WoqPath::kDequantMatmul && cutlass_ok) plan.path = WoqPath::kCutlass;
  return plan;
}

static_assert(choose_woq_plan_cutlass(128, 4096, 4096, 4, 132, 90, true, true, true).path == WoqPath::kCutlass);
static_assert(choose_woq_plan_cutlass(16, 4096, 4096, 4, 132, 90, true, true, true).path == WoqPath::kMma);
static_assert(choose_woq_plan_cutlass(128, 4096, 4096, 4, 132, 90, true, true, false).path ==
              WoqPath::kDequantMatmul);
static_assert(choose_woq_cutlass_config(128, 4096, 4096, 4, 90) == WoqCutlassConfig::kSm90_64x128);
static_assert(!woq_cutlass_config_runs_on(WoqCutlassConfig::kSm80_128x128, 80, 4));

}  // namespace squash::gemm
