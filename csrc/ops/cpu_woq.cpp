// CPU prepacked weight-only GEMMs (W4A16 / W8A16): the layout transforms (ATen view/permute code,
// run once at load time) and the bindings of the torch-free kernels in csrc/kernels/cpu/woq*.cpp.
//
// Per call: x is converted to float32 once (ATen's vectorized conversion), the kernel computes a
// float32 [M, n] result (bias added in float32) with ATen's thread pool splitting the 16-column
// panels, and the result is rounded once to x.dtype, the same contract as w4a16_gemm / w8a16_gemm.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/cpu/woq.h"
#include "ops/cpu_common.h"
#include "ops/cpu_woq.h"
#include "ops/formats.h"

namespace squash {
namespace {

namespace ck = cpu_kernels;
using OptTensor = std::optional<at::Tensor>;
constexpr int64_t kPanel = ck::kWoqPanel;

// [N, ...] -> [P * 16, ...] with `value` in the padded rows.
at::Tensor pad_rows(const at::Tensor& t, int64_t value) {
  const int64_t pad = ck::woq_panels(t.size(0)) * kPanel - t.size(0);
  if (pad == 0) return t;
  std::vector<int64_t> pads(2 * t.dim(), 0);
  pads.back() = pad;  // constant_pad_nd lists (before, after) pairs from the last dim backwards
  return at::constant_pad_nd(t, pads, value);
}

// Group tensors [N, G] -> [P, G, 16] (padded channels get `pad`) and back to [n, G]. The layout
// transforms always return new tensors (clone): an output aliasing an input breaks the schemas.
at::Tensor pack_groups(const at::Tensor& t, int64_t pad) {
  const at::Tensor p = pad_rows(t, pad);
  return p.view({p.size(0) / kPanel, kPanel, t.size(1)}).permute({0, 2, 1}).clone(at::MemoryFormat::Contiguous);
}
at::Tensor unpack_groups(const at::Tensor& t, int64_t n) {
  return t.permute({0, 2, 1}).reshape({-1, t.size(1)}).narrow(0, 0, n).clone(at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_prepack_int4_weight(const at::Tensor& qweight,
                                                                        const at::Tensor& scales,
                                                                        const OptTensor& zeros,
                                                                        int64_t group_size) {
  check_cpu_prepack_int4_args(qweight, scales, zeros, group_size);
  const int64_t K = 2 * qweight.size(1);
  // values [P*16, K] -> [P, 2 (half), 8 (j), K] -> [P, K, 8, 2]: byte (p, k, j) = column 16p + j
  // (low nibble) | column 16p + 8 + j (high nibble) << 4.
  at::Tensor v = at::stack({qweight.bitwise_and(15), qweight.bitwise_right_shift(4)}, -1).reshape({-1, K});
  v = pad_rows(v, 0);
  v = v.view({-1, 2, 8, K}).permute({0, 3, 2, 1});
  const at::Tensor packed = v.select(-1, 0).bitwise_or(v.select(-1, 1).bitwise_left_shift(4)).contiguous();
  const at::Tensor z = zeros ? *zeros : at::full_like(scales, 8, scales.options().dtype(at::kByte));
  return {packed, pack_groups(scales.to(at::kFloat), 0), pack_groups(z, 0)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cpu_unprepack_int4_weight(const at::Tensor& packed,
                                                                          const at::Tensor& scales,
                                                                          const OptTensor& zeros, int64_t n,
                                                                          int64_t k, int64_t group_size) {
  check_cpu_unprepack_int4_args(packed, scales, zeros, n, k, group_size);
  // [P, K, 8] -> values [P, K, 8, 2] -> [P, 2, 8, K] -> [n, K] -> bytes [n, K/2].
  at::Tensor v = at::stack({packed.bitwise_and(15), packed.bitwise_right_shift(4)}, -1);
  v = v.permute({0, 3, 2, 1}).reshape({-1, k}).narrow(0, 0, n).reshape({n, k / 2, 2});
  const at::Tensor qweight = v.select(-1, 0).bitwise_or(v.select(-1, 1).bitwise_left_shift(4)).contiguous();
  const at::Tensor z = zeros ? unpack_groups(*zeros, n) : at::full({n, scales.size(1)}, 8, packed.options());
  return {qweight, unpack_groups(scales, n), z};
}

std::tuple<at::Tensor, at::Tensor> cpu_prepack_int8_weight(const at::Tensor& qweight, const at::Tensor& scales) {
  check_cpu_prepack_int8_args(qweight, scales);
  const int64_t K = qweight.size(1);
  const at::Tensor packed = pad_rows(qweight, 0).view({-1, kPanel, K}).permute({0, 2, 1});
  return {packed.clone(at::MemoryFormat::Contiguous),
          pad_rows(scales.to(at::kFloat), 0).view({-1, kPanel}).clone(at::MemoryFormat::Contiguous)};
}

std::tuple<at::Tensor, at::Tensor> cpu_unprepack_int8_weight(const at::Tensor& packed, const at::Tensor& scales,
                                                             int64_t n) {
  check_cpu_unprepack_int8_args(packed, scales, n);
  const int64_t K = packed.size(1);
  return {packed.permute({0, 2, 1}).reshape({-1, K}).narrow(0, 0, n).clone(at::MemoryFormat::Contiguous),
          scales.reshape({-1}).narrow(0, 0, n).clone(at::MemoryFormat::Contiguous)};
}

// float32 activations [M, K] (contiguous), the output [M, n] float32 and the float32 bias.
struct Problem {
  at::Tensor x, x_bf16, out, bias;
  ck::WoqProblem pr;
};

Problem make_problem(const at::Tensor& x, int64_t n, const OptTensor& bias) {
  Problem p;
  const int64_t K = x.size(-1);
  p.x = x.reshape({-1, K}).to(at::kFloat).contiguous();
  p.out = at::empty({p.x.size(0), n}, x.options().dtype(at::kFloat));
  if (bias) p.bias = bias->to(at::kFloat).contiguous();
  p.pr = {p.x.const_data_ptr<float>(), p.x.size(0), K, bias ? p.bias.const_data_ptr<float>() : nullptr,
          p.out.mutable_data_ptr<float>(), n};
  if (x.scalar_type() == at::kBFloat16) {  // the AVX-512 BF16 kernel reads the activations as they are
    p.x_bf16 = x.reshape({-1, K}).contiguous();
    p.pr.x_bf16 = reinterpret_cast<const uint16_t*>(p.x_bf16.const_data_ptr<at::BFloat16>());
  }
  return p;
}

// Splits the panels over ATen's threads, at least ~64 KiB of weight x rows per task, so that a
// small layer at small M runs on the calling thread instead of paying for waking the pool.
template <typename Fn>
void for_panels(int64_t n, int64_t panel_bytes, int64_t m, Fn fn) {
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / (panel_bytes * std::max<int64_t>(1, m)));
  at::parallel_for(0, ck::woq_panels(n), grain, fn);
}

at::Tensor finish(const Problem& p, const at::Tensor& x, int64_t n) {
  return p.out.to(x.scalar_type()).reshape(cpu::out_shape(x, n));
}

// Above this many rows (prefill) the weight is dequantized once to float32 and the product runs
// in ATen's float32 GEMM (MKL / oneDNN): the dequantization is O(N K) against the GEMM's
// O(M N K), and the register-tile kernels are built for decode-size M. Measured on one Zen 3 core
// (tiny Llama prefill, 4 x 64 tokens, hidden 512 / 1536): the W4A16 kernel 0.53x torch fp32 at
// M = 256, while up to M = 64 it stays at ~1x or above (cpu_woq suite). The AVX-512 BF16
// kernels (bf16 activations) have no such limit: W4A16: on one Zen 5-class core it ran M = 256 3.0-3.2x
// faster than this float32 path (512 x 1536, 1536 x 512, 4096 x 4096;
// bench/results/2026-12-02_cpu-amd-epyc-6_probes.log), which the AVX2 kernel was not.
constexpr int64_t kDequantGemmRows = 128;

int64_t rows_of(const at::Tensor& x) { return x.numel() / x.size(-1); }

bool bf16_kernel(const at::Tensor& x, bool int4) {
  return ck::woq_bf16_kernel(ck::active_isa(), x.scalar_type() == at::kBFloat16, x.size(-1), int4);
}

at::Tensor w4a16_gemm_cpu_prepacked(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                    const OptTensor& zeros, int64_t n, int64_t group_size, const OptTensor& bias) {
  const int64_t g = check_w4a16_cpu_prepacked_args(x, packed, scales, zeros, n, group_size, bias);
  if (rows_of(x) > kDequantGemmRows && !bf16_kernel(x, true)) {
    const auto [q, s, z] = cpu_unprepack_int4_weight(packed, scales, zeros, n, x.size(-1), group_size);
    return cpu::linear_f32(x, cpu::dequantize_int4(q, s, zeros ? std::optional<at::Tensor>(z) : std::nullopt, g),
                           bias);
  }
  Problem p = make_problem(x, n, bias);
  if (p.pr.m > 0) {
    const int64_t K = x.size(-1);
    const ck::WoqInt4Weight w{packed.const_data_ptr<uint8_t>(), scales.const_data_ptr<float>(),
                              zeros ? zeros->const_data_ptr<uint8_t>() : nullptr, n, K, g};
    const ck::Isa isa = ck::active_isa();
    for_panels(n, K * 8, p.pr.m, [&](int64_t p0, int64_t p1) { ck::w4a16_gemm_panels(isa, w, p.pr, p0, p1); });
  }
  return finish(p, x, n);
}

at::Tensor w8a16_gemm_cpu_prepacked(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                    int64_t n, const OptTensor& bias) {
  check_w8a16_cpu_prepacked_args(x, packed, scales, n, bias);
  if (rows_of(x) > kDequantGemmRows && !bf16_kernel(x, false)) {
    const auto [q, s] = cpu_unprepack_int8_weight(packed, scales, n);
    return cpu::linear_f32(x, cpu::dequantize_int8(q, s), bias);
  }
  Problem p = make_problem(x, n, bias);
  if (p.pr.m > 0) {
    const int64_t K = x.size(-1);
    const ck::WoqInt8Weight w{packed.const_data_ptr<int8_t>(), scales.const_data_ptr<float>(), n, K};
    const ck::Isa isa = ck::active_isa();
    for_panels(n, K * kPanel, p.pr.m, [&](int64_t p0, int64_t p1) { ck::w8a16_gemm_panels(isa, w, p.pr, p0, p1); });
  }
  return finish(p, x, n);
}

}  // namespace

TORCH_LIBRARY_IMPL(squash, CPU, m) {
  m.impl("cpu_prepack_int4_weight", &cpu_prepack_int4_weight);
  m.impl("cpu_unprepack_int4_weight", &cpu_unprepack_int4_weight);
  m.impl("cpu_prepack_int8_weight", &cpu_prepack_int8_weight);
  m.impl("cpu_unprepack_int8_weight", &cpu_unprepack_int8_weight);
  m.impl("w4a16_gemm_cpu_prepacked", &w4a16_gemm_cpu_prepacked);
  m.impl("w8a16_gemm_cpu_prepacked", &w8a16_gemm_cpu_prepacked);
}

}  // namespace squash
