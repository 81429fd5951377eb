// norm_launch / norm_select_config: validate the params, pick the vector width from the
// alignment of every pointer and stride, pick the kernel config, dispatch on the dtypes.
#include <cstdint>

#include "norm_dispatch.h"
#include "norm_heuristics.h"
#include "norm_params.h"

namespace squash::norm {
namespace {

bool aligned(const void* ptr, int bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
}

// A tensor accessed in vectors of `vec` elements of `elem` bytes: rows start aligned when the
// base pointer and the row stride are. Accesses wider than 16 bytes are split into 16-byte ones.
bool vec_ok(const void* ptr, int64_t stride, int64_t rows, int vec, int elem) {
  if (ptr == nullptr) return true;
  const int access = vec * elem < 16 ? vec * elem : 16;
  if (!aligned(ptr, access)) return false;
  return rows <= 1 || stride % vec == 0;
}

int pick_vec(const NormParams& p) {
  const int es = dtype_size(p.dtype);
  const int ws = dtype_size(p.wdtype);
  for (int vec = 16 / es; vec > 1; vec /= 2) {
    if (p.hidden % vec != 0) continue;
    if (vec_ok(p.x, p.x_stride, p.rows, vec, es) &&
        vec_ok(p.residual, p.residual_stride, p.rows, vec, es) &&
        vec_ok(p.out, p.out_stride, p.rows, vec, es) &&
        vec_ok(p.residual_out, p.residual_out_stride, p.rows, vec, es) &&
        vec_ok(p.q, p.q_stride, p.rows, vec, 1) && vec_ok(p.weight, 0, 1, vec, ws) &&
        vec_ok(p.bias, 0, 1, vec, ws))
      return vec;
  }
  return 1;
}

bool params_ok(const NormParams& p) {
  if (p.rows < 0 || p.hidden < 1 || p.hidden > 0x7fffffff) return false;
  if (p.kind != Kind::kLayerNorm && p.kind != Kind::kRMSNorm) return false;
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16 && p.dtype != DType::kFloat32)
    return false;
  if (p.wdtype != p.dtype && p.wdtype != DType::kFloat32) return false;
  if (p.x == nullptr) return false;
  if ((p.out == nullptr) == (p.q == nullptr)) return false;  // exactly one output form
  if (p.q != nullptr && p.scales == nullptr) return false;
  if (p.q == nullptr && p.static_scale != nullptr) return false;
  if ((p.residual == nullptr) != (p.residual_out == nullptr)) return false;
  return true;
}

}  // namespace

cudaError_t norm_select_config(const NormParams& p, const NormConfig* force, NormConfig* config) {
  if (!params_ok(p) || config == nullptr) return cudaErrorInvalidValue;
  int vec = pick_vec(p);
  if (force != nullptr && force->vec != 0) {
    if (force->vec < 1 || force->vec > vec || (force->vec & (force->vec - 1)) != 0)
      return cudaErrorInvalidConfiguration;
    vec = force->vec;
  }
  NormConfig c = choose_norm_config(p.hidden, vec);
  if (force != nullptr && force->fallback) {
    make_fallback_config(c);
  } else if (force != nullptr && force->nv != 0) {
    if (force->nv != 1 && force->nv != 2 && force->nv != 4 && force->nv != 8)
      return cudaErrorInvalidConfiguration;
    const int tpr = row_threads_for(p.hidden / vec, force->nv, vec);
    if (tpr == 0) return cudaErrorInvalidConfiguration;  // the row does not fit
    c.nv = force->nv;
    finish_row_config(c, tpr);
  }
  *config = c;
  return cudaSuccess;
}

cudaError_t norm_launch(const NormParams& p, cudaStream_t stream, const NormConfig* force) {
  NormConfig c;
  const cudaError_t err = norm_select_config(p, force, &c);
  if (err != cudaSuccess) return err;
  if (p.rows == 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kFloat16:
      return p.wdtype == DType::kFloat32 ? norm_launch_typed<__half, float>(p, c, stream)
                                         : norm_launch_typed<__half, __half>(p, c, stream);
    case DType::kBFloat16:
      return p.wdtype == DType::kFloat32
                 ? norm_launch_typed<__nv_bfloat16, float>(p, c, stream)
                 : norm_launch_typed<__nv_bfloat16, __nv_bfloat16>(p, c, stream);
    case DType::kFloat32: return norm_launch_typed<float, float>(p, c, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace squash::norm
