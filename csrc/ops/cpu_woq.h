// CPU prepacked weight-only GEMM (layout: csrc/kernels/cpu/woq.h, docs/FORMATS.md "CPU prepacked
// layout"): argument validation of the ops in cpu_woq.cpp (defined in cpu_woq_checks.cpp). Each
// check throws ValueError naming the op, the argument and the expected shape/dtype.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace squash {

// qweight uint8 [N, K/2] (N > 0, K > 0 even), scales [N, K/g] float32/float16/bfloat16, zeros uint8
// [N, K/g] or None. Returns g.
int64_t check_cpu_prepack_int4_args(const at::Tensor& qweight, const at::Tensor& scales,
                                    const std::optional<at::Tensor>& zeros, int64_t group_size);
// qweight int8 [N, K] (N, K > 0), scales [N] float32/float16/bfloat16.
void check_cpu_prepack_int8_args(const at::Tensor& qweight, const at::Tensor& scales);

// packed uint8 [ceil(n/16), k, 8], scales float32 [ceil(n/16), k/g, 16], zeros uint8 like scales.
int64_t check_cpu_unprepack_int4_args(const at::Tensor& packed, const at::Tensor& scales,
                                      const std::optional<at::Tensor>& zeros, int64_t n, int64_t k,
                                      int64_t group_size);
// packed int8 [ceil(n/16), k, 16], scales float32 [ceil(n/16), 16].
void check_cpu_unprepack_int8_args(const at::Tensor& packed, const at::Tensor& scales, int64_t n);

// x [..., K] float16/bfloat16, K > 0, contiguous last dim; the prepacked tensors as above for
// (n, K), contiguous, on x's device (the CPU); bias [n] x.dtype contiguous. Returns g.
int64_t check_w4a16_cpu_prepacked_args(const at::Tensor& x, const at::Tensor& packed,
                                       const at::Tensor& scales, const std::optional<at::Tensor>& zeros,
                                       int64_t n, int64_t group_size, const std::optional<at::Tensor>& bias);
void check_w8a16_cpu_prepacked_args(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                    int64_t n, const std::optional<at::Tensor>& bias);

}  // namespace squash
