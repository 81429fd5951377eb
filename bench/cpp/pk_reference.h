// Host-side reference of the prepacked GEMM, shared by bench/cpp/pk_bench.cu (--check on a GPU)
// and scripts/emulate/pk_emulate.cpp (the same kernel on the host): random canonical weights,
// their prepacked form built byte by byte from the formulas of prepacked_layout.h (independently
// of the ops' view/permute code, which tests/test_prepacked.py checks against the same
// formulas), and the float64 value of a weight. Plain C++, no CUDA.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "gemm/prepacked_layout.h"

namespace pkref {

namespace pack = squash::gemm::pack;

struct Weights {
  int N = 0, K = 0, g = 0, G = 0, bits = 4;
  std::vector<int> codes;            // [N, K]: int4 0..15, int8 -128..127
  std::vector<float> scales;         // [N, G]
  std::vector<uint8_t> zeros;        // [N, G] (int4)
  std::vector<uint8_t> packed;       // [N/8, ceil(K / tile_k), 512]
  std::vector<float> scales_packed;  // int4 [N/8, G, 8]; int8 [N]
  std::vector<uint8_t> zeros_packed; // int4 [N/8, G, 8]
};

// group -1: per-channel (int8: always). Scales ~0.05 (int4) / ~0.005 (int8), zeros 0..15.
inline Weights make_weights(int bits, int N, int K, int group, std::mt19937& rng) {
  Weights w;
  w.N = N;
  w.K = K;
  w.bits = bits;
  w.g = group < 0 ? K : group;
  w.G = K / w.g;
  std::uniform_int_distribution<int> u4(0, 15), u8(-128, 127);
  std::uniform_real_distribution<float> us(0.5f, 2.0f);
  w.codes.resize(static_cast<size_t>(N) * K);
  for (auto& c : w.codes) c = bits == 4 ? u4(rng) : u8(rng);
  w.scales.resize(static_cast<size_t>(N) * w.G);
  for (auto& s : w.scales) s = us(rng) * (bits == 4 ? 0.05f : 0.005f);
  w.zeros.resize(w.scales.size());
  for (auto& z : w.zeros) z = static_cast<uint8_t>(u4(rng));
  const int KT = pack::tiles_k(bits, K), NT = N / pack::kTileN;
  w.packed.resize(static_cast<size_t>(NT) * KT * pack::kTileBytes);
  for (int tn = 0; tn < NT; ++tn)
    for (int ku = 0; ku < KT; ++ku)
      for (int b = 0; b < pack::kTileBytes; ++b) {
        const int n = tn * pack::kTileN + pack::byte_col(b);
        auto code = [&](int k) { return k < K ? w.codes[static_cast<size_t>(n) * K + k] : 0; };
        int v;
        if (bits == 4) {
          const int k0 = ku * pack::tile_k(4);
          v = code(k0 + pack::int4_byte_k(b, 0)) | code(k0 + pack::int4_byte_k(b, 1)) << 4;
        } else {
          v = code(ku * pack::tile_k(8) + pack::int8_byte_k(b)) + 128;  // padding: q = 0
        }
        w.packed[(static_cast<size_t>(tn) * KT + ku) * pack::kTileBytes + b] = static_cast<uint8_t>(v);
      }
  if (bits == 8) {
    w.scales_packed = w.scales;
    return w;
  }
  w.scales_packed.resize(w.scales.size());
  w.zeros_packed.resize(w.scales.size());
  for (int n = 0; n < N; ++n)
    for (int gi = 0; gi < w.G; ++gi) {
      const size_t dst = (static_cast<size_t>(n / pack::kTileN) * w.G + gi) * pack::kTileN + n % pack::kTileN;
      w.scales_packed[dst] = w.scales[static_cast<size_t>(n) * w.G + gi];
      w.zeros_packed[dst] = w.zeros[static_cast<size_t>(n) * w.G + gi];
    }
  return w;
}

// (q - z) * s of W[n, k] in float64 (int8: q * s); zeros == false means z = 8 (int4).
inline double weight_value(const Weights& w, int n, int k, bool zeros) {
  const size_t gi = static_cast<size_t>(n) * w.G + k / w.g;
  const int z = w.bits == 4 ? (zeros ? w.zeros[gi] : 8) : 0;
  return static_cast<double>(w.codes[static_cast<size_t>(n) * w.K + k] - z) * w.scales[gi];
}

}  // namespace pkref
