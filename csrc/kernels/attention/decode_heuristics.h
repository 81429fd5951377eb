// Launch-shape heuristics of attention_decode: pure functions of host-known sizes (never of
// cache_seqlens, which lives on the device), so one launch shape serves every step of a decode
// loop and the op can be captured in a CUDA graph.
//
// Status: derived from the kernel's structure and the H100's numbers below, NOT yet measured.
// bench/cpp/decode_bench.cu sweeps num_splits (--splits) so these can be tuned from data; record
// the measurement and GPU here when that is done.
#pragma once

namespace squash::attention {

// Upper bound of num_splits: the combine kernel keeps one weight per split in shared memory, and
// beyond ~2 CTAs per SM more splits only add partial-result traffic.
inline constexpr int kDecodeMaxSplits = 128;

// Query rows (Sq x Hq/Hkv sharing a kv head) handled by one CTA: 4 or 8 (a template parameter
// of the kernel). Each row costs ~16 registers per thread (8 q values + 8 accumulators) and
// 2 x 128 FMAs per key; 4 rows cover GQA group 4 at Sq 1 (Llama-3-8B, Mistral) at half the
// registers of 8, and 8 covers group 8 (Llama-3-70B). Groups that need more than 8 rows take
// several row tiles, which re-read K/V mostly from L2 since they run side by side.
inline constexpr int decode_rows_per_cta(int rows) { return rows <= 4 ? 4 : 8; }

inline constexpr int decode_row_tiles(int rows) {
  return (rows + decode_rows_per_cta(rows) - 1) / decode_rows_per_cta(rows);
}

// Number of KV splits. Reasoning (H100 SXM: 132 SMs, ~3 TB/s):
// - The op is bandwidth-bound; HBM stays saturated when ~latency x bandwidth ~ 1-1.5 us x 3 TB/s
//   ~ 3-5 MB are in flight. A CTA keeps up to 2 tiles (2 x 16 KB of K+V) of cp.async copies in
//   flight, so ~150+ CTAs running at once suffice; we aim at 2 CTAs per SM (2 x 132 = 264),
//   which also hides each CTA's prologue/epilogue behind another CTA's loads.
// - All those CTAs are resident at once (48 KB of shared memory and 128 threads each; 3 per SM
//   with 4 rows, register-limited, 2 with 8 rows), so there is no tail wave: they share
//   bandwidth and finish together.
// - B * Hkv * row_tiles CTAs already >= 264 (e.g. batch 64 x 8 kv heads): no split, no combine.
//   (512 CTAs then take 1.3 waves of 396; to check with the bench whether splitting to whole
//   waves pays.)
// - A split gets at least 128 KB of K+V (256 keys at head_dim 128): below that its fixed costs
//   (loading q, merging 4 warps through shared memory, writing rows x D floats of partial
//   result, and the combine kernel reading it back) stop being small next to its K/V traffic.
inline constexpr int decode_num_splits(int batch, int heads_kv, int row_tiles, int max_seqlen,
                                       int head_dim, int num_sms) {
  const long long ctas = static_cast<long long>(batch) * heads_kv * row_tiles;
  const long long target = 2LL * (num_sms > 0 ? num_sms : 132);
  if (ctas <= 0 || ctas >= target || max_seqlen <= 0) return 1;
  const long long by_occupancy = (target + ctas - 1) / ctas;
  const long long min_keys = 32768 / (head_dim > 0 ? head_dim : 128);  // 128 KB of bf16 K+V
  const long long by_length = (max_seqlen + min_keys - 1) / min_keys;
  long long splits = by_occupancy < by_length ? by_occupancy : by_length;
  if (splits > kDecodeMaxSplits) splits = kDecodeMaxSplits;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

}  // namespace squash::attention
