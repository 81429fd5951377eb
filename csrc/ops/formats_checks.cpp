// Validation of the weight-format ops and the int4 weight checks shared with w4a16_gemm.
// The format ops run at load time on any strides (their CPU implementations copy to contiguous),
// so only dtypes, shapes, sizes and devices are checked here.
#include "ops/formats.h"

#include "ops/checks.h"

namespace squash {

std::string dtype_name(at::ScalarType t) { return std::string(c10::getDtypeNames(t).first); }

void check_dtype_of(const char* op, const char* arg, const at::Tensor& t,
                    std::initializer_list<at::ScalarType> allowed) {
  std::string s;
  for (auto d : allowed) {
    if (t.scalar_type() == d) return;
    s += (s.empty() ? "" : " or ") + dtype_name(d);
  }
  SQUASH_CHECK_VALUE(false, "squash::", op, ": ", arg, " must be ", s, ", got ",
                    dtype_name(t.scalar_type()));
}

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
  check_dtype_of(op, "qweight", qweight, {at::kByte});
  check_shape_is(op, "qweight", qweight, {N, K / 2}, "[N, K/2]", "uint8");
  check_dtype_of(op, "scales", scales, scale_dtypes);
  check_shape_is(op, "scales", scales, {N, K / g}, "[N, K/group_size]",
                 dtype_name(scales.scalar_type()));
  check_same_device(op, "scales", scales, qweight, "qweight");
  if (zeros) {
    check_dtype_of(op, "zeros", *zeros, {at::kByte});
    check_shape_is(op, "zeros", *zeros, {N, K / g}, "[N, K/group_size]", "uint8");
    check_same_device(op, "zeros", *zeros, qweight, "qweight");
  }
}

namespace {
void check_weight_2d(const char* op, const char* arg, const at::Tensor& t) {
  SQUASH_CHECK_VALUE(t.dim() == 2, "squash::", op, ": ", arg,
                    " must be 2-D [N, K] (nn.Linear.weight [out, in]), got shape ", t.sizes());
  SQUASH_CHECK_VALUE(t.size(0) > 0 && t.size(1) > 0, "squash::", op, ": ", arg,
                    " must not be empty, got shape ", t.sizes());
}
}  // namespace

void check_quantize_int8_weight_args(const at::Tensor& weight) {
  const char* op = "quantize_int8_weight";
  check_dtype_of(op, "weight", weight, {at::kFloat, at::kHalf, at::kBFloat16});
  check_weight_2d(op, "weight", weight);
}

void check_dequantize_int8_weight_args(const at::Tensor& qweight, const at::Tensor& scales) {
  const char* op = "dequantize_int8_weight";
  check_dtype_of(op, "qweight", qweight, {at::kChar});
  check_weight_2d(op, "qweight", qweight);
  check_dtype_of(op, "scales", scales, {at::kFloat, at::kHalf, at::kBFloat16});
  check_shape_is(op, "scales", scales, {qweight.size(0)}, "[N]", dtype_name(scales.scalar_type()));
  check_same_device(op, "scales", scales, qweight, "qweight");
}

int64_t check_quantize_int4_weight_args(const at::Tensor& weight, int64_t group_size) {
  const char* op = "quantize_int4_weight";
  check_dtype_of(op, "weight", weight, {at::kFloat, at::kHalf, at::kBFloat16});
  check_weight_2d(op, "weight", weight);
  return check_int4_group_size(op, group_size, weight.size(1));
}

int64_t check_dequantize_int4_weight_args(const at::Tensor& qweight, const at::Tensor& scales,
                                          const std::optional<at::Tensor>& zeros,
                                          int64_t group_size) {
  const char* op = "dequantize_int4_weight";
  check_dtype_of(op, "qweight", qweight, {at::kByte});
  SQUASH_CHECK_VALUE(qweight.dim() == 2 && qweight.size(0) > 0 && qweight.size(1) > 0,
                    "squash::", op, ": qweight must be a non-empty 2-D [N, K/2] uint8, got shape ",
                    qweight.sizes());
  const int64_t N = qweight.size(0), K = 2 * qweight.size(1);
  const int64_t g = check_int4_group_size(op, group_size, K);
  check_int4_weight(op, qweight, scales, zeros, N, K, g, {at::kFloat, at::kHalf, at::kBFloat16});
  return g;
}

void check_pack_int4_args(const at::Tensor& values) {
  const char* op = "pack_int4";
  check_dtype_of(op, "values", values, {at::kByte});
  SQUASH_CHECK_VALUE(values.dim() >= 1 && values.size(-1) > 0 && values.size(-1) % 2 == 0,
                    "squash::", op, ": values must be [..., K] with K even and > 0, got shape ",
                    values.sizes());
}

void check_unpack_int4_args(const at::Tensor& packed) {
  const char* op = "unpack_int4";
  check_dtype_of(op, "packed", packed, {at::kByte});
  SQUASH_CHECK_VALUE(packed.dim() >= 1 && packed.size(-1) > 0, "squash::", op,
                    ": packed must be [..., K/2] with K/2 > 0, got shape ", packed.sizes());
}

}  // namespace squash
