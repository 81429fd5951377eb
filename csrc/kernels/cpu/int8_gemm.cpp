#include "cpu/int8_gemm.h"

#include <algorithm>

namespace squash::cpu_kernels {
namespace {

int64_t blocks(int64_t n, int64_t b) { return (n + b - 1) / b; }

}  // namespace

bool int8_gemm_vnni(Isa isa) { return isa >= Isa::kAvx512 && has_vnni(); }

int64_t int8_gemm_jobs(const Int8GemmParams& p) {
  return blocks(p.M, kInt8BlockM) * blocks(p.N, kInt8BlockN);
}

void int8_gemm_run(const Int8GemmParams& p, int64_t job_begin, int64_t job_end, Isa isa) {
  const int64_t nb = blocks(p.N, kInt8BlockN);
  for (int64_t j = job_begin; j < job_end; ++j) {
    // Jobs walk N fastest: consecutive jobs of one thread share their block of a rows.
    const int64_t m0 = (j / nb) * kInt8BlockM, n0 = (j % nb) * kInt8BlockN;
    const int64_t m1 = std::min(p.M, m0 + kInt8BlockM), n1 = std::min(p.N, n0 + kInt8BlockN);
    if (int8_gemm_vnni(isa))
      int8_gemm_block_vnni(p, m0, m1, n0, n1);
    else if (isa >= Isa::kAvx2)
      int8_gemm_block_avx2(p, m0, m1, n0, n1);
    else
      int8_gemm_block_scalar(p, m0, m1, n0, n1);
  }
}

void int8_gemm_epilogue(const Int8GemmParams& p, const int32_t* acc, int64_t ldacc, int64_t m0, int64_t m1,
                        Isa isa) {
  if (isa >= Isa::kAvx2) return int8_gemm_epilogue_avx2(p, acc, ldacc, m0, m1, 0, p.N);
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = 0; n < p.N; ++n) int8_gemm_store(p, m, n, acc[(m - m0) * ldacc + n]);
}

}  // namespace squash::cpu_kernels
