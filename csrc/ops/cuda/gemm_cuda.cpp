// CUDA implementations of w8a16_gemm, w4a16_gemm, quantize_activation_int8 and w8a8_gemm (schemas
// in csrc/ops/library.cpp). Validation is shared with the CPU ops (ops/gemm.h); this file shapes
// tensors into the torch-free params of csrc/kernels/gemm, picks the kernel with the pure
// heuristics of kernels/gemm/heuristics.h (choose_woq_plan) and launches on the current stream.
//
// Paths: small M -> the CUDA-core GEMV (M <= 4, or up to 16 where the tensor-core kernel does not
// apply) or the tensor-core kernel (M <= 64; int4 groups that are multiples of 128, int8 with
// K % 64 == 0); larger M (or shapes neither takes) -> a CUTLASS mixed-input GEMM on the quantized
// weights (kernels/gemm/woq_cutlass.h: sm_90 int4/int8, sm_80 int8) where its shape rule allows,
// else dequantize to a dense x.dtype [N, K] weight and at::linear (cuBLAS, e.g. K % 8 != 0 or
// int4 group 32). Both round each dequantized weight to x.dtype once (relative error up to 2^-9
// for bf16, 2^-12 for fp16), which the small-M kernels avoid.
//
// SQUASH_WOQ_CONFIG (environment, read per call so a benchmark can sweep it in one process):
// "dequant" forces dequantize + cuBLAS; a config name from heuristics.h ("gemv_m1" ..
// "gemv_m16", "mma_m8" .. "mma_m64" optionally ":<splits>", "cutlass_sm90_64x128", ...) forces
// that kernel (an error if it cannot run these arguments); the prepacked ops' "pk_*" configs do
// not apply here and are ignored. Unset or empty: the heuristic.
//
// w8a8_gemm runs CUTLASS int8 tensor-core GEMMs (kernels/gemm/w8a8_gemm.h) with the scales and
// bias fused in the epilogue; the config comes from choose_w8a8_config (w8a8_heuristics.h) or
// SQUASH_W8A8_CONFIG=<name from that table> (an error if it cannot run here).
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

#include "kernels/gemm/w8a8_gemm.h"
#include "kernels/gemm/woq_cutlass.h"
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

// The CUTLASS config SQUASH_WOQ_CONFIG names, if it names one.
std::optional<gemm::WoqCutlassConfig> forced_cutlass_config() {
  const char* env = std::getenv("SQUASH_WOQ_CONFIG");
  if (env == nullptr) return std::nullopt;
  for (int c = 0; c < static_cast<int>(gemm::WoqCutlassConfig::kCount); ++c) {
    const auto cfg = static_cast<gemm::WoqCutlassConfig>(c);
    if (std::strcmp(env, gemm::woq_cutlass_config_info(cfg).name) == 0) return cfg;
  }
  return std::nullopt;
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
  if (forced_cutlass_config()) return WoqPlan{WoqPath::kCutlass, GemvConfig::kM1, MmaConfig::kM8, 1};
  SQUASH_CHECK(false, "squash::", op, ": unknown SQUASH_WOQ_CONFIG '", s,
              "' (expected dequant, gemv_m1/2/4/8/16 or mma_m8/16/32/64 optionally :splits, or "
              "cutlass_sm90_64x128/cutlass_sm90_128x128/cutlass_sm80_128x128)");
  return std::nullopt;  // not reached
}

const char* plan_name(const WoqPlan& plan) {
  switch (plan.path) {
    case WoqPath::kGemv: return gemm::gemv_config_info(plan.gemv).name;
    case WoqPath::kMma: return gemm::mma_config_info(plan.mma).name;
    case WoqPath::kCutlass: return "cutlass";
    default: return "dequant";
  }
}

// The CUTLASS mixed-input path (kernels/gemm/woq_cutlass.h) on x2 [M, K] rows: the scales are
// put in CUTLASS's layout ([K/group, N] float32, and -zero * scale for int4) by one small kernel
// per call - the work a prepack op would do once at load time - then one GEMM.
at::Tensor woq_cutlass_cuda(const char* op, int bits, at::Tensor x2, const at::Tensor& qweight,
                            const at::Tensor& scales, const OptTensor& zeros, int64_t group,
                            const OptTensor& bias, gemm::WoqCutlassConfig config, const DeviceInfo& dev) {
  const int64_t M = x2.size(0), K = x2.size(1), N = qweight.size(0), G = K / group;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  if (!aligned(x2, 16) || (M > 1 && x2.stride(0) % 8 != 0)) x2 = x2.clone(at::MemoryFormat::Contiguous);
  const at::Tensor qw = aligned(qweight, 16) ? qweight : qweight.clone();
  const at::Tensor b = bias && !aligned(*bias, 16) ? bias->clone() : (bias ? *bias : at::Tensor());
  at::Tensor st = at::empty({bits == 4 ? 2 : 1, G, N}, x2.options().dtype(at::kFloat));
  const gemm::DType dtype = to_gemm_dtype(op, x2.scalar_type());
  cudaError_t err = gemm::woq_cutlass_scales(
      scales.data_ptr(), scales.scalar_type() == at::kFloat, dtype,
      zeros ? zeros->data_ptr<uint8_t>() : nullptr, static_cast<int>(N), static_cast<int>(G),
      st.data_ptr<float>(), bits == 4 ? st.data_ptr<float>() + G * N : nullptr, stream);
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the CUTLASS scale layout kernel: ",
              cudaGetErrorString(err));
  at::Tensor out = at::empty({M, N}, x2.options());
  gemm::WoqCutlassParams cp;
  cp.x = x2.data_ptr();
  cp.qweight = qw.data_ptr();
  cp.scales_t = st.data_ptr<float>();
  cp.zeros_t = bits == 4 ? st.data_ptr<float>() + G * N : nullptr;
  cp.bias = bias ? b.data_ptr() : nullptr;
  cp.out = out.data_ptr();
  cp.M = static_cast<int>(M);
  cp.N = static_cast<int>(N);
  cp.K = static_cast<int>(K);
  cp.group = static_cast<int>(group);
  cp.ldx = M > 1 ? x2.stride(0) : K;
  cp.ldo = N;
  cp.bits = bits;
  cp.dtype = dtype;
  cp.sm_count = dev.sm_count;
  const char* name = gemm::woq_cutlass_config_info(config).name;
  SQUASH_CHECK(gemm::woq_cutlass_supported(cp, config), "squash::", op, ": the ", name,
              " kernel cannot run these pointers (alignment)");
  err = gemm::woq_cutlass_gemm(cp, config, stream);
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the ", name, " kernel (M=", M,
              " N=", N, " K=", K, " group=", group, " ", x2.scalar_type(), "): ", cudaGetErrorString(err));
  return out;
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
  const gemm::WoqCutlassConfig cutlass_cfg = forced_cutlass_config().value_or(
      gemm::choose_woq_cutlass_config(p.M, p.N, p.K, bits, dev.arch));
  const bool cutlass_ok = M <= INT32_MAX && gemm::woq_cutlass_config_runs_on(cutlass_cfg, dev.arch, bits) &&
                          gemm::woq_cutlass_shape_ok(p.M, p.N, p.K, p.group, bits, p.dtype, cutlass_cfg);
  WoqPlan plan = gemm::choose_woq_plan_cutlass(p.M, p.N, p.K, bits, dev.sm_count, dev.arch, gemv_ok,
                                               mma_ok, cutlass_ok);
  if (forced) {
    plan = *forced;
    const bool ok = plan.path == WoqPath::kDequantMatmul ||
                    (plan.path == WoqPath::kGemv && gemv_ok &&
                     M <= gemm::gemv_config_info(plan.gemv).max_m) ||
                    (plan.path == WoqPath::kMma && mma_ok &&
                     M <= gemm::mma_config_info(plan.mma).max_m) ||
                    (plan.path == WoqPath::kCutlass && cutlass_ok);
    SQUASH_CHECK(ok, "squash::", op, ": SQUASH_WOQ_CONFIG=", std::getenv("SQUASH_WOQ_CONFIG"),
                " cannot run M=", M, " N=", N, " K=", K, " group=", group, " on compute capability ",
                dev.arch);
  }
  if (plan.path == WoqPath::kCutlass)
    return woq_cutlass_cuda(op, bits, x2, qweight, scales, zeros, group, bias, cutlass_cfg, dev)
        .view(out_shape);

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

// The config forced by SQUASH_W8A8_CONFIG, if any.
std::optional<gemm::W8A8Config> forced_w8a8_config(const char* op) {
  const char* env = std::getenv("SQUASH_W8A8_CONFIG");
  if (env == nullptr || env[0] == '\0') return std::nullopt;
  std::string names;
  for (int c = 0; c < static_cast<int>(gemm::W8A8Config::kCount); ++c) {
    const auto cfg = static_cast<gemm::W8A8Config>(c);
    if (std::strcmp(env, gemm::w8a8_config_info(cfg).name) == 0) return cfg;
    names += (c ? ", " : "") + std::string(gemm::w8a8_config_info(cfg).name);
  }
  SQUASH_CHECK(false, "squash::", op, ": unknown SQUASH_W8A8_CONFIG '", env, "' (expected one of ",
              names, ")");
  return std::nullopt;  // not reached
}

// t as a contiguous tensor whose data is 16-byte aligned (a view at an odd offset is copied).
at::Tensor aligned16(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return aligned(c, 16) ? c : c.clone();
}

at::Tensor w8a8_gemm_cuda(const at::Tensor& x_q, const at::Tensor& x_scales, const at::Tensor& qweight,
                          const at::Tensor& w_scales, const OptTensor& bias, at::ScalarType out_dtype) {
  const char* op = "w8a8_gemm";
  check_w8a8_gemm_args(x_q, x_scales, qweight, w_scales, bias, out_dtype);
  const int64_t K = x_q.size(-1);
  const int64_t N = qweight.size(0);
  // CUTLASS's int8 tensor-core GEMMs load 16-byte rows of x_q and qweight and store 16-byte
  // vectors of out: the CPU op takes any K and N, the CUDA op needs these.
  SQUASH_CHECK_VALUE(K % gemm::kW8A8AlignK == 0 && N % gemm::kW8A8AlignN == 0, "squash::", op,
                    ": on CUDA, K = x_q.shape[-1] must be a multiple of ", gemm::kW8A8AlignK,
                    " and N = qweight.shape[0] a multiple of ", gemm::kW8A8AlignN,
                    " (int8 tensor-core alignment), got K=", K, " N=", N,
                    "; zero-pad K (x_q and qweight columns) / N (qweight rows), or run on CPU");
  SQUASH_CHECK(N <= INT32_MAX && K <= INT32_MAX, "squash::", op, ": weight too large");

  c10::cuda::CUDAGuard guard(x_q.device());
  std::vector<int64_t> out_shape(x_q.sizes().begin(), x_q.sizes().end() - 1);
  out_shape.push_back(N);
  at::Tensor x2 = as_rows(x_q, K);
  const int64_t M = x2.size(0);
  if (M == 0) return at::empty(out_shape, x_q.options().dtype(out_dtype));
  SQUASH_CHECK(M <= INT32_MAX, "squash::", op, ": too many rows (", M, ")");
  const DeviceInfo dev = device_info(x_q.get_device());
  SQUASH_CHECK(dev.arch >= 80 && dev.arch < 100, "squash::", op,
              ": no kernel for compute capability ", dev.arch / 10, ".", dev.arch % 10,
              " (built for sm_80 and sm_90a)");

  // Rows of x_q start 16-byte aligned (cp.async / TMA); the rare misaligned view is copied.
  if (!aligned(x2, 16) || (M > 1 && x2.stride(0) % 16 != 0)) x2 = x2.clone(at::MemoryFormat::Contiguous);
  const at::Tensor qw = aligned16(qweight);
  const at::Tensor xs = x_scales.contiguous();
  const at::Tensor ws = aligned16(w_scales);
  // The epilogue reads a float32 bias; an fp16/bf16 bias converts exactly.
  const at::Tensor b = bias ? aligned16(bias->to(at::kFloat)) : at::Tensor();
  at::Tensor out = at::empty({M, N}, x_q.options().dtype(out_dtype));

  gemm::W8A8GemmParams p;
  p.x = x2.data_ptr<int8_t>();
  p.x_scales = xs.data_ptr<float>();
  p.qweight = qw.data_ptr<int8_t>();
  p.w_scales = ws.data_ptr<float>();
  p.bias = bias ? b.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.ldx = M > 1 ? x2.stride(0) : K;
  p.ldw = K;
  p.ldo = N;
  p.x_scales_per_row = xs.numel() != 1;
  p.w_scales_per_col = ws.numel() != 1;
  p.out_dtype = to_gemm_dtype(op, out_dtype);
  p.sm_count = dev.sm_count;

  const std::optional<gemm::W8A8Config> forced = forced_w8a8_config(op);
  const gemm::W8A8Config config =
      forced ? *forced : gemm::choose_w8a8_config(p.M, p.N, p.K, dev.arch);
  const char* name = gemm::w8a8_config_info(config).name;
  SQUASH_CHECK(gemm::w8a8_config_runs_on(config, dev.arch), "squash::", op, ": SQUASH_W8A8_CONFIG=",
              name, " cannot run on compute capability ", dev.arch / 10, ".", dev.arch % 10);
  SQUASH_CHECK(gemm::w8a8_supported(p, config), "squash::", op, ": the ", name,
              " kernel cannot run M=", M, " N=", N, " K=", K, " (alignment of x_q, qweight or out)");
  const cudaError_t err =
      gemm::w8a8_gemm(p, config, c10::cuda::getCurrentCUDAStream().stream());
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the ", name, " kernel (M=", M,
              " N=", N, " K=", K, " ", out_dtype, "): ", cudaGetErrorString(err));
  return out.view(out_shape);
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("w8a16_gemm", &squash::w8a16_gemm_cuda);
  m.impl("w4a16_gemm", &squash::w4a16_gemm_cuda);
  m.impl("quantize_activation_int8", &squash::quantize_activation_int8_cuda);
  m.impl("w8a8_gemm", &squash::w8a8_gemm_cuda);
}
