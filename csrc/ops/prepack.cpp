// The prepack ops (canonical layout <-> the layout of csrc/kernels/gemm/prepacked_layout.h) and the
// CPU references of the prepacked GEMMs.
//
// prepack/unprepack are pure index permutations written with ATen view/permute ops, so one
// implementation runs wherever the weights live (registered for CPU and CUDA below; it runs once
// at load time, so it does not need a kernel of its own). The view shapes spell out the k order
// of prepacked_layout.h; tests/test_prepacked.py checks them against that header's formulas,
// rewritten in Python, and scripts/emulate builds the layout from the same formulas in C++.
//
// The CPU GEMMs unprepack and call the canonical CPU op, so a prepacked GEMM is by construction
// the same function of the canonical weights as w4a16_gemm / w8a16_gemm.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kernels/gemm/prepacked_layout.h"
#include "ops/prepack.h"

namespace squash {
namespace {

namespace pk = gemm::pack;
using OptTensor = std::optional<at::Tensor>;

// int4 tile view: k within a tile = 32 i + 8 t + 4 u + 2 jh + jl (slice i, lane t, mma step u,
// j = 2 jh + jl), column = 8 * tile + g. Canonical order of the dims:
//   [tile n, g, tile k, i, t, u, jh, jl]
// prepacked order (lane = 4 g + t, word i, nibble p = 4 jl + 2 u + jh):
//   [tile n, tile k, g, t, i, jl, u, jh]
constexpr int64_t kInt4Perm[] = {0, 2, 1, 4, 3, 7, 5, 6};
constexpr int64_t kInt4Inverse[] = {0, 2, 1, 4, 3, 6, 7, 5};
// int8 tile view: k = 32 s + 8 t + 4 u + j (slice s, lane t, step u, byte j); canonical
//   [tile n, g, tile k, s, t, u, j], prepacked [tile n, tile k, g, t, s, u, j] (word i = 2 s + u).
// Swapping two pairs of dims is its own inverse.
constexpr int64_t kInt8Perm[] = {0, 2, 1, 4, 3, 5, 6};

// Group tensors: [N, G] -> [N/8, G, 8] (the 8 channels of a tile contiguous per group) and back.
// Always a new tensor (clone): an output aliasing an input would break the ops' schemas.
at::Tensor pack_groups(const at::Tensor& t) {
  const int64_t N = t.size(0), G = t.size(1);
  return t.reshape({N / pk::kTileN, pk::kTileN, G}).permute({0, 2, 1}).clone(at::MemoryFormat::Contiguous);
}
at::Tensor unpack_groups(const at::Tensor& t) {
  const int64_t NT = t.size(0), G = t.size(1);
  return t.permute({0, 2, 1}).reshape({NT * pk::kTileN, G}).clone(at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> prepack_int4_weight(const at::Tensor& qweight,
                                                                    const at::Tensor& scales,
                                                                    const OptTensor& zeros,
                                                                    int64_t group_size) {
  check_prepack_int4_args(qweight, scales, zeros, group_size);
  const int64_t N = qweight.size(0), K = 2 * qweight.size(1), KT = pk::tiles_k(4, K);
  // 4-bit values [N, K] (element 2j = low nibble of byte j), zero-padded to whole k tiles.
  at::Tensor v = at::stack({qweight.bitwise_and(15), qweight.bitwise_right_shift(4)}, -1).reshape({N, K});
  v = at::constant_pad_nd(v, {0, KT * pk::tile_k(4) - K}, 0);
  v = v.view({N / pk::kTileN, pk::kTileN, KT, 4, 4, 2, 2, 2}).permute(kInt4Perm).contiguous();
  v = v.view({N / pk::kTileN, KT, pk::kTileBytes, 2});
  const at::Tensor packed = v.select(-1, 0).bitwise_or(v.select(-1, 1).bitwise_left_shift(4));
  const at::Tensor z = zeros ? *zeros : at::full_like(scales, 8, scales.options().dtype(at::kByte));
  return {packed.contiguous(), pack_groups(scales.to(at::kFloat)), pack_groups(z)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> unprepack_int4_weight(const at::Tensor& packed,
                                                                      const at::Tensor& scales,
                                                                      const OptTensor& zeros,
                                                                      int64_t k, int64_t group_size) {
  check_unprepack_int4_args(packed, scales, zeros, k, group_size);
  const int64_t NT = packed.size(0), KT = packed.size(1), N = NT * pk::kTileN;
  at::Tensor v = at::stack({packed.bitwise_and(15), packed.bitwise_right_shift(4)}, -1);
  v = v.view({NT, KT, pk::kTileN, 4, 4, 2, 2, 2}).permute(kInt4Inverse);
  v = v.reshape({N, KT * pk::tile_k(4)}).narrow(1, 0, k).reshape({N, k / 2, 2});
  const at::Tensor qweight = v.select(-1, 0).bitwise_or(v.select(-1, 1).bitwise_left_shift(4));
  const at::Tensor z = zeros ? unpack_groups(*zeros)
                             : at::full({N, scales.size(1)}, 8, scales.options().dtype(at::kByte));
  return {qweight.contiguous(), unpack_groups(scales), z};
}

std::tuple<at::Tensor, at::Tensor> prepack_int8_weight(const at::Tensor& qweight, const at::Tensor& scales) {
  check_prepack_int8_args(qweight, scales);
  const int64_t N = qweight.size(0), K = qweight.size(1), KT = pk::tiles_k(8, K);
  // q + 128 as uint8 (flipping the sign bit), padded with q = 0.
  at::Tensor v = qweight.view(at::kByte).bitwise_xor(128);
  v = at::constant_pad_nd(v, {0, KT * pk::tile_k(8) - K}, 128);
  v = v.view({N / pk::kTileN, pk::kTileN, KT, 2, 4, 2, 4}).permute(kInt8Perm).contiguous();
  return {v.view({N / pk::kTileN, KT, pk::kTileBytes}), scales.to(at::kFloat).clone(at::MemoryFormat::Contiguous)};
}

std::tuple<at::Tensor, at::Tensor> unprepack_int8_weight(const at::Tensor& packed, const at::Tensor& scales,
                                                         int64_t k) {
  check_unprepack_int8_args(packed, scales, k);
  const int64_t NT = packed.size(0), KT = packed.size(1), N = NT * pk::kTileN;
  at::Tensor v = packed.view({NT, KT, pk::kTileN, 4, 2, 2, 4}).permute(kInt8Perm);
  v = v.reshape({N, KT * pk::tile_k(8)}).narrow(1, 0, k).bitwise_xor(128);
  return {v.contiguous().view(at::kChar), scales.clone()};
}

// ---- CPU references of the prepacked GEMMs: unprepack, then the canonical CPU op ----

at::Tensor w4a16_gemm_prepacked_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                    const OptTensor& zeros, int64_t k, int64_t group_size,
                                    const OptTensor& bias) {
  check_w4a16_prepacked_args(x, packed, scales, zeros, k, group_size, bias);
  const auto [q, s, z] = unprepack_int4_weight(packed, scales, zeros, k, group_size);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("squash::w4a16_gemm", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const OptTensor&, int64_t, const OptTensor&)>();
  return op.call(x, q, s, zeros ? OptTensor(z) : std::nullopt, group_size, bias);
}

at::Tensor w8a16_gemm_prepacked_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                    int64_t k, const OptTensor& bias) {
  check_w8a16_prepacked_args(x, packed, scales, k, bias);
  const auto [q, s] = unprepack_int8_weight(packed, scales, k);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("squash::w8a16_gemm", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                               const OptTensor&)>();
  return op.call(x, q, s, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(squash, CPU, m) {
  m.impl("prepack_int4_weight", &prepack_int4_weight);
  m.impl("unprepack_int4_weight", &unprepack_int4_weight);
  m.impl("prepack_int8_weight", &prepack_int8_weight);
  m.impl("unprepack_int8_weight", &unprepack_int8_weight);
  m.impl("w4a16_gemm_prepacked", &w4a16_gemm_prepacked_cpu);
  m.impl("w8a16_gemm_prepacked", &w8a16_gemm_prepacked_cpu);
}

// The layout transforms are device-agnostic ATen code: the same functions serve CUDA tensors
// (load time: weights may already sit on the GPU). Registered only in builds with the CUDA ops,
// so that has_cuda_kernel / cuda_available keep meaning "this build runs squash kernels on GPUs".
#ifdef SQUASH_WITH_CUDA
TORCH_LIBRARY_IMPL(squash, CUDA, m) {
  m.impl("prepack_int4_weight", &prepack_int4_weight);
  m.impl("unprepack_int4_weight", &unprepack_int4_weight);
  m.impl("prepack_int8_weight", &prepack_int8_weight);
  m.impl("unprepack_int8_weight", &unprepack_int8_weight);
}
#endif

}  // namespace squash
