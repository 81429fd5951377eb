// Validation of the prepack ops and the prepacked GEMMs (declared in prepack.h). What a kernel may
// rely on after check_w*a16_prepacked_args: x [..., K] f16/bf16, stride(-1) == 1, K == k (the
// weight's true in_features) and K % 8 == 0 (whole 16-byte chunks); packed uint8 [N/8, ceil(K / tile_k), 512] contiguous with N > 0; scales float32
// contiguous ([N/8, K/g, 8] int4, [N] int8); zeros uint8 like the int4 scales; bias [N] x.dtype;
// all on x's device; int4 g in {32, 64, 128, K}.
#include "ops/prepack.h"

#include "kernels/gemm/prepacked_layout.h"
#include "ops/checks.h"
#include "ops/formats.h"

namespace squash {
namespace {

namespace pk = gemm::pack;

void check_multiple_of_8(const char* op, const char* what, int64_t v) {
  SQUASH_CHECK_VALUE(v > 0 && v % 8 == 0, "squash::", op, ": ", what,
                    " must be a positive multiple of 8 for the prepacked layout, got ", v);
}

// packed uint8 [N/8, ceil(K / tile_k), 512] (any N/8 > 0). Returns N.
int64_t check_packed(const char* op, const at::Tensor& packed, int bits, int64_t K) {
  check_dtype(op, "packed", packed, {at::kByte});
  const int64_t kt = pk::tiles_k(bits, K);
  SQUASH_CHECK_VALUE(packed.dim() == 3 && packed.size(0) > 0 && packed.size(1) == kt &&
                        packed.size(2) == pk::kTileBytes,
                    "squash::", op, ": packed must be [N/8, ceil(K/", pk::tile_k(bits), "), ",
                    pk::kTileBytes, "] = [N/8, ", kt, ", ", pk::kTileBytes, "] uint8 for K=", K,
                    " (from prepack_int", bits, "_weight), got shape ", packed.sizes());
  return packed.size(0) * pk::kTileN;
}

void check_packed_group_tensor(const char* op, const char* arg, const at::Tensor& t,
                               at::ScalarType dtype, int64_t N, int64_t groups) {
  check_dtype(op, arg, t, {dtype});
  check_shape_is(op, arg, t, {N / pk::kTileN, groups, pk::kTileN}, "[N/8, K/group_size, 8]",
                 dtype_name(dtype));
}

void check_x(const char* op, const at::Tensor& x, int64_t k) {
  check_dtype(op, "x", x, {at::kHalf, at::kBFloat16});
  SQUASH_CHECK_VALUE(x.dim() >= 1, "squash::", op, ": x must be [..., K], got a 0-D tensor");
  check_last_dim_contiguous(op, "x", x);
  check_multiple_of_8(op, "k", k);
  SQUASH_CHECK_VALUE(x.size(-1) == k, "squash::", op, ": x must be [..., K] with K = k = ", k,
                    " (the prepacked weight's in_features), got shape ", x.sizes());
}

void check_on_device_contiguous(const char* op, const char* arg, const at::Tensor& t,
                                const at::Tensor& x) {
  check_same_device(op, arg, t, x, "x");
  check_contiguous(op, arg, t);
}

void check_bias_n(const char* op, const std::optional<at::Tensor>& bias, int64_t N, const at::Tensor& x) {
  if (!bias) return;
  check_dtype(op, "bias", *bias, {x.scalar_type()});
  check_shape_is(op, "bias", *bias, {N}, "[N]", dtype_name(bias->scalar_type()));
  check_on_device_contiguous(op, "bias", *bias, x);
}

}  // namespace

int64_t check_prepack_int4_args(const at::Tensor& qweight, const at::Tensor& scales,
                                const std::optional<at::Tensor>& zeros, int64_t group_size) {
  const char* op = "prepack_int4_weight";
  check_dtype(op, "qweight", qweight, {at::kByte});
  SQUASH_CHECK_VALUE(qweight.dim() == 2, "squash::", op,
                    ": qweight must be 2-D [N, K/2] uint8 (quantize_int4_weight), got shape ",
                    qweight.sizes());
  const int64_t N = qweight.size(0), K = 2 * qweight.size(1);
  check_multiple_of_8(op, "N = qweight.shape[0]", N);
  check_multiple_of_8(op, "K = 2 * qweight.shape[1]", K);
  const int64_t g = check_int4_group_size(op, group_size, K);
  check_int4_weight(op, qweight, scales, zeros, N, K, g, {at::kFloat, at::kHalf, at::kBFloat16});
  if (zeros) check_int4_zeros_values(op, *zeros);
  return g;
}

void check_prepack_int8_args(const at::Tensor& qweight, const at::Tensor& scales) {
  const char* op = "prepack_int8_weight";
  check_dtype(op, "qweight", qweight, {at::kChar});
  SQUASH_CHECK_VALUE(qweight.dim() == 2, "squash::", op,
                    ": qweight must be 2-D [N, K] int8 (quantize_int8_weight), got shape ",
                    qweight.sizes());
  check_multiple_of_8(op, "N = qweight.shape[0]", qweight.size(0));
  check_multiple_of_8(op, "K = qweight.shape[1]", qweight.size(1));
  check_dtype(op, "scales", scales, {at::kFloat, at::kHalf, at::kBFloat16});
  check_shape_is(op, "scales", scales, {qweight.size(0)}, "[N]", dtype_name(scales.scalar_type()));
  check_same_device(op, "scales", scales, qweight, "qweight");
}

int64_t check_unprepack_int4_args(const at::Tensor& packed, const at::Tensor& scales,
                                  const std::optional<at::Tensor>& zeros, int64_t K,
                                  int64_t group_size) {
  const char* op = "unprepack_int4_weight";
  check_multiple_of_8(op, "k", K);
  const int64_t g = check_int4_group_size(op, group_size, K);
  const int64_t N = check_packed(op, packed, 4, K);
  check_packed_group_tensor(op, "scales", scales, at::kFloat, N, K / g);
  check_same_device(op, "scales", scales, packed, "packed");
  if (zeros) {
    check_packed_group_tensor(op, "zeros", *zeros, at::kByte, N, K / g);
    check_same_device(op, "zeros", *zeros, packed, "packed");
  }
  return g;
}

void check_unprepack_int8_args(const at::Tensor& packed, const at::Tensor& scales, int64_t K) {
  const char* op = "unprepack_int8_weight";
  check_multiple_of_8(op, "k", K);
  const int64_t N = check_packed(op, packed, 8, K);
  check_dtype(op, "scales", scales, {at::kFloat});
  check_shape_is(op, "scales", scales, {N}, "[N]", "float32");
  check_same_device(op, "scales", scales, packed, "packed");
}

int64_t check_w4a16_prepacked_args(const at::Tensor& x, const at::Tensor& packed,
                                   const at::Tensor& scales, const std::optional<at::Tensor>& zeros,
                                   int64_t K, int64_t group_size,
                                   const std::optional<at::Tensor>& bias) {
  const char* op = "w4a16_gemm_prepacked";
  check_x(op, x, K);
  const int64_t g = check_int4_group_size(op, group_size, K);
  const int64_t N = check_packed(op, packed, 4, K);
  check_on_device_contiguous(op, "packed", packed, x);
  check_packed_group_tensor(op, "scales", scales, at::kFloat, N, K / g);
  check_on_device_contiguous(op, "scales", scales, x);
  if (zeros) {
    check_packed_group_tensor(op, "zeros", *zeros, at::kByte, N, K / g);
    check_on_device_contiguous(op, "zeros", *zeros, x);
  }
  check_bias_n(op, bias, N, x);
  return g;
}

void check_w8a16_prepacked_args(const at::Tensor& x, const at::Tensor& packed,
                                const at::Tensor& scales, int64_t K,
                                const std::optional<at::Tensor>& bias) {
  const char* op = "w8a16_gemm_prepacked";
  check_x(op, x, K);
  const int64_t N = check_packed(op, packed, 8, K);
  check_on_device_contiguous(op, "packed", packed, x);
  check_dtype(op, "scales", scales, {at::kFloat});
  check_shape_is(op, "scales", scales, {N}, "[N]", "float32");
  check_on_device_contiguous(op, "scales", scales, x);
  check_bias_n(op, bias, N, x);
}

}  // namespace squash
