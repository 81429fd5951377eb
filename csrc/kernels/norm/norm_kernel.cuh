// Fused LayerNorm / RMSNorm (+residual, +int8 per-token quant) kernels. Torch-free and free of
// launch syntax (the launchers are in norm_launch_template.cuh).
//
// Design (one code path for all 8 ops; the op flags are runtime, block-uniform branches: the
// kernel is memory bound with ~75 instructions of slack per element at 3 TB/s, so templating
// them would multiply compile time for no measurable gain):
//  * Template parameters: element type T (half, bf16, float), weight/bias type W (T or float),
//    vector width VEC (elements per access: 16 bytes when hidden, strides and pointers allow,
//    else 8/4/2 bytes or scalar) and NV (vectors per thread, 1/2/4/8). No instantiation per
//    hidden size: any hidden runs, the vector width and NV are picked at launch
//    (norm_heuristics.h).
//  * Row kernel (hidden <= 16384 for 16-bit types at 16-byte vectors, <= 16384 fp32, <= 8192
//    scalar): each row is split over threads_per_row threads (a multiple of 32), each holding
//    NV vectors of the row in registers as raw words (lossless: h is rounded to T). All loads of
//    x and residual are issued before the first use, so a thread has 2*NV 16-byte loads in
//    flight; x is read once from DRAM and nothing is re-read. Rows of <= 128 threads share a
//    block (small hidden: one warp per row, 4 rows per block, pure shuffle reductions).
//    Configs by hidden (bf16/fp16, 16-byte vectors): <= 1024: nv 1, <= 128 threads per row;
//    2048: nv 2, 128 threads; 4096: nv 4, 128; 8192: nv 8, 128; 16384: nv 8, 256 threads.
//    ptxas (sm_90a, bf16): nv 1/2/4/8 use 40/56/80/128 registers, no spills; so nv 8 keeps
//    2 (16384) or 4 (8192) blocks per SM, i.e. 64 KB of x loads in flight per SM.
//  * Fallback kernel (longer rows): one row per 512-thread block, looping over the row: pass 1
//    reads x (+residual, writes residual_out), pass 2 (LN) the variance, pass 3 (dynamic quant)
//    the absmax, pass 4 writes; passes 2..4 re-read h with ld.global.cg (the block's row, 32..256
//    KB, stays in L2). Correct for any hidden; about 2x slower per byte than the row kernel.
//  * Statistics in fp32: two-pass from registers (mean, then sum (h - mean)^2): no cancellation
//    and no overflow for fp16 inputs near 65504 (their squares reach 4.3e9, far from FLT_MAX).
//    Reductions: warp shuffles, then one shared-memory step across the warps of a row.
//  * Rounding: per-row scalars use IEEE-rounded intrinsics (__fdiv_rn, __frsqrt_rn), which
//    --use_fast_math does not approximate: mean = sum/H, rstd = 1/sqrt(var+eps) match the fp32
//    CPU reference's formulas up to summation order; per-element math may contract into FMA.
//  * int8 output: the row rule of common/row_quant.h, shared with the CPU op (NaN rows get
//    scale NaN, zero rows stay 0, tiny rows are rescaled by 2^64). The NaN flag is a second
//    row reduction beside absmax (static: the only one). The norm .cu files are built with
//    -ftz=false (cmake/kernels.cmake): y of a row with tiny weights is subnormal, and the
//    flush-to-zero of --use_fast_math would turn that row into zeros where the CPU quantizes it.
//  * Expected bandwidth (to be measured on H100, bench/cpp/norm_bench.cu): bytes per element,
//    16-bit types: LN/RMS 4 (x, out), +residual 8, quant 3 (+residual 7); weight and bias come
//    from L2. Rows of >= 1024 elements x >= 4096 tokens move >= 16 MB, so ~5 us at 3 TB/s; the
//    goal is >= 90% of copy bandwidth there, where launch latency and the last wave start to
//    show for the smallest shapes.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/row_quant.h"
#include "norm_heuristics.h"
#include "norm_params.h"
#include "norm_vec.h"

namespace squash::norm {

// Row geometry of one launch (block-uniform).
struct RowGeom {
  int nvec;  // vectors per row = hidden / VEC
  int tpr;   // threads per row, a multiple of 32
  int wpr;   // warps per row = tpr / 32
  int rpb;   // rows per block
};

template <typename T, typename W, int VEC, int NV>
struct RowKernelTraits {
  static constexpr int kMaxThreads = row_kernel_max_threads(NV, VEC);
  static_assert(VEC >= 1 && VEC * sizeof(T) <= 16, "one access of at most 16 bytes per vector");
  static_assert(NV == 1 || NV == 2 || NV == 4 || NV == 8, "NV in {1, 2, 4, 8}");
  static_assert(sizeof(W) == sizeof(T) || sizeof(W) == 4, "weight is T or float");
  static_assert(kMaxThreads % 32 == 0 && kMaxThreads <= 1024, "whole warps, one block");
};

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class Op>
__device__ __forceinline__ float warp_allreduce(float v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// All-reduce over the wpr consecutive warps of a row (wpr is block-uniform, so every thread of
// the block reaches the barriers). The leading barrier keeps the previous reduction's readers
// ahead of this one's writers of red[].
template <class Op>
__device__ __forceinline__ float row_allreduce(float v, Op op, float* red, int wpr) {
  v = warp_allreduce(v, op);
  if (wpr == 1) return v;
  const int warp = threadIdx.x >> 5;
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[warp] = v;
  __syncthreads();
  const int first = warp - warp % wpr;
  float r = red[first];
  for (int k = 1; k < wpr; ++k) r = op(r, red[first + k]);
  return r;
}

// The static scale's quantization (read once per block); on = false: dynamic or no quant.
struct StaticScale {
  bool on;
  quant::RowQuant rq;
};

__device__ __forceinline__ StaticScale load_static_scale(const float* static_scale,
                                                         bool quant) {
  StaticScale s{false, {}};
  if (quant && static_scale != nullptr) {
    s.on = true;
    s.rq = quant::row_quant(quant::QuantMode::kStatic, 0.f, *static_scale);
  }
  return s;
}

// y = (h - mean) * rstd [* w] [+ b] for one vector (mean = 0 for RMSNorm).
template <typename T, typename W, int VEC>
__device__ __forceinline__ void affine(const Vec<T, VEC>& h, const W* weight, const W* bias,
                                       int v, float mean, float rstd, float (&y)[VEC]) {
  Vec<W, VEC> wv, bv;
  wv.clear();
  bv.clear();
  if (weight != nullptr) wv.load(weight + static_cast<int64_t>(v) * VEC);
  if (bias != nullptr) bv.load(bias + static_cast<int64_t>(v) * VEC);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    float yk = (h.get(k) - mean) * rstd;
    if (weight != nullptr) yk *= wv.get(k);
    if (bias != nullptr) yk += bv.get(k);
    y[k] = yk;
  }
}

// h = round_to_T(h + r), elementwise in fp32.
template <typename T, int VEC>
__device__ __forceinline__ void add_residual(Vec<T, VEC>& h, const Vec<T, VEC>& r) {
#pragma unroll
  for (int k = 0; k < VEC; ++k) h.set(k, h.get(k) + r.get(k));
}

// ---------------------------------------------------------------------------------------------
// Row kernel: the row lives in registers.
template <typename T, typename W, int VEC, int NV>
__global__ void __launch_bounds__(RowKernelTraits<T, W, VEC, NV>::kMaxThreads, 1)
    norm_rows_kernel(const NormParams p, const RowGeom g) {
  __shared__ float red[32];
  const int t = threadIdx.x % g.tpr;
  const int rib = threadIdx.x / g.tpr;
  const bool ln = p.kind == Kind::kLayerNorm;
  const bool has_res = p.residual != nullptr;
  const bool quant = p.q != nullptr;
  const float n = static_cast<float>(p.hidden);
  const W* weight = static_cast<const W*>(p.weight);
  const W* bias = static_cast<const W*>(p.bias);
  const StaticScale ss = load_static_scale(p.static_scale, quant);

  for (int64_t base = static_cast<int64_t>(blockIdx.x) * g.rpb; base < p.rows;
       base += static_cast<int64_t>(gridDim.x) * g.rpb) {
    const int64_t row = base + rib;
    const bool row_ok = row < p.rows;
    const int64_t r = row_ok ? row : 0;

    // 1. h = x (+ residual): every load is issued before the first use or store.
    Vec<T, VEC> h[NV];
    {
      Vec<T, VEC> res[NV];
      const T* xr = static_cast<const T*>(p.x) + r * p.x_stride;
      const T* rr = has_res ? static_cast<const T*>(p.residual) + r * p.residual_stride : nullptr;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = t + i * g.tpr;
        h[i].clear();
        res[i].clear();
        if (row_ok && v < g.nvec) {
          h[i].load(xr + static_cast<int64_t>(v) * VEC);
          if (has_res) res[i].load(rr + static_cast<int64_t>(v) * VEC);
        }
      }
      if (has_res) {
        T* ro = static_cast<T*>(p.residual_out) + r * p.residual_out_stride;
#pragma unroll
        for (int i = 0; i < NV; ++i) {
          const int v = t + i * g.tpr;
          if (row_ok && v < g.nvec) {
            add_residual(h[i], res[i]);
            h[i].store(ro + static_cast<int64_t>(v) * VEC);
          }
        }
      }
    }

    // 2. statistics (fp32, two-pass for LayerNorm). Cleared slots hold 0.0 and add nothing to
    //    the first sum; the centred sum must skip them.
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float f = h[i].get(k);
        s = ln ? s + f : fmaf(f, f, s);
      }
    }
    s = row_allreduce(s, SumOp{}, red, g.wpr);
    float mean = 0.f;
    float var;
    if (ln) {
      mean = __fdiv_rn(s, n);
      float s2 = 0.f;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        if (row_ok && t + i * g.tpr < g.nvec) {
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            const float d = h[i].get(k) - mean;
            s2 = fmaf(d, d, s2);
          }
        }
      }
      var = __fdiv_rn(row_allreduce(s2, SumOp{}, red, g.wpr), n);
    } else {
      var = __fdiv_rn(s, n);  // mean of squares
    }
    const float rstd = __frsqrt_rn(var + p.eps);

    // 3. y in fp32 for the whole thread's part of the row (no stores in this loop, so the
    //    weight/bias loads of all NV vectors can be in flight together), then one store pass.
    float y[NV][VEC];
    float amax = 0.f, nan = 0.f;  // fmaxf ignores NaN, as the rule's absmax does
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int v = t + i * g.tpr;
      if (row_ok && v < g.nvec) {
        affine<T, W, VEC>(h[i], weight, bias, v, mean, rstd, y[i]);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          amax = fmaxf(amax, fabsf(y[i][k]));
          nan = isnan(y[i][k]) ? 1.f : nan;
        }
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) y[i][k] = 0.f;
      }
    }

    if (quant) {
      nan = row_allreduce(nan, MaxOp{}, red, g.wpr);
      quant::RowQuant rq = ss.rq;
      if (!ss.on)
        rq = quant::row_quant(quant::QuantMode::kDynamic, row_allreduce(amax, MaxOp{}, red, g.wpr), 0.f);
      int8_t* qr = p.q + r * p.q_stride;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = t + i * g.tpr;
        if (row_ok && v < g.nvec) {
          QVec<VEC> qv;
          qv.clear();
#pragma unroll
          for (int k = 0; k < VEC; ++k) qv.set_int8(k, rq.quantize(y[i][k]));
          qv.store(qr + static_cast<int64_t>(v) * VEC);
        }
      }
      if (row_ok && t == 0) p.scales[r] = quant::row_scale(rq, nan > 0.f);
    } else {
      T* o = static_cast<T*>(p.out) + r * p.out_stride;
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int v = t + i * g.tpr;
        if (row_ok && v < g.nvec) {
          Vec<T, VEC> ov;
          ov.clear();
#pragma unroll
          for (int k = 0; k < VEC; ++k) ov.set(k, y[i][k]);
          ov.store(o + static_cast<int64_t>(v) * VEC);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Fallback kernel: one row per block (blockDim.x == g.tpr), any hidden. Each thread touches the
// same vectors in every pass, and re-reads h with ld.global.cg (coherent with this kernel's own
// residual_out stores, which a non-coherent ld.global.nc would not be).
template <typename T, typename W, int VEC>
__global__ void __launch_bounds__(kFallbackThreads, 1)
    norm_fallback_kernel(const NormParams p, const RowGeom g) {
  static_assert(VEC >= 1 && VEC * sizeof(T) <= 16, "one access of at most 16 bytes per vector");
  __shared__ float red[32];
  const bool ln = p.kind == Kind::kLayerNorm;
  const bool has_res = p.residual != nullptr;
  const bool quant = p.q != nullptr;
  const float n = static_cast<float>(p.hidden);
  const W* weight = static_cast<const W*>(p.weight);
  const W* bias = static_cast<const W*>(p.bias);
  const StaticScale ss = load_static_scale(p.static_scale, quant);

  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const T* xr = static_cast<const T*>(p.x) + r * p.x_stride;
    const T* hr = xr;  // where h is re-read from
    float s = 0.f;
    if (has_res) {
      const T* rr = static_cast<const T*>(p.residual) + r * p.residual_stride;
      T* ro = static_cast<T*>(p.residual_out) + r * p.residual_out_stride;
      hr = ro;
      for (int v = threadIdx.x; v < g.nvec; v += blockDim.x) {
        Vec<T, VEC> h, rv;
        h.load(xr + static_cast<int64_t>(v) * VEC);
        rv.load(rr + static_cast<int64_t>(v) * VEC);
        add_residual(h, rv);
        h.store(ro + static_cast<int64_t>(v) * VEC);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float f = h.get(k);
          s = ln ? s + f : fmaf(f, f, s);
        }
      }
    } else {
#pragma unroll 4
      for (int v = threadIdx.x; v < g.nvec; v += blockDim.x) {
        Vec<T, VEC> h;
        h.load(xr + static_cast<int64_t>(v) * VEC);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float f = h.get(k);
          s = ln ? s + f : fmaf(f, f, s);
        }
      }
    }
    s = row_allreduce(s, SumOp{}, red, g.wpr);
    float mean = 0.f;
    float var;
    if (ln) {
      mean = __fdiv_rn(s, n);
      float s2 = 0.f;
#pragma unroll 4
      for (int v = threadIdx.x; v < g.nvec; v += blockDim.x) {
        Vec<T, VEC> h;
        h.template load<true>(hr + static_cast<int64_t>(v) * VEC);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float d = h.get(k) - mean;
          s2 = fmaf(d, d, s2);
        }
      }
      var = __fdiv_rn(row_allreduce(s2, SumOp{}, red, g.wpr), n);
    } else {
      var = __fdiv_rn(s, n);
    }
    const float rstd = __frsqrt_rn(var + p.eps);

    if (quant) {
      // NaN is noted in the absmax pass (dynamic) and again in the write pass, where static
      // quantization reduces it (dynamic: already reduced, noting it again changes nothing).
      float nan = 0.f;
      quant::RowQuant rq = ss.rq;
      if (!ss.on) {
        float amax = 0.f;  // fmaxf ignores NaN, as the rule's absmax does
#pragma unroll 4
        for (int v = threadIdx.x; v < g.nvec; v += blockDim.x) {
          Vec<T, VEC> h;
          h.template load<true>(hr + static_cast<int64_t>(v) * VEC);
          float y[VEC];
          affine<T, W, VEC>(h, weight, bias, v, mean, rstd, y);
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            amax = fmaxf(amax, fabsf(y[k]));
            nan = isnan(y[k]) ? 1.f : nan;
          }
        }
        nan = row_allreduce(nan, MaxOp{}, red, g.wpr);
        rq = quant::row_quant(quant::QuantMode::kDynamic, row_allreduce(amax, MaxOp{}, red, g.wpr), 0.f);
      }
      int8_t* qr = p.q + r * p.q_stride;
      for (int v = threadIdx.x; v < g.nvec; v += blockDim.x) {
        Vec<T, VEC> h;
        h.template load<true>(hr + static_cast<int64_t>(v) * VEC);
        float y[VEC];
        affine<T, W, VEC>(h, weight, bias, v, mean, rstd, y);
        QVec<VEC> qv;
        qv.clear();
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          qv.set_int8(k, rq.quantize(y[k]));
          nan = isnan(y[k]) ? 1.f : nan;
        }
        qv.store(qr + static_cast<int64_t>(v) * VEC);
      }
      if (ss.on) nan = row_allreduce(nan, MaxOp{}, red, g.wpr);
      if (threadIdx.x == 0) p.scales[r] = quant::row_scale(rq, nan > 0.f);
    } else {
      T* o = static_cast<T*>(p.out) + r * p.out_stride;
      for (int v = threadIdx.x; v < g.nvec; v += blockDim.x) {
        Vec<T, VEC> h;
        h.template load<true>(hr + static_cast<int64_t>(v) * VEC);
        float y[VEC];
        affine<T, W, VEC>(h, weight, bias, v, mean, rstd, y);
        Vec<T, VEC> ov;
        ov.clear();
#pragma unroll
        for (int k = 0; k < VEC; ++k) ov.set(k, y[k]);
        ov.store(o + static_cast<int64_t>(v) * VEC);
      }
    }
    // The next row's first reduction starts with a barrier, which also orders this row's
    // red[] readers before it.
  }
}

}  // namespace squash::norm
