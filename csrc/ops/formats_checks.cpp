// Validation of the weight-format ops and the int4 weight checks shared with w4a16_gemm.
// The format ops run at load time on any strides (their CPU implementations copy to contiguous),
// so only dtypes, shapes, sizes and devices are checked here.
#include "ops/formats.h"

#include "ops/checks.h"

namespace squash {

void check_shape_is(const char* op, const char* arg, const at::Tensor& t,
                    at::IntArrayRef expected, const char* symbolic, const std::string& dtype_desc) {
  SQUASH_CHECK_VALUE(t.sizes() == expected, "squash::", op, ": ", arg, " must be ", symbolic, " = ",
                    expected, " ", dtype_desc, ", got shape ", t.sizes());
}

int64_t check_int4_group_size(const char* op, int64_t group_size, int64_t K) {
  SQUASH_CHECK_VALUE(K % 2 == 0, "squash::", op,
                    ": K must be even for int4 (two values per byte), got K=", K);
  const bool known = group_size == 32 || group_size == 64 || group_size == 128 ||
                     group_size == -1 || group_size == K;
  SQUASH_CHECK_VALUE(known, "squash::", op,
                    ": group_size must be 32, 64, 128, -1 (per-channel) or K=", K, ", got ",
                    group_size);
  const int64_t g = group_size == -1 ? K : group_size;
  SQUASH_CHECK_VALUE(K % g == 0, "squash::", op, ": group_size ", g, " must divide K=", K,
                    " (K % group_size = ", K % g, "); use group_size=-1 for per-channel");
  return g;
}

void check_int4_weight(const char* op, const at::Tensor& qweight, const at::Tensor& scales,
                       const std::optional<at::Tensor>& zeros, int64_t N, int64_t K, int64_t g,
                       std::initializer_list<at::ScalarType> scale_dtypes) {
  check_dtype(op, "qweight", qweight, {at::kByte});
  check_shape_is(op, "qweight", qweight, {N, K / 2}, "[N, K/2]", "uint8");
  check_dtype(op, "scales", scales, scale_dtypes);
  check_shape_is(op, "scales", scales, {N, K / g}, "[N, K/group_size]",
                 dtype_name(scales.scalar_type()));
  check_same_device(op, "scales", scales, qweight, "qweight");
  if (zeros) {
    check_dtype(op, "zeros", *zeros, {at::kByte});
    check_shape_is(op, "zeros", *zeros, {N, K / g}, "[N, K/group_size]", "uint8");
    check_same_device(op, "zeros", *zeros, qweight, "qweight");
  }
}

void check_int4_zeros_values(const char* op, const at::Tensor& zeros) {
  if (zeros.numel() == 0) return;
  const int zmax = zeros.max().item<uint8_t>();
  SQUASH_CHECK_VALUE(zmax <= 15, "squash::", op,
                    ": zeros must hold 4-bit zero points 0..15, got a value of ", zmax);
}

namespace {
void check_weight_2d(const char* op, const char* arg, const at::Tensor& t) {
  SQUASH_CHECK_VALUE(t.dim() == 2, "squash::", op, ": ", arg,
                    " must be 2-D [N, K] (nn.Linear.weight [out, in]), got shape ", t.sizes());
  SQUASH_CHECK_VALUE(t.size(0) > 0 && t.size(1) > 0, "squash::", op, ": ", arg,
                    " must not be empty, got shape ", t.sizes());
}

// A weight to quantize must be finite: a NaN would be skipped by the absmax and quantize to an
// arbitrary code, an inf would make the scale inf and every other element of its row 0 (or NaN).
// Names the first bad element so the user can find it. One pass over the weight, at load time.
void check_finite_weight(const char* op, const at::Tensor& weight) {
  const at::Tensor bad = at::isfinite(weight).logical_not_();
  const int64_t count = bad.sum().item<int64_t>();
  if (count == 0) return;
  const at::Tensor first = bad.nonzero().select(0, 0).cpu();
  const int64_t row = first[0].item<int64_t>(), col = first[1].item<int64_t>();
  SQUASH_CHECK_VALUE(false, "squash::", op, ": weight must be finite, got ",
                    weight.select(0, row).select(0, col).item<double>(), " at [", row, ", ", col,
                    "] (", count, " non-finite element", count == 1 ? "" : "s", ")");
}
}  // namespace

void check_quantize_int8_weight_args(const at::Tensor& weight) {
  const char* op = "quantize_int8_weight";
  check_dtype(op, "weight", weight, {at::kFloat, at::kHalf, at::kBFloat16});
  check_weight_2d(op, "weight", weight);
  check_finite_weight(op, weight);
}

void check_dequantize_int8_weight_args(const at::Tensor& qweight, const at::Tensor& scales) {
  const char* op = "dequantize_int8_weight";
  check_dtype(op, "qweight", qweight, {at::kChar});
  check_weight_2d(op, "qweight", qweight);
  check_dtype(op, "scales", scales, {at::kFloat, at::kHalf, at::kBFloat16});
  check_shape_is(op, "scales", scales, {qweight.size(0)}, "[N]", dtype_name(scales.scalar_type()));
  check_same_device(op, "scales", scales, qweight, "qweight");
}

int64_t check_quantize_int4_weight_args(const at::Tensor& weight, int64_t group_size) {
  const char* op = "quantize_int4_weight";
  check_dtype(op, "weight", weight, {at::kFloat, at::kHalf, at::kBFloat16});
  check_weight_2d(op, "weight", weight);
  const int64_t g = check_int4_group_size(op, group_size, weight.size(1));
  check_finite_weight(op, weight);
  return g;
}

int64_t check_dequantize_int4_weight_args(const at::Tensor& qweight, const at::Tensor& scales,
                                          const std::optional<at::Tensor>& zeros,
                                          int64_t group_size) {
  const char* op = "dequantize_int4_weight";
  check_dtype(op, "qweight", qweight, {at::kByte});
  SQUASH_CHECK_VALUE(qweight.dim() == 2 && qweight.size(0) > 0 && qweight.size(1) > 0,
                    "squash::", op, ": qweight must be a non-empty 2-D [N, K/2] uint8, got shape ",
                    qweight.sizes());
  const int64_t N = qweight.size(0), K = 2 * qweight.size(1);
  const int64_t g = check_int4_group_size(op, group_size, K);
  check_int4_weight(op, qweight, scales, zeros, N, K, g, {at::kFloat, at::kHalf, at::kBFloat16});
  if (zeros) check_int4_zeros_values(op, *zeros);
  return g;
}

void check_pack_int4_args(const at::Tensor& values) {
  const char* op = "pack_int4";
  check_dtype(op, "values", values, {at::kByte});
  SQUASH_CHECK_VALUE(values.dim() >= 1 && values.size(-1) > 0 && values.size(-1) % 2 == 0,
                    "squash::", op, ": values must be [..., K] with K even and > 0, got shape ",
                    values.sizes());
}

void check_unpack_int4_args(const at::Tensor& packed) {
  const char* op = "unpack_int4";
  check_dtype(op, "packed", packed, {at::kByte});
  SQUASH_CHECK_VALUE(packed.dim() >= 1 && packed.size(-1) > 0, "squash::", op,
                    ": packed must be [..., K/2] with K/2 > 0, got shape ", packed.sizes());
}

}  // namespace squash
