// Validation of every norm op (CPU and CUDA call the same function before touching memory).
//
// What a caller may rely on after check_norm_args returns:
//   x          f16/bf16/f32, dim >= 1, hidden = x.size(-1) > 0, fully contiguous (rows of hidden
//              elements packed back to back; zero rows allowed: x of shape [0, H] is valid).
//   residual   same shape, dtype and device as x, contiguous.
//   weight     1-D [hidden], dtype x.dtype or float32, contiguous, on x's device.
//   bias       the same rules as weight (its dtype may differ from weight's).
//   eps        finite and >= 0.
//   scale      float32, exactly one element (any shape), on x's device; on CPU also finite and
//              > 0 (on a GPU the value is not read: that would cost a device sync).
// Strided rows (last dim contiguous, leading dims strided) are rejected rather than supported:
// every producer of norm inputs in a transformer (residual stream, GEMM output) is contiguous,
// and one layout keeps the CUDA kernels' vectorized loads simple. The message says to call
// .contiguous().
#include "ops/norm.h"

#include <cmath>
#include <cstring>

#include "ops/checks.h"

namespace squash {
namespace {

// Messages read "squash::<op>: ..."; accept the op name with or without the prefix.
const char* bare_name(const char* op) {
  constexpr const char* kPrefix = "squash::";
  return std::strncmp(op, kPrefix, std::strlen(kPrefix)) == 0 ? op + std::strlen(kPrefix) : op;
}

void check_affine(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& x) {
  const int64_t hidden = x.size(-1);
  check_same_device(op, arg, t, x, "x");
  SQUASH_CHECK_VALUE(t.dim() == 1 && t.size(0) == hidden, "squash::", op, ": ", arg,
                    " must be 1-D [hidden=", hidden, "] (x has shape ", x.sizes(), "), got shape ",
                    t.sizes());
  SQUASH_CHECK_VALUE(t.scalar_type() == x.scalar_type() || t.scalar_type() == at::kFloat,
                    "squash::", op, ": ", arg, " must be ", x.scalar_type(),
                    (x.scalar_type() == at::kFloat ? "" : " (like x) or float32"), ", got ",
                    t.scalar_type());
  check_contiguous(op, arg, t);
}

}  // namespace

void check_norm_args(const char* op_name, const at::Tensor& x,
                     const std::optional<at::Tensor>& residual,
                     const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                     double eps, const std::optional<at::Tensor>& static_scale) {
  const char* op = bare_name(op_name);
  SQUASH_CHECK_VALUE(x.dim() >= 1, "squash::", op,
                    ": x must have at least 1 dimension ([..., hidden]), got a 0-D tensor");
  check_dtype(op, "x", x, {at::kHalf, at::kBFloat16, at::kFloat});
  SQUASH_CHECK_VALUE(x.size(-1) > 0, "squash::", op,
                    ": x.shape[-1] (hidden) must be > 0, got shape ", x.sizes());
  check_contiguous(op, "x", x);

  if (residual.has_value()) {
    const at::Tensor& r = *residual;
    check_same_device(op, "residual", r, x, "x");
    SQUASH_CHECK_VALUE(r.sizes() == x.sizes(), "squash::", op,
                      ": residual must have the shape of x ", x.sizes(), ", got shape ",
                      r.sizes());
    SQUASH_CHECK_VALUE(r.scalar_type() == x.scalar_type(), "squash::", op, ": residual must be ",
                      x.scalar_type(), " like x, got ", r.scalar_type());
    check_contiguous(op, "residual", r);
  }
  if (weight.has_value()) check_affine(op, "weight", *weight, x);
  if (bias.has_value()) check_affine(op, "bias", *bias, x);

  SQUASH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0, "squash::", op,
                    ": eps must be finite and >= 0, got ", eps);

  if (static_scale.has_value()) check_static_scale(op, *static_scale, x);
}

}  // namespace squash
