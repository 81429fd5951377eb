// CPU implementations of the weight-format ops (docs/FORMATS.md is the contract). Rows of the
// weight are independent, so every op is one at::parallel_for over rows; rounding is
// round-half-to-even (cpu::rne_clamp in formats.h).
#include <ATen/ATen.h>
#include "ops/message.h"
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

#include "ops/formats.h"

namespace squash {
namespace {

// Rows per parallel task: about 16K elements, so small weights stay on one thread.
int64_t row_grain(int64_t row_len) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_len, 1)); }

std::tuple<at::Tensor, at::Tensor> quantize_int8_weight_cpu(const at::Tensor& weight) {
  check_quantize_int8_weight_args(weight);
  const at::Tensor w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  at::Tensor qweight = at::empty({N, K}, w.options().dtype(at::kChar));
  at::Tensor scales = at::empty({N}, w.options().dtype(at::kFloat));
  int8_t* q = qweight.mutable_data_ptr<int8_t>();
  float* s = scales.mutable_data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "quantize_int8_weight", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    at::parallel_for(0, N, row_grain(K), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const scalar_t* row = src + n * K;
        const float amax = cpu::absmax(row, K);
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        s[n] = amax / 127.f;
        cpu::quantize_row_int8(row, q + n * K, inv, K);
      }
    });
  });
  return {qweight, scales};
}

at::Tensor dequantize_int8_weight_cpu(const at::Tensor& qweight, const at::Tensor& scales) {
  check_dequantize_int8_weight_args(qweight, scales);
  return cpu::dequantize_int8(qweight, scales);
}

// Scale and zero point of one asymmetric int4 group with minimum lo and maximum hi.
// The range is widened to include 0 (lo <= 0 <= hi, as GPTQ does): then z = rne(-lo/s) lies in
// 0..15 and no value is clamped, so every element dequantizes within s/2 (the brief's formula
// on the raw min/max would clamp all-positive or all-negative groups, e.g. values in [1, 2]
// would come back as [1, 1]). The range is computed in double so hi - lo cannot overflow.
// Guard for constant groups (hi == lo == c): s = |c| (1 when c == 0). The same formulas then
// give z = (c < 0), q = z + sign(c), so (q - z) * s == c exactly; s = (max - min)/15 would be 0.
inline void int4_asym_params(float lo, float hi, float& s, int& z) {
  const bool constant = lo == hi;
  const float c = lo;
  lo = std::fmin(lo, 0.f);
  hi = std::fmax(hi, 0.f);
  if (constant) {
    s = c != 0.f ? std::fabs(c) : 1.f;
  } else {
    s = static_cast<float>((static_cast<double>(hi) - static_cast<double>(lo)) / 15.0);
    // A subnormal range can round to 0: fall back to the largest magnitude (then |w/s| <= 1).
    if (s == 0.f) s = std::fmax(-lo, hi);
  }
  z = static_cast<int>(cpu::rne_clamp(-lo / s, 0.f, 15.f));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_int4_weight_cpu(const at::Tensor& weight,
                                                                        int64_t group_size,
                                                                        bool symmetric) {
  const int64_t g = check_quantize_int4_weight_args(weight, group_size);
  const at::Tensor w = weight.contiguous();
  const int64_t N = w.size(0), K = w.size(1), G = K / g;
  at::Tensor qweight = at::empty({N, K / 2}, w.options().dtype(at::kByte));
  at::Tensor scales = at::empty({N, G}, w.options().dtype(at::kFloat));
  at::Tensor zeros = at::empty({N, G}, w.options().dtype(at::kByte));
  uint8_t* qp = qweight.mutable_data_ptr<uint8_t>();
  float* sp = scales.mutable_data_ptr<float>();
  uint8_t* zp = zeros.mutable_data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "quantize_int4_weight", [&] {
    const scalar_t* src = w.const_data_ptr<scalar_t>();
    at::parallel_for(0, N, row_grain(K), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t gi = 0; gi < G; ++gi) {
          const scalar_t* x = src + n * K + gi * g;
          float s;
          int z;
          if (symmetric) {
            s = cpu::absmax(x, g) / 7.f;
            z = 8;
          } else {
            float lo = static_cast<float>(x[0]), hi = lo;
            for (int64_t k = 1; k < g; ++k) {
              const float v = static_cast<float>(x[k]);
              lo = v < lo ? v : lo;
              hi = v > hi ? v : hi;
            }
            int4_asym_params(lo, hi, s, z);
          }
          sp[n * G + gi] = s;
          zp[n * G + gi] = static_cast<uint8_t>(z);
          // g is even (K even, g in {32, 64, 128, K}), so a byte never straddles two groups.
          uint8_t* out = qp + n * (K / 2) + gi * (g / 2);
          for (int64_t k = 0; k < g; k += 2) {
            int q2[2];
            for (int h = 0; h < 2; ++h) {
              const float v = static_cast<float>(x[k + h]);
              if (symmetric)  // s == 0 only for an all-zero group: q = 8 dequantizes to 0.
                q2[h] = s > 0.f ? static_cast<int>(cpu::rne_clamp(v / s, -8.f, 7.f)) + 8 : 8;
              else  // rne(v/s) + z, clamped to 0..15 (clamping v/s to +-16 first changes nothing)
                q2[h] = std::clamp(static_cast<int>(cpu::rne_clamp(v / s, -16.f, 16.f)) + z, 0, 15);
            }
            out[k / 2] = static_cast<uint8_t>(q2[0] | (q2[1] << 4));
          }
        }
      }
    });
  });
  return {qweight, scales, zeros};
}

at::Tensor dequantize_int4_weight_cpu(const at::Tensor& qweight, const at::Tensor& scales,
                                      const std::optional<at::Tensor>& zeros, int64_t group_size) {
  const int64_t g = check_dequantize_int4_weight_args(qweight, scales, zeros, group_size);
  return cpu::dequantize_int4(qweight, scales, zeros, g);
}

at::Tensor pack_int4_cpu(const at::Tensor& values) {
  check_pack_int4_args(values);
  const at::Tensor v = values.contiguous();
  const int64_t K = v.size(-1), rows = v.numel() / K;
  std::vector<int64_t> out_shape(v.sizes().begin(), v.sizes().end());
  out_shape.back() = K / 2;
  at::Tensor packed = at::empty(out_shape, v.options());
  if (rows == 0) return packed;
  const int vmax = v.max().item<uint8_t>();
  SQUASH_CHECK_VALUE(vmax <= 15, "squash::pack_int4: values must be in 0..15 (4-bit), got a value of ",
                    vmax);
  const uint8_t* src = v.const_data_ptr<uint8_t>();
  uint8_t* dst = packed.mutable_data_ptr<uint8_t>();
  // Byte j holds element 2j in its low nibble and 2j+1 in its high nibble.
  // By-value captures: byte stores could alias captured references and block vectorization.
  at::parallel_for(0, rows * (K / 2), 32768, [src, dst](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) dst[j] = static_cast<uint8_t>(src[2 * j] | (src[2 * j + 1] << 4));
  });
  return packed;
}

at::Tensor unpack_int4_cpu(const at::Tensor& packed) {
  check_unpack_int4_args(packed);
  const at::Tensor p = packed.contiguous();
  const int64_t half = p.size(-1), rows = p.numel() / half;
  std::vector<int64_t> out_shape(p.sizes().begin(), p.sizes().end());
  out_shape.back() = 2 * half;
  at::Tensor values = at::empty(out_shape, p.options());
  const uint8_t* src = p.const_data_ptr<uint8_t>();
  uint8_t* dst = values.mutable_data_ptr<uint8_t>();
  at::parallel_for(0, rows * half, 32768, [src, dst](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      dst[2 * j] = src[j] & 0xF;
      dst[2 * j + 1] = src[j] >> 4;
    }
  });
  return values;
}

}  // namespace

namespace cpu {

at::Tensor dequantize_int8(const at::Tensor& qweight, const at::Tensor& scales) {
  const at::Tensor q = qweight.contiguous();
  const at::Tensor s = scales.to(at::kFloat).contiguous();
  const int64_t N = q.size(0), K = q.size(1);
  at::Tensor out = at::empty({N, K}, q.options().dtype(at::kFloat));
  const int8_t* qp = q.const_data_ptr<int8_t>();
  const float* sp = s.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  at::parallel_for(0, N, row_grain(K), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float sn = sp[n];
      for (int64_t k = 0; k < K; ++k) op[n * K + k] = static_cast<float>(qp[n * K + k]) * sn;
    }
  });
  return out;
}

at::Tensor dequantize_int4(const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& zeros, int64_t g) {
  const at::Tensor q = qweight.contiguous();
  const at::Tensor s = scales.to(at::kFloat).contiguous();
  at::Tensor z;
  if (zeros) z = zeros->contiguous();
  const int64_t N = q.size(0), K = 2 * q.size(1), G = K / g;
  at::Tensor out = at::empty({N, K}, q.options().dtype(at::kFloat));
  const uint8_t* qp = q.const_data_ptr<uint8_t>();
  const float* sp = s.const_data_ptr<float>();
  const uint8_t* zp = zeros ? z.const_data_ptr<uint8_t>() : nullptr;
  float* op = out.mutable_data_ptr<float>();
  at::parallel_for(0, N, row_grain(K), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t gi = 0; gi < G; ++gi) {
        const float sg = sp[n * G + gi];
        const int zg = zp ? zp[n * G + gi] : 8;
        const uint8_t* in = qp + n * (K / 2) + gi * (g / 2);
        float* o = op + n * K + gi * g;
        for (int64_t j = 0; j < g / 2; ++j) {
          o[2 * j] = static_cast<float>((in[j] & 0xF) - zg) * sg;
          o[2 * j + 1] = static_cast<float>((in[j] >> 4) - zg) * sg;
        }
      }
    }
  });
  return out;
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(squash, CPU, m) {
  m.impl("quantize_int8_weight", &quantize_int8_weight_cpu);
  m.impl("dequantize_int8_weight", &dequantize_int8_weight_cpu);
  m.impl("quantize_int4_weight", &quantize_int4_weight_cpu);
  m.impl("dequantize_int4_weight", &dequantize_int4_weight_cpu);
  m.impl("pack_int4", &pack_int4_cpu);
  m.impl("unpack_int4", &unpack_int4_cpu);
}

}  // namespace squash
