// W8A8 on the CPU: out[m, n] = float(sum_k a[m, k] * b[n, k]) * a_scale[m] * b_scale[n] + bias[n],
// int8 x int8 with exact int32 accumulation, then the float32 epilogue in exactly this order
// (two roundings of the products, one of the bias add: the CPU op's and the CUDA epilogue's
// order), rounded once to the output dtype.
//
// Both operands are read in their canonical row-major layout (a: [M, K] activations, b: [N, K]
// like nn.Linear.weight), so nothing is packed per call or at load time: the inner product runs
// along K on both (measured on the 2-core Zen 3: packing b per call cost more than it saved for
// MiniLM's K = 384 / 1536, and a row-major b is what checkpoints hold).
#pragma once
#include <cstdint>
#include <type_traits>

#include "cpu/convert.h"
#include "cpu/isa.h"

namespace squash::cpu_kernels {

// Block sizes: a block reads kInt8BlockM rows of a and kInt8BlockN rows of b; at K = 1536 that
// is 144 KiB + 72 KiB, inside the 1 MiB L2 of a Zen 3 core (and of most x86 server cores), so
// each b row comes from memory once per block of a rows. Multiples of the AVX2 4 x 2 tile.
constexpr int64_t kInt8BlockM = 96;
constexpr int64_t kInt8BlockN = 48;

struct Int8GemmParams {
  const int8_t* a = nullptr;   // [M, K], row stride lda
  const int8_t* b = nullptr;   // [N, K], row stride ldb
  const float* a_scale = nullptr;  // [M] or one element (a_scale_per_row false)
  const float* b_scale = nullptr;  // [N] or one element
  const float* bias = nullptr;     // [N] float32 or nullptr
  void* out = nullptr;             // [M, N], row stride ldo, element type out_dtype
  int64_t M = 0, N = 0, K = 0, lda = 0, ldb = 0, ldo = 0;
  bool a_scale_per_row = true, b_scale_per_col = true;
  Dtype out_dtype = Dtype::kF32;
};

// The work is cut into independent jobs (blocks of rows x columns sized for the L2 cache);
// callers run jobs [begin, end) on any threads (the torch binding uses at::parallel_for).
int64_t int8_gemm_jobs(const Int8GemmParams& p);
void int8_gemm_run(const Int8GemmParams& p, int64_t job_begin, int64_t job_end, Isa isa);

// The epilogue alone, for rows [m0, m1) of an int32 product computed elsewhere (acc[m - m0, n]
// with row stride ldacc): the same float32 operations in the same order as int8_gemm_run, so
// every path gives the same bits.
void int8_gemm_epilogue(const Int8GemmParams& p, const int32_t* acc, int64_t ldacc, int64_t m0, int64_t m1, Isa isa);
// Columns [n0, n1) of those rows, acc[(m - m0) * ldacc + n - n0].
void int8_gemm_epilogue_avx2(const Int8GemmParams& p, const int32_t* acc, int64_t ldacc, int64_t m0, int64_t m1,
                             int64_t n0, int64_t n1);

// One block [m0, m1) x [n0, n1) per ISA path (int8_gemm_scalar.cpp / int8_gemm_avx2.cpp /
// int8_gemm_avx512.cpp: the avx512 path on a CPU with AVX-512 VNNI).
void int8_gemm_block_scalar(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
void int8_gemm_block_avx2(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
void int8_gemm_block_vnni(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
// Whether int8_gemm_run takes int8_gemm_block_vnni on the `isa` path.
bool int8_gemm_vnni(Isa isa);
// The most rows for which int8_gemm_block_vnni beats at::_int_mm (oneDNN), one Zen 5 core,
// MiniLM / BERT-base shapes: 1.2-2.9x faster at M = 2..8, 0.93-1.20x at 16, 0.58-0.99x from 32
// (bench/results/2026-12-02_cpu-w8a8-vnni_probe.log). The binding sends larger M to _int_mm.
constexpr int64_t kInt8VnniMaxRows = 16;

// The block loop of the AVX2 and VNNI paths: int32 sums of rows [m0, m1) x columns [n0, n1) into
// a block buffer, in row tiles of 4 (then 3, 2 or 1: tiles(std::integral_constant<int, MR>, m,
// acc rows from m)), then their vectorized epilogue.
template <typename RowTiles>
void int8_gemm_block_tiled(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                           RowTiles&& tiles) {
  alignas(64) int32_t acc[kInt8BlockM * kInt8BlockN];
  const int64_t ldacc = n1 - n0;
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) tiles(std::integral_constant<int, 4>{}, m, acc + (m - m0) * ldacc);
  int32_t* rest = acc + (m - m0) * ldacc;
  switch (m1 - m) {
    case 3: tiles(std::integral_constant<int, 3>{}, m, rest); break;
    case 2: tiles(std::integral_constant<int, 2>{}, m, rest); break;
    case 1: tiles(std::integral_constant<int, 1>{}, m, rest); break;
    default: break;
  }
  int8_gemm_epilogue_avx2(p, acc, ldacc, m0, m1, n0, n1);
}

// The epilogue of one output element (shared by every path, so they agree bit for bit).
inline void int8_gemm_store(const Int8GemmParams& p, int64_t m, int64_t n, int32_t acc) {
  float v = static_cast<float>(acc) * p.a_scale[p.a_scale_per_row ? m : 0];
  v = v * p.b_scale[p.b_scale_per_col ? n : 0];
  if (p.bias) v = v + p.bias[n];
  store_as(p.out_dtype, p.out, m * p.ldo + n, v);
}

}  // namespace squash::cpu_kernels
