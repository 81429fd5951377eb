// Validation of the CPU prepacked weight-only ops (declared in cpu_woq.h). What the kernels may rely
// on after check_w*a16_cpu_prepacked_args: x [..., K] f16/bf16 with stride(-1) == 1 and K > 0 (0 rows
// allowed); packed / scales / zeros / bias contiguous with exactly the shapes of the layout for
// (n, K) and on x's device; int4 g in {32, 64, 128, K} dividing K.
#include "ops/cpu_woq.h"

#include "kernels/cpu/woq.h"
#include "ops/checks.h"
#include "ops/formats.h"

namespace squash {
namespace {

using cpu_kernels::kWoqPanel;
using cpu_kernels::woq_panels;

void check_positive(const char* op, const char* what, int64_t v) {
  SQUASH_CHECK_VALUE(v > 0, "squash::", op, ": ", what, " must be > 0, got ", v);
}

// `t` must be exactly `expected` (`symbolic` names the dims) of `dtype`, contiguous, on ref's device.
void check_layout_tensor(const char* op, const char* arg, const at::Tensor& t, at::ScalarType dtype,
                         at::IntArrayRef expected, const char* symbolic, const at::Tensor& ref,
                         const char* ref_name) {
  check_dtype(op, arg, t, {dtype});
  check_shape_is(op, arg, t, expected, symbolic, dtype_name(dtype));
  check_same_device(op, arg, t, ref, ref_name);
  check_contiguous(op, arg, t);
}

void check_int4_layout(const char* op, const at::Tensor& packed, const at::Tensor& scales,
                       const std::optional<at::Tensor>& zeros, int64_t n, int64_t k, int64_t g,
                       const at::Tensor& ref, const char* ref_name) {
  const int64_t P = woq_panels(n);
  check_layout_tensor(op, "packed", packed, at::kByte, {P, k, 8},
                      "[ceil(n/16), K, 8] (from cpu_prepack_int4_weight)", ref, ref_name);
  check_layout_tensor(op, "scales", scales, at::kFloat, {P, k / g, kWoqPanel},
                      "[ceil(n/16), K/group_size, 16]", ref, ref_name);
  if (zeros)
    check_layout_tensor(op, "zeros", *zeros, at::kByte, {P, k / g, kWoqPanel},
                        "[ceil(n/16), K/group_size, 16]", ref, ref_name);
}

void check_int8_layout(const char* op, const at::Tensor& packed, const at::Tensor& scales, int64_t n,
                       int64_t k, const at::Tensor& ref, const char* ref_name) {
  const int64_t P = woq_panels(n);
  check_layout_tensor(op, "packed", packed, at::kChar, {P, k, kWoqPanel},
                      "[ceil(n/16), K, 16] (from cpu_prepack_int8_weight)", ref, ref_name);
  check_layout_tensor(op, "scales", scales, at::kFloat, {P, kWoqPanel}, "[ceil(n/16), 16]", ref, ref_name);
}

// x [..., K] float16/bfloat16, K > 0, stride(-1) == 1. Returns K.
int64_t check_x(const char* op, const at::Tensor& x) {
  check_dtype(op, "x", x, {at::kHalf, at::kBFloat16});
  SQUASH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) > 0, "squash::", op,
                    ": x must be [..., K] with K > 0, got shape ", x.sizes());
  check_last_dim_contiguous(op, "x", x);
  return x.size(-1);
}

void check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t n, const at::Tensor& x) {
  if (bias) check_layout_tensor(op, "bias", *bias, x.scalar_type(), {n}, "[n]", x, "x");
}

}  // namespace

int64_t check_cpu_prepack_int4_args(const at::Tensor& qweight, const at::Tensor& scales,
                                    const std::optional<at::Tensor>& zeros, int64_t group_size) {
  const char* op = "cpu_prepack_int4_weight";
  check_dtype(op, "qweight", qweight, {at::kByte});
  SQUASH_CHECK_VALUE(qweight.dim() == 2 && qweight.size(0) > 0 && qweight.size(1) > 0, "squash::", op,
                    ": qweight must be a non-empty 2-D [N, K/2] uint8 (quantize_int4_weight), got shape ",
                    qweight.sizes());
  const int64_t N = qweight.size(0), K = 2 * qweight.size(1);
  const int64_t g = check_int4_group_size(op, group_size, K);
  check_int4_weight(op, qweight, scales, zeros, N, K, g, {at::kFloat, at::kHalf, at::kBFloat16});
  if (zeros) check_int4_zeros_values(op, *zeros);  // once, at load (as prepack_int4_weight)
  return g;
}

void check_cpu_prepack_int8_args(const at::Tensor& qweight, const at::Tensor& scales) {
  const char* op = "cpu_prepack_int8_weight";
  check_dtype(op, "qweight", qweight, {at::kChar});
  SQUASH_CHECK_VALUE(qweight.dim() == 2 && qweight.size(0) > 0 && qweight.size(1) > 0, "squash::", op,
                    ": qweight must be a non-empty 2-D [N, K] int8 (quantize_int8_weight), got shape ",
                    qweight.sizes());
  check_dtype(op, "scales", scales, {at::kFloat, at::kHalf, at::kBFloat16});
  check_shape_is(op, "scales", scales, {qweight.size(0)}, "[N]", dtype_name(scales.scalar_type()));
  check_same_device(op, "scales", scales, qweight, "qweight");
}

int64_t check_cpu_unprepack_int4_args(const at::Tensor& packed, const at::Tensor& scales,
                                      const std::optional<at::Tensor>& zeros, int64_t n, int64_t k,
                                      int64_t group_size) {
  const char* op = "cpu_unprepack_int4_weight";
  check_positive(op, "n", n);
  check_positive(op, "k", k);
  const int64_t g = check_int4_group_size(op, group_size, k);
  check_int4_layout(op, packed, scales, zeros, n, k, g, packed, "packed");
  return g;
}

void check_cpu_unprepack_int8_args(const at::Tensor& packed, const at::Tensor& scales, int64_t n) {
  const char* op = "cpu_unprepack_int8_weight";
  check_positive(op, "n", n);
  SQUASH_CHECK_VALUE(packed.dim() == 3, "squash::", op,
                    ": packed must be 3-D [ceil(n/16), K, 16] int8, got shape ", packed.sizes());
  check_int8_layout(op, packed, scales, n, packed.size(1), packed, "packed");
}

int64_t check_w4a16_cpu_prepacked_args(const at::Tensor& x, const at::Tensor& packed,
                                       const at::Tensor& scales, const std::optional<at::Tensor>& zeros,
                                       int64_t n, int64_t group_size, const std::optional<at::Tensor>& bias) {
  const char* op = "w4a16_gemm_cpu_prepacked";
  const int64_t K = check_x(op, x);
  check_positive(op, "n", n);
  const int64_t g = check_int4_group_size(op, group_size, K);
  check_int4_layout(op, packed, scales, zeros, n, K, g, x, "x");
  check_bias(op, bias, n, x);
  return g;
}

void check_w8a16_cpu_prepacked_args(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                    int64_t n, const std::optional<at::Tensor>& bias) {
  const char* op = "w8a16_gemm_cpu_prepacked";
  const int64_t K = check_x(op, x);
  check_positive(op, "n", n);
  check_int8_layout(op, packed, scales, n, K, x, "x");
  check_bias(op, bias, n, x);
}

}  // namespace squash
