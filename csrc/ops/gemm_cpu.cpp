// CPU implementations of the quantized GEMMs and the int8 activation quantizer: the exact
// references the CUDA kernels are tested against, fast enough for small real models (MiniLM).
//  - w8a16 / w4a16: dequantize the weight to float32 once per call, one float32 GEMM through
//    ATen (MKL/oneDNN), bias added in float32, a single rounding to x.dtype.
//  - w8a8: exact int32 products, then our epilogue (csrc/kernels/cpu/int8_gemm.h: per-token x
//    per-channel scales and bias in float32, one rounding), on one of two engines:
//    - CPUs with VNNI, on the avx512 path: at::_int_mm (oneDNN's vpdpbusd kernels, exact s8 x s8 ->
//      s32, -128 included). One Zen 5 core (AVX-512 VNNI): 400-850 GOP/s at MiniLM / BERT / Llama
//      shapes against 120-160 for our AVX2 kernel and 92 for the float32 mm
//      (bench/results/2026-12-02_cpu-amd-epyc-6_probes.log). Up to kInt8VnniMaxRows rows our own
//      VNNI block (int8_gemm_avx512.cpp) instead: _int_mm costs ~20 us a call there;
//    - otherwise our own int8 x int8 kernel (AVX2 or scalar): at::_int_mm took 164 ms at
//      512x384x1536 on a Zen 3 without VNNI, 17x the float32 mm of the same shape.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/act_quant.h"
#include "cpu/act_transform.h"
#include "cpu/int8_gemm.h"
#include "cpu/isa.h"
#include "ops/cpu_common.h"
#include "ops/formats.h"
#include "ops/gemm.h"

namespace squash {
namespace {

using cpu::kernel_dtype;
using cpu::linear_f32;
using cpu::out_shape;

at::Tensor w8a16_gemm_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                          const std::optional<at::Tensor>& bias) {
  check_w8a16_gemm_args(x, qweight, scales, bias);
  return linear_f32(x, cpu::dequantize_int8(qweight, scales), bias);
}

at::Tensor w4a16_gemm_cpu(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                          const std::optional<at::Tensor>& zeros, int64_t group_size,
                          const std::optional<at::Tensor>& bias) {
  check_w4a16_gemm_args(x, qweight, scales, zeros, group_size, bias);
  const int64_t g = resolve_group_size(group_size, x.size(-1));
  return linear_f32(x, cpu::dequantize_int4(qweight, scales, zeros, g), bias);
}

// The int8 outputs of x [..., K] (q, one scale per row) and the row-quantizer parameters that
// read x into them; shared by both activation quantizer ops.
struct ActQuantCall {
  at::Tensor x2, q, scales;  // x2: x as [rows, K] (a view when the leading dims allow it)
  cpu_kernels::ActQuantParams p;
};

ActQuantCall act_quant_call(const at::Tensor& x, const std::optional<at::Tensor>& scale) {
  const int64_t K = x.size(-1);
  ActQuantCall c;
  // reshape keeps a view when the leading dims allow it; rows are then read with their stride.
  c.x2 = x.reshape({-1, K});
  c.q = at::empty(x.sizes(), x.options().dtype(at::kChar));
  c.scales = at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(at::kFloat));
  c.p.x = c.x2.const_data_ptr();
  c.p.q = c.q.mutable_data_ptr<int8_t>();
  c.p.scales = c.scales.mutable_data_ptr<float>();
  c.p.K = K, c.p.ldx = c.x2.stride(0);
  c.p.dtype = kernel_dtype(x.scalar_type());
  c.p.mode = scale ? quant::QuantMode::kStatic : quant::QuantMode::kDynamic;
  c.p.static_scale = scale ? scale->item<float>() : 0.f;
  return c;
}

// Rows per task: ~16k elements, below which the thread hand-off costs more than the rows.
int64_t act_quant_grain(int64_t K) { return std::max<int64_t>(1, 16384 / K); }

std::tuple<at::Tensor, at::Tensor> quantize_activation_int8_cpu(const at::Tensor& x,
                                                                const std::optional<at::Tensor>& scale) {
  check_quantize_activation_args(x, scale);
  const ActQuantCall c = act_quant_call(x, scale);
  const cpu_kernels::Isa isa = cpu_kernels::active_isa();
  at::parallel_for(0, c.x2.size(0), act_quant_grain(c.p.K), [&](int64_t r0, int64_t r1) {
    cpu_kernels::act_quant_rows(c.p, r0, r1, isa);
  });
  return {c.q, c.scales};
}

// x * input_mul, rotated by Hadamard blocks, quantized: one pass per row through a float32 row
// buffer (csrc/kernels/cpu/act_transform.h), where the composite form (W8A8Linear on CUDA) runs a
// multiply, a batched [.., K/b, b] @ [b, b] matmul and the quantizer over the whole tensor: 335
// against 568 us for MiniLM batch 32's FFN-down input ([550, 1536], b = 16), one Zen 5 core
// (bench/results/2026-12-02_cpu-act-transform_probe.log).
std::tuple<at::Tensor, at::Tensor> quantize_activation_int8_transformed_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& input_mul, int64_t rotation,
    const std::optional<at::Tensor>& scale) {
  check_quantize_activation_transformed_args(x, input_mul, rotation, scale);
  const ActQuantCall c = act_quant_call(x, scale);
  cpu_kernels::ActTransformParams p;
  p.quant = c.p;
  p.mul = input_mul ? input_mul->const_data_ptr<float>() : nullptr;
  p.block = rotation;
  const cpu_kernels::Isa isa = cpu_kernels::active_isa();
  at::parallel_for(0, c.x2.size(0), act_quant_grain(c.p.K), [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(c.p.K);
    cpu_kernels::act_transform_quant_rows(p, r0, r1, buf.data(), isa);
  });
  return {c.q, c.scales};
}

at::Tensor w8a8_gemm_cpu(const at::Tensor& x_q, const at::Tensor& x_scales, const at::Tensor& qweight,
                         const at::Tensor& w_scales, const std::optional<at::Tensor>& bias,
                         at::ScalarType out_dtype) {
  check_w8a8_gemm_args(x_q, x_scales, qweight, w_scales, bias, out_dtype);
  const int64_t K = x_q.size(-1), N = qweight.size(0);
  const at::Tensor x2 = x_q.reshape({-1, K});
  const int64_t M = x2.size(0);
  at::Tensor out = at::empty({M, N}, x_q.options().dtype(out_dtype));
  if (M == 0 || N == 0) return out.reshape(out_shape(x_q, N));
  const at::Tensor w = qweight.contiguous(), xs = x_scales.contiguous(), ws = w_scales.contiguous();
  at::Tensor b;
  if (bias) b = bias->to(at::kFloat).contiguous();
  cpu_kernels::Int8GemmParams p;
  p.a = x2.const_data_ptr<int8_t>();
  p.b = w.const_data_ptr<int8_t>();
  p.a_scale = xs.const_data_ptr<float>();
  p.b_scale = ws.const_data_ptr<float>();
  p.bias = bias ? b.const_data_ptr<float>() : nullptr;
  p.out = out.mutable_data_ptr();
  p.M = M, p.N = N, p.K = K;
  p.lda = x2.stride(0), p.ldb = K, p.ldo = N;
  p.a_scale_per_row = xs.numel() != 1, p.b_scale_per_col = ws.numel() != 1;
  p.out_dtype = kernel_dtype(out_dtype);
  const cpu_kernels::Isa isa = cpu_kernels::active_isa();
  if (cpu_kernels::int8_gemm_vnni(isa) && M > cpu_kernels::kInt8VnniMaxRows) {
    const at::Tensor acc = at::_int_mm(x2, w.t());  // [M, N] int32, contiguous
    const int32_t* a = acc.const_data_ptr<int32_t>();
    at::parallel_for(0, M, std::max<int64_t>(1, 16384 / N), [&](int64_t m0, int64_t m1) {
      cpu_kernels::int8_gemm_epilogue(p, a + m0 * N, N, m0, m1, isa);
    });
  } else {
    at::parallel_for(0, cpu_kernels::int8_gemm_jobs(p), 1, [&](int64_t j0, int64_t j1) {
      cpu_kernels::int8_gemm_run(p, j0, j1, isa);
    });
  }
  return out.reshape(out_shape(x_q, N));
}

}  // namespace

TORCH_LIBRARY_IMPL(squash, CPU, m) {
  m.impl("w8a16_gemm", &w8a16_gemm_cpu);
  m.impl("w4a16_gemm", &w4a16_gemm_cpu);
  m.impl("quantize_activation_int8", &quantize_activation_int8_cpu);
  m.impl("quantize_activation_int8_transformed", &quantize_activation_int8_transformed_cpu);
  m.impl("w8a8_gemm", &w8a8_gemm_cpu);
}

}  // namespace squash
