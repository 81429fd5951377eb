// Validation of the quantized GEMM ops (declared in gemm.h), shared by the CPU and CUDA
// implementations. What a kernel may rely on after these pass:
//  - x / x_q: [..., K] with K > 0 and a contiguous last dimension (stride 1); leading dims may be
//    strided and may hold 0 rows (M = 0 gives an empty [..., N] output).
//  - qweight, scales, zeros, bias, x_scales, w_scales: contiguous, non-empty (N > 0), on x's device.
//  - int4: K even, group_size resolved to g in {32, 64, 128, K} with K % g == 0.
#include "ops/gemm.h"

#include "ops/checks.h"
#include "ops/formats.h"

namespace squash {

int64_t resolve_group_size(int64_t group_size, int64_t K) { return group_size == -1 ? K : group_size; }

namespace {

// x: [..., K] of `dtypes`, K > 0, stride(-1) == 1. Returns K.
int64_t check_activation(const char* op, const char* arg, const at::Tensor& x,
                         std::initializer_list<at::ScalarType> dtypes) {
  check_dtype(op, arg, x, dtypes);
  SQUASH_CHECK_VALUE(x.dim() >= 1, "squash::", op, ": ", arg, " must be [..., K], got a 0-D tensor");
  SQUASH_CHECK_VALUE(x.size(-1) > 0, "squash::", op, ": ", arg,
                    " must have K = shape[-1] > 0, got shape ", x.sizes());
  check_last_dim_contiguous(op, arg, x);
  return x.size(-1);
}

void check_weight_tensor(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& x,
                         const char* x_name) {
  check_same_device(op, arg, t, x, x_name);
  check_contiguous(op, arg, t);
}

void check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t N,
                std::initializer_list<at::ScalarType> dtypes, const at::Tensor& x,
                const char* x_name) {
  if (!bias) return;
  check_dtype(op, "bias", *bias, dtypes);
  check_shape_is(op, "bias", *bias, {N}, "[N]", dtype_name(bias->scalar_type()));
  check_weight_tensor(op, "bias", *bias, x, x_name);
}

// qweight int8 [N, K], contiguous, N > 0. Returns N.
int64_t check_int8_weight(const char* op, const at::Tensor& qweight, int64_t K, const at::Tensor& x,
                          const char* x_name) {
  check_dtype(op, "qweight", qweight, {at::kChar});
  SQUASH_CHECK_VALUE(qweight.dim() == 2 && qweight.size(0) > 0, "squash::", op,
                    ": qweight must be a non-empty 2-D [N, K] int8 with K=", K, ", got shape ",
                    qweight.sizes());
  check_shape_is(op, "qweight", qweight, {qweight.size(0), K}, "[N, K]", "int8");
  check_weight_tensor(op, "qweight", qweight, x, x_name);
  return qweight.size(0);
}

}  // namespace

void check_w8a16_gemm_args(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& bias) {
  const char* op = "w8a16_gemm";
  const int64_t K = check_activation(op, "x", x, {at::kHalf, at::kBFloat16});
  const int64_t N = check_int8_weight(op, qweight, K, x, "x");
  check_dtype(op, "scales", scales, {at::kFloat, x.scalar_type()});
  check_shape_is(op, "scales", scales, {N}, "[N]", dtype_name(scales.scalar_type()));
  check_weight_tensor(op, "scales", scales, x, "x");
  check_bias(op, bias, N, {x.scalar_type()}, x, "x");
}

void check_w4a16_gemm_args(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& zeros, int64_t group_size,
                           const std::optional<at::Tensor>& bias) {
  const char* op = "w4a16_gemm";
  const int64_t K = check_activation(op, "x", x, {at::kHalf, at::kBFloat16});
  const int64_t g = check_int4_group_size(op, group_size, K);
  SQUASH_CHECK_VALUE(qweight.dim() == 2 && qweight.size(0) > 0, "squash::", op,
                    ": qweight must be a non-empty 2-D [N, K/2] uint8 with K/2=", K / 2,
                    ", got shape ", qweight.sizes());
  const int64_t N = qweight.size(0);
  check_int4_weight(op, qweight, scales, zeros, N, K, g, {at::kFloat, x.scalar_type()});
  check_weight_tensor(op, "qweight", qweight, x, "x");
  check_weight_tensor(op, "scales", scales, x, "x");
  if (zeros) {
    check_weight_tensor(op, "zeros", *zeros, x, "x");
    // Reading the values would cost a device sync per call on a GPU, where the load-time ops
    // (prepack_int4_weight, dequantize_int4_weight, W4A16Linear.validate) check them instead.
    if (zeros->device().is_cpu()) check_int4_zeros_values(op, *zeros);
  }
  check_bias(op, bias, N, {x.scalar_type()}, x, "x");
}

void check_quantize_activation_args(const at::Tensor& x, const std::optional<at::Tensor>& scale) {
  const char* op = "quantize_activation_int8";
  check_activation(op, "x", x, {at::kFloat, at::kHalf, at::kBFloat16});
  if (scale) check_static_scale(op, *scale, x);
}

void check_quantize_activation_transformed_args(const at::Tensor& x, const std::optional<at::Tensor>& input_mul,
                                                int64_t rotation, const std::optional<at::Tensor>& scale) {
  const char* op = "quantize_activation_int8_transformed";
  const int64_t K = check_activation(op, "x", x, {at::kFloat, at::kHalf, at::kBFloat16});
  if (input_mul) {
    check_same_device(op, "input_mul", *input_mul, x, "x");
    check_dtype(op, "input_mul", *input_mul, {at::kFloat});
    SQUASH_CHECK_VALUE(input_mul->dim() == 1 && input_mul->size(0) == K, "squash::", op,
                      ": input_mul must be [K] = [", K, "] float32, got shape ", input_mul->sizes());
    check_contiguous(op, "input_mul", *input_mul);
  }
  SQUASH_CHECK_VALUE(rotation == 0 || (rotation >= 2 && (rotation & (rotation - 1)) == 0 && K % rotation == 0),
                    "squash::", op, ": rotation must be 0 (none) or a power of two >= 2 dividing K = ", K,
                    ", got ", rotation);
  if (scale) check_static_scale(op, *scale, x);
}

void check_w8a8_gemm_args(const at::Tensor& x_q, const at::Tensor& x_scales, const at::Tensor& qweight,
                          const at::Tensor& w_scales, const std::optional<at::Tensor>& bias,
                          at::ScalarType out_dtype) {
  const char* op = "w8a8_gemm";
  SQUASH_CHECK_VALUE(out_dtype == at::kHalf || out_dtype == at::kBFloat16 || out_dtype == at::kFloat,
                    "squash::", op, ": out_dtype must be float16 or bfloat16 or float32, got ",
                    dtype_name(out_dtype));
  const int64_t K = check_activation(op, "x_q", x_q, {at::kChar});
  const int64_t N = check_int8_weight(op, qweight, K, x_q, "x_q");

  check_dtype(op, "x_scales", x_scales, {at::kFloat});
  const auto rows = x_q.sizes().slice(0, x_q.dim() - 1);
  SQUASH_CHECK_VALUE(x_scales.numel() == 1 || x_scales.sizes() == rows, "squash::", op,
                    ": x_scales must be x_q.shape[:-1] = ", rows,
                    " float32 (per token) or have 1 element (per tensor), got shape ",
                    x_scales.sizes());
  check_weight_tensor(op, "x_scales", x_scales, x_q, "x_q");

  check_dtype(op, "w_scales", w_scales, {at::kFloat});
  SQUASH_CHECK_VALUE(w_scales.numel() == 1 || w_scales.sizes() == at::IntArrayRef{N}, "squash::", op,
                    ": w_scales must be [N] = [", N,
                    "] float32 (per channel) or have 1 element (per tensor), got shape ",
                    w_scales.sizes());
  check_weight_tensor(op, "w_scales", w_scales, x_q, "x_q");

  if (out_dtype == at::kFloat)
    check_bias(op, bias, N, {at::kFloat}, x_q, "x_q");
  else
    check_bias(op, bias, N, {out_dtype, at::kFloat}, x_q, "x_q");
}

}  // namespace squash
