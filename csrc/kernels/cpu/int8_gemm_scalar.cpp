// The portable path of int8_gemm.h (and the reference the vector paths are tested against):
// exact int32 dot products.
#include "cpu/int8_gemm.h"

namespace squash::cpu_kernels {

void int8_gemm_block_scalar(const Int8GemmParams& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* a = p.a + m * p.lda;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* b = p.b + n * p.ldb;
      int32_t acc = 0;
      for (int64_t k = 0; k < p.K; ++k) acc += static_cast<int32_t>(a[k]) * static_cast<int32_t>(b[k]);
      int8_gemm_store(p, m, n, acc);
    }
  }
}

}  // namespace squash::cpu_kernels
