// CUDA implementations of w8a16_gemm, w4a16_gemm and quantize_activation_int8 (schemas in
// csrc/ops/library.cpp). Validation is shared with the CPU ops (ops/gemm.h); this file shapes
// tensors into the torch-free params of csrc/kernels/gemm, picks the kernel with the pure
// heuristics of kernels/gemm/heuristics.h (choose_woq_plan) and launches on the current stream.
//
// Paths: small M -> the CUDA-core GEMV (M <= 4, or up to 16 where the tensor-core kernel does not
// apply) or the tensor-core kernel (M <= 64; int4 groups that are multiples of 128, int8 with
// K % 64 == 0); larger M (or shapes neither takes, e.g. K % 8 != 0) -> dequantize to a dense
// x.dtype [N, K] weight and at::linear (cuBLAS). The latter rounds each dequantized weight to
// x.dtype once (relative error up to 2^-9 for bf16, 2^-12 for fp16), which the others avoid.
//
// SQUASH_WOQ_CONFIG (environment, read per call so a benchmark can sweep it in one process):
// "dequant" forces dequantize + cuBLAS; a config name from heuristics.h ("gemv_m1" ..
// "gemv_m16", "mma_m8" .. "mma_m64"), optionally ":<splits>", forces that kernel (an error if it
// cannot run these arguments); the prepacked ops' "pk_*" configs do not apply here and are
// ignored. Unset or empty: the heuristic.
#include <ATen/ATen.h>
#include "ops/message.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/gemm/woq_gemm.h"
#include "ops/gemm.h"

namespace squash {
namespace {

using OptTensor = std::optional<at::Tensor>;
using gemm::GemvConfig;
using gemm::MmaConfig;
using gemm::WoqGemmParams;
using gemm::WoqPath;
using gemm::WoqPlan;

gemm::DType to_gemm_dtype(const char* op, at::ScalarType t) {
  switch (t) {
    case at::kHalf: return gemm::DType::kF16;
    case at::kBFloat16: return gemm::DType::kBF16;
    case at::kFloat: return gemm::DType::kF32;
    default: SQUASH_CHECK_VALUE(false, "squash::", op, ": unsupported dtype ", t);
  }
  return gemm::DType::kF32;  // not reached
}

// SM count and compute capability (major * 10 + minor) per device, queried once.
struct DeviceInfo {
  int sm_count = 0;
  int arch = 0;
};

DeviceInfo device_info(int device) {
  static std::array<DeviceInfo, 64> cache{};
  if (device < 0 || device >= static_cast<int>(cache.size())) return {132, 90};
  DeviceInfo& d = cache[device];
  if (d.sm_count == 0) {  // benign race: every thread writes the same values
    int sms = 0, major = 0, minor = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    d.arch = major * 10 + minor;
    d.sm_count = sms > 0 ? sms : 132;
  }
  return d;
}

bool aligned(const at::Tensor& t, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % bytes == 0;
}

// [..., K] as [rows, K] with stride(1) == 1 and non-overlapping rows; a view when possible.
at::Tensor as_rows(const at::Tensor& x, int64_t K) {
  at::Tensor r = x.reshape({-1, K});
  if ((K > 1 && r.stride(1) != 1) || (r.size(0) > 1 && r.stride(0) < K)) r = r.contiguous();
  return r;
}

// The forced plan from SQUASH_WOQ_CONFIG, if any.
std::optional<WoqPlan> forced_plan(const char* op) {
  const char* env = std::getenv("SQUASH_WOQ_CONFIG");
  if (env == nullptr || env[0] == '\0') return std::nullopt;
  const std::string s(env);
  if (s == "dequant") return WoqPlan{WoqPath::kDequantMatmul, GemvConfig::kM1, MmaConfig::kM8, 1};
  const size_t colon = s.find(':');
  const std::string name = s.substr(0, colon);
  if (name.rfind("pk_", 0) == 0) return std::nullopt;  // a prepacked op's config (prepacked_gemm_cuda.cpp)
  int splits = 1;
  if (colon != std::string::npos) splits = std::atoi(s.c_str() + colon + 1);
  SQUASH_CHECK(splits >= 1 && splits <= 64, "squash::", op,
              ": SQUASH_WOQ_CONFIG splits must be in 1..64, got '", s, "'");
  for (int c = 0; c < static_cast<int>(GemvConfig::kCount); ++c) {
    const auto cfg = static_cast<GemvConfig>(c);
    if (name == gemm::gemv_config_info(cfg).name)
      return WoqPlan{WoqPath::kGemv, cfg, MmaConfig::kM8, splits};
  }
  for (int c = 0; c < static_cast<int>(MmaConfig::kCount); ++c) {
    const auto cfg = static_cast<MmaConfig>(c);
    if (name == gemm::mma_config_info(cfg).name)
      return WoqPlan{WoqPath::kMma, GemvConfig::kM1, cfg, splits};
  }
  SQUASH_CHECK(false, "squash::", op, ": unknown SQUASH_WOQ_CONFIG '", s,
              "' (expected dequant, gemv_m1/2/4/8/16 or mma_m8/16/32/64, optionally :splits)");
  return std::nullopt;  // not reached
}

const char* plan_name(const WoqPlan& plan) {
  switch (plan.path) {
    case WoqPath::kGemv: return gemm::gemv_config_info(plan.gemv).name;
    case WoqPath::kMma: return gemm::mma_config_info(plan.mma).name;
    default: return "dequant";
  }
}

// Shared by both weight-only GEMMs once their arguments are validated. group: effective group
// (K for per-channel); zeros: int4 only.
at::Tensor woq_gemm_cuda(const char* op, int bits, const at::Tensor& x, const at::Tensor& qweight,
                         const at::Tensor& scales, const OptTensor& zeros, int64_t group,
                         const OptTensor& bias) {
  // What the kernels rely on for memory safety beyond the shared checks (cheap, so a
  // validation gap cannot become an illegal address).
  const int64_t K = x.size(-1);
  const int64_t N = qweight.size(0);
  SQUASH_CHECK(x.is_cuda() && qweight.device() == x.device() && scales.device() == x.device(),
              "squash::", op, ": x, qweight and scales must be on one CUDA device");
  SQUASH_CHECK(qweight.is_contiguous() && qweight.numel() == N * K * bits / 8, "squash::", op,
              ": qweight must be contiguous [N, K", (bits == 4 ? "/2" : ""), "]");
  SQUASH_CHECK(group > 0 && K % group == 0 && scales.is_contiguous() &&
                  scales.numel() == N * (K / group),
              "squash::", op, ": scales must be contiguous [N, K/group]");
  SQUASH_CHECK(!zeros || (zeros->device() == x.device() && zeros->is_contiguous() &&
                         zeros->scalar_type() == at::kByte && zeros->numel() == scales.numel()),
              "squash::", op, ": zeros must be contiguous uint8 like scales");
  SQUASH_CHECK(!bias || (bias->device() == x.device() && bias->is_contiguous() &&
                        bias->numel() == N && bias->scalar_type() == x.scalar_type()),
              "squash::", op, ": bias must be contiguous [N] of x's dtype");
  SQUASH_CHECK(scales.scalar_type() == at::kFloat || scales.scalar_type() == x.scalar_type(),
              "squash::", op, ": scales must be float32 or x's dtype");
  SQUASH_CHECK(N <= INT32_MAX && K <= INT32_MAX && N * K * bits / 8 < (int64_t{1} << 40), "squash::",
              op, ": weight too large");

  c10::cuda::CUDAGuard guard(x.device());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(N);
  at::Tensor x2 = as_rows(x, K);
  const int64_t M = x2.size(0);
  if (M == 0) return at::empty(out_shape, x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();

  WoqGemmParams p;
  p.qweight = qweight.data_ptr();
  p.scales = scales.data_ptr();
  p.zeros = zeros ? zeros->data_ptr<uint8_t>() : nullptr;
  p.bias = bias ? bias->data_ptr() : nullptr;
  p.M = static_cast<int>(std::min<int64_t>(M, INT32_MAX));
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.group = static_cast<int>(group);
  p.bits = bits;
  p.dtype = to_gemm_dtype(op, x.scalar_type());
  p.scales_f32 = scales.scalar_type() == at::kFloat;

  const DeviceInfo dev = device_info(x.get_device());
  const std::optional<WoqPlan> forced = forced_plan(op);
  const bool small = M <= gemm::kMmaMaxM;  // the GEMV (<= 16) and tensor-core (<= 64) paths
  at::Tensor qw = qweight;
  if (small && K % 8 == 0) {
    // Both want 16-byte aligned weights and x rows; torch allocations are, views at odd offsets
    // may not be: copy those (rare) rather than take the slow path.
    if (!aligned(x2, 16) || (M > 1 && x2.stride(0) % 8 != 0))
      x2 = x2.clone(at::MemoryFormat::Contiguous);
    if (!aligned(qw, 16)) qw = qw.clone();
    p.qweight = qw.data_ptr();
  }
  p.x = x2.data_ptr();
  p.ldx = M > 1 ? x2.stride(0) : K;
  at::Tensor out = small ? at::empty({M, N}, x.options()) : at::Tensor();
  p.out = small ? out.data_ptr() : nullptr;
  p.ldo = N;

  const bool gemv_ok = small && gemm::woq_gemv_supported(p);
  const bool mma_ok = small && gemm::woq_mma_supported(p);
  WoqPlan plan =
      gemm::choose_woq_plan(p.M, p.N, p.K, bits, dev.sm_count, dev.arch, gemv_ok, mma_ok);
  if (forced) {
    plan = *forced;
    const bool ok = plan.path == WoqPath::kDequantMatmul ||
                    (plan.path == WoqPath::kGemv && gemv_ok &&
                     M <= gemm::gemv_config_info(plan.gemv).max_m) ||
                    (plan.path == WoqPath::kMma && mma_ok &&
                     M <= gemm::mma_config_info(plan.mma).max_m);
    SQUASH_CHECK(ok, "squash::", op, ": SQUASH_WOQ_CONFIG=", plan_name(plan), " cannot run M=", M,
                " N=", N, " K=", K, " group=", group);
  }

  if (plan.path != WoqPath::kDequantMatmul) {
    at::Tensor workspace;
    if (plan.splits > 1) {
      workspace = at::empty({plan.splits, M, N}, x.options().dtype(at::kFloat));
      p.workspace = workspace.data_ptr<float>();
    }
    const cudaError_t err = plan.path == WoqPath::kGemv
                                ? gemm::woq_gemv(p, plan.gemv, plan.splits, stream)
                                : gemm::woq_mma(p, plan.mma, plan.splits, stream);
    SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the ", plan_name(plan),
                " kernel (splits ", plan.splits, ", M=", M, " N=", N, " K=", K, " group=", group,
                " ", x.scalar_type(), "): ", cudaGetErrorString(err));
    return out.view(out_shape);
  }

  // Dequantize + cuBLAS. The dequantized weight is a temporary of N*K x.dtype elements.
  at::Tensor w = at::empty({N, K}, x.options());
  const cudaError_t err = gemm::woq_dequantize(p, w.data_ptr(), stream);
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the dequantize kernel (N=", N,
              " K=", K, " group=", group, " ", x.scalar_type(), "): ", cudaGetErrorString(err));
  return at::linear(x2, w, bias).view(out_shape);
}

at::Tensor w8a16_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const OptTensor& bias) {
  check_w8a16_gemm_args(x, qweight, scales, bias);
  return woq_gemm_cuda("w8a16_gemm", 8, x, qweight, scales, std::nullopt, x.size(-1), bias);
}

at::Tensor w4a16_gemm_cuda(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                           const OptTensor& zeros, int64_t group_size, const OptTensor& bias) {
  check_w4a16_gemm_args(x, qweight, scales, zeros, group_size, bias);
  const int64_t group = resolve_group_size(group_size, x.size(-1));
  return woq_gemm_cuda("w4a16_gemm", 4, x, qweight, scales, zeros, group, bias);
}

std::tuple<at::Tensor, at::Tensor> quantize_activation_int8_cuda(const at::Tensor& x,
                                                                 const OptTensor& scale) {
  const char* op = "quantize_activation_int8";
  check_quantize_activation_args(x, scale);
  SQUASH_CHECK(x.is_cuda() && x.dim() >= 1, "squash::", op, ": x must be a CUDA tensor [..., K]");
  SQUASH_CHECK(!scale || (scale->device() == x.device() && scale->numel() == 1 &&
                         scale->scalar_type() == at::kFloat),
              "squash::", op, ": scale must be float32 with one element on ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t K = x.size(-1);
  const auto lead = x.sizes().slice(0, x.dim() - 1);
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kChar));
  at::Tensor scales = at::empty(lead, x.options().dtype(at::kFloat));
  if (q.numel() == 0) return {q, scales};
  const at::Tensor x2 = as_rows(x, K);
  const int64_t rows = x2.size(0);
  const cudaError_t err = gemm::quantize_activation_int8(
      x2.data_ptr(), to_gemm_dtype(op, x.scalar_type()), rows, K, rows > 1 ? x2.stride(0) : K,
      scale ? scale->data_ptr<float>() : nullptr, q.data_ptr<int8_t>(), scales.data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream().stream());
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the quantize kernel (x ",
              x.sizes(), " ", x.scalar_type(), "): ", cudaGetErrorString(err));
  return {q, scales};
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("w8a16_gemm", &squash::w8a16_gemm_cuda);
  m.impl("w4a16_gemm", &squash::w4a16_gemm_cuda);
  m.impl("quantize_activation_int8", &squash::quantize_activation_int8_cuda);
}
