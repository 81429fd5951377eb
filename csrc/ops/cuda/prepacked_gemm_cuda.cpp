// CUDA implementations of w4a16_gemm_prepacked and w8a16_gemm_prepacked (schemas in
// csrc/ops/library.cpp; the prepack ops themselves are device-agnostic, csrc/ops/prepack.cpp).
// Validation is shared with the CPU ops (ops/prepack.h); this file shapes tensors into the
// torch-free params of csrc/kernels/gemm/pk_gemm.h, picks the config with the pure heuristic
// choose_pk_plan (kernels/gemm/heuristics.h) and launches on the current stream.
//
// Paths: M <= kPkMaxM -> the prepacked tensor-core kernel; larger M -> dequantize the packed
// weight to a dense x.dtype [N, K] and at::linear (cuBLAS), which rounds each weight to x.dtype
// once (the CUTLASS mixed-input path is meant to take large M).
//
// SQUASH_WOQ_CONFIG (environment, read per call, shared with w4a16_gemm / w8a16_gemm): a
// prepacked config name ("pk_m16_n16" .. "pk_m64_n128", listed in heuristics.h kPkConfigs),
// optionally ":<splits>", forces that config; "dequant" forces dequantize + cuBLAS; names of
// the canonical ops' kernels (gemv_*, mma_*) do not apply here and are ignored.
//
// Split-K counters: the kernel's last split to finish a tile resets the tile's counter, so one
// zeroed buffer per (device, stream) serves every launch on that stream; launches on different
// streams get different buffers and never share a counter.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/gemm/pk_gemm.h"
#include "ops/message.h"
#include "ops/prepack.h"

namespace squash {
namespace {

using OptTensor = std::optional<at::Tensor>;
using gemm::PkConfig;
using gemm::PkPlan;

struct SmInfo {
  int sm_count;
  int arch;
};

// Queried once per device (three driver calls per GEMM would show in eager decoding).
SmInfo sm_info(int device) {
  static std::array<std::atomic<int>, 64> cached{};  // sm_count << 16 | arch, 0 = not yet
  if (device < 0 || device >= static_cast<int>(cached.size())) return {132, 90};
  int v = cached[device].load(std::memory_order_relaxed);
  if (v == 0) {
    int sms = 0, major = 0, minor = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    v = (sms > 0 ? sms : 132) << 16 | (major * 10 + minor);
    cached[device].store(v, std::memory_order_relaxed);
  }
  return {v >> 16, v & 0xFFFF};
}

// The forced plan from SQUASH_WOQ_CONFIG, if it names a prepacked config or "dequant".
std::optional<PkPlan> forced_plan(const char* op) {
  const char* env = std::getenv("SQUASH_WOQ_CONFIG");
  if (env == nullptr || env[0] == '\0') return std::nullopt;
  const std::string s(env);
  if (s == "dequant") return PkPlan{true, PkConfig::kM16N16, 1};
  const size_t colon = s.find(':');
  const std::string name = s.substr(0, colon);
  if (name.rfind("pk_", 0) != 0) return std::nullopt;  // a canonical op's kernel
  const int splits = colon == std::string::npos ? 1 : std::atoi(s.c_str() + colon + 1);
  SQUASH_CHECK(splits >= 1 && splits <= 64, "squash::", op,
               ": SQUASH_WOQ_CONFIG splits must be in 1..64, got '", s, "'");
  std::string names;
  for (int c = 0; c < static_cast<int>(PkConfig::kCount); ++c) {
    const auto cfg = static_cast<PkConfig>(c);
    if (name == gemm::pk_config_info(cfg).name) return PkPlan{false, cfg, splits};
    names += std::string(c ? ", " : "") + gemm::pk_config_info(cfg).name;
  }
  SQUASH_CHECK(false, "squash::", op, ": unknown SQUASH_WOQ_CONFIG '", s, "' (prepacked configs: ", names,
               ", optionally :splits; or dequant)");
  return std::nullopt;  // not reached
}

// One zeroed int32 buffer of at least `count` counters per (device, stream).
int* split_counters(const at::Tensor& like, cudaStream_t stream, int64_t count) {
  static std::mutex mutex;
  static std::map<std::pair<int, cudaStream_t>, at::Tensor> buffers;
  std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& buf = buffers[{like.get_device(), stream}];
  if (!buf.defined() || buf.numel() < count)
    buf = at::zeros({std::max<int64_t>(count, 4096)}, like.options().dtype(at::kInt));
  return buf.data_ptr<int>();
}

bool aligned(const at::Tensor& t, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % bytes == 0;
}

at::Tensor aligned_copy(const at::Tensor& t, uintptr_t bytes) {
  return aligned(t, bytes) ? t : t.clone(at::MemoryFormat::Contiguous);
}

at::Tensor pk_gemm_cuda(const char* op, int bits, const at::Tensor& x, const at::Tensor& packed,
                        const at::Tensor& scales, const OptTensor& zeros, int64_t group,
                        const OptTensor& bias) {
  const int64_t K = x.size(-1), N = packed.size(0) * gemm::pack::kTileN;
  SQUASH_CHECK(x.is_cuda(), "squash::", op, ": x must be a CUDA tensor");
  SQUASH_CHECK(N <= INT32_MAX && K <= INT32_MAX, "squash::", op, ": weight too large");
  c10::cuda::CUDAGuard guard(x.device());
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(N);
  at::Tensor x2 = x.reshape({-1, K});
  const int64_t M = x2.size(0);
  if (M == 0) return at::empty(out_shape, x.options());
  // 16-byte x rows (cp.async); views at odd offsets or strides are copied (rare).
  if (!aligned(x2, 16) || (M > 1 && x2.stride(0) % 8 != 0)) x2 = x2.clone(at::MemoryFormat::Contiguous);
  const at::Tensor pk = aligned_copy(packed, 16), sc = aligned_copy(scales, 16);
  const OptTensor zp = zeros ? OptTensor(aligned_copy(*zeros, 8)) : std::nullopt;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();

  gemm::PkGemmParams p;
  p.x = x2.data_ptr();
  p.packed = pk.data_ptr<uint8_t>();
  p.scales = sc.data_ptr<float>();
  p.zeros = zp ? zp->data_ptr<uint8_t>() : nullptr;
  p.bias = bias ? bias->data_ptr() : nullptr;
  p.M = static_cast<int>(std::min<int64_t>(M, INT32_MAX));
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.group = static_cast<int>(group);
  p.ldx = M > 1 ? x2.stride(0) : K;
  p.bits = bits;
  p.dtype = x.scalar_type() == at::kHalf ? gemm::DType::kF16 : gemm::DType::kBF16;

  const SmInfo dev = sm_info(x.get_device());
  const PkPlan plan = forced_plan(op).value_or(gemm::choose_pk_plan(p.M, p.N, p.K, bits, dev.sm_count, dev.arch));

  if (!plan.dequant) {
    at::Tensor out = at::empty({M, N}, x.options());
    p.out = out.data_ptr();
    p.ldo = N;
    at::Tensor workspace;
    if (plan.splits > 1) {
      workspace = at::empty({plan.splits, M, N}, x.options().dtype(at::kFloat));
      p.workspace = workspace.data_ptr<float>();
      p.counters = split_counters(x, stream, gemm::pk_counter_count(plan.config, p.M, p.N, plan.splits));
    }
    SQUASH_CHECK(gemm::pk_gemm_supported(p), "squash::", op, ": internal error: the prepacked kernel ",
                 "rejects M=", M, " N=", N, " K=", K, " group=", group);
    const cudaError_t err = gemm::pk_gemm(p, plan.config, plan.splits, stream);
    SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the ", gemm::pk_config_info(plan.config).name,
                 " kernel (splits ", plan.splits, ", M=", M, " N=", N, " K=", K, " group=", group, " ",
                 x.scalar_type(), "): ", cudaGetErrorString(err));
    return out.view(out_shape);
  }

  // Dequantize + cuBLAS. The dense weight is a temporary of N*K x.dtype elements.
  at::Tensor w = at::empty({N, K}, x.options());
  const cudaError_t err = gemm::pk_dequantize(p, w.data_ptr(), stream);
  SQUASH_CHECK(err == cudaSuccess, "squash::", op, ": CUDA error in the dequantize kernel (N=", N, " K=", K,
               " group=", group, " ", x.scalar_type(), "): ", cudaGetErrorString(err));
  return at::linear(x2, w, bias).view(out_shape);
}

at::Tensor w4a16_gemm_prepacked_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                     const OptTensor& zeros, int64_t k, int64_t group_size,
                                     const OptTensor& bias) {
  const int64_t g = check_w4a16_prepacked_args(x, packed, scales, zeros, k, group_size, bias);
  return pk_gemm_cuda("w4a16_gemm_prepacked", 4, x, packed, scales, zeros, g, bias);
}

at::Tensor w8a16_gemm_prepacked_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                     int64_t k, const OptTensor& bias) {
  check_w8a16_prepacked_args(x, packed, scales, k, bias);
  return pk_gemm_cuda("w8a16_gemm_prepacked", 8, x, packed, scales, std::nullopt, x.size(-1), bias);
}

}  // namespace
}  // namespace squash

TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("w4a16_gemm_prepacked", &squash::w4a16_gemm_prepacked_cuda);
  m.impl("w8a16_gemm_prepacked", &squash::w8a16_gemm_prepacked_cuda);
}
