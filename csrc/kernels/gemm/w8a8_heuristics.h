// Which CUTLASS kernel runs a W8A8 GEMM: the config table and a pure function of (M, N, K, arch),
// in the style of heuristics.h (FA3 tile_size.h). Torch-free and CUDA-free: the binding, the C++
// benchmark (bench/cpp/w8a8_bench.cu) and the kernels read the same table, so a config forced
// with SQUASH_W8A8_CONFIG is exactly one the heuristic could pick.
//
// NOT YET MEASURED on our kernels: each branch says what it expects and what measurement would
// justify it; bench/cpp/w8a8_bench --sweep times every config on every shape for the first run.
#pragma once

namespace squash::gemm {

// Two families: CUTLASS 2.x (mma.sync, cp.async multistage) built for sm_80 and sm_90a, so the
// A100 path can also be forced and tested on an H100; CUTLASS 3.x (TMA + wgmma, warp-specialized)
// built for sm_90a only (*_sm90.cu).
enum class W8A8Config : int {
  kSm80_32x64 = 0,
  kSm80_64x128,
  kSm80_128x256,
  kSm90_64x64,
  kSm90_64x128,
  kSm90_128x128,
  kSm90_128x256,
  kCount
};

struct W8A8ConfigInfo {
  const char* name;
  int arch;    // 80: runs on sm_80 and sm_90 (compiled for both); 90: sm_90a only
  int tile_m;  // CTA tile (for the heuristic and the benchmark's tile counts)
  int tile_n;
  int tile_k;
};

constexpr W8A8ConfigInfo kW8A8Configs[] = {
    {"sm80_32x64", 80, 32, 64, 128},
    {"sm80_64x128", 80, 64, 128, 128},
    {"sm80_128x256", 80, 128, 256, 64},
    {"sm90_64x64", 90, 64, 64, 256},
    {"sm90_64x128", 90, 64, 128, 128},
    {"sm90_128x128", 90, 128, 128, 128},
    {"sm90_128x256", 90, 128, 256, 128},
};
static_assert(sizeof(kW8A8Configs) / sizeof(kW8A8Configs[0]) == static_cast<int>(W8A8Config::kCount),
              "one W8A8ConfigInfo per W8A8Config");

constexpr const W8A8ConfigInfo& w8a8_config_info(W8A8Config c) {
  return kW8A8Configs[static_cast<int>(c)];
}

// Whether a config's kernels can run on a device of compute capability `arch` (major*10+minor).
// The 3.x kernels are sm_90a cubins (wgmma/TMA): Hopper only, not later majors. The 2.x kernels
// are sm_80 and sm_90a cubins, so they load on 8.x and 9.0 (not on 10.x+: no cubin, no PTX).
constexpr bool w8a8_config_runs_on(W8A8Config c, int arch) {
  return w8a8_config_info(c).arch == 90 ? arch == 90 : (arch >= 80 && arch < 100);
}

// CUTLASS's int8 operands need 16-byte (16-element) aligned rows (cp.async / TMA), the outputs
// 16-byte vectors (8 fp16/bf16 elements): K % 16 == 0 and N % 8 == 0. The binding checks these
// with a message; the CPU op takes any K, N.
constexpr int kW8A8AlignK = 16;
constexpr int kW8A8AlignN = 8;

// The heuristic. M, N, K: the GEMM (M tokens); arch: compute capability of the device.
constexpr W8A8Config choose_w8a8_config(int M, int N, int K, int arch) {
  (void)K;  // K only changes the length of the main loop, not which tile fills the GPU best
  if (arch == 90) {
    // M <= 64 (decode): the weight stream (N*K bytes) is the cost. One 64-row wgmma tile covers
    // every token; the N tile decides how many SMs stream weights: 64-wide gives N/64 CTAs
    // (64 for N = 4096 on 132 SMs), so narrow layers take 64x64 and wide ones (N >= 8192: >= 64
    // CTAs of 128 columns) the 64x128 tile with its longer wgmma per barrier. vLLM's tuned H100
    // int8 dispatch makes the same split (64x64 under 8192 columns). Justified when
    // w8a8_bench --sweep shows sm90_64x64 >= sm90_64x128 for N < 8192 at M <= 64.
    if (M <= 64) return N < 8192 ? W8A8Config::kSm90_64x64 : W8A8Config::kSm90_64x128;
    // 64 < M <= 128: two 64-row tiles; ping-pong hides each warp group's epilogue behind the
    // other's MMA. Justified when it beats sm90_128x128 at M = 128 in the sweep.
    if (M <= 128) return W8A8Config::kSm90_64x128;
    // Mid M: while the 128x256 tiles would not fill one wave of 132 SMs (M = 1024, N = 4096 is
    // 128 of them), 128x128 ping-pong tiles (twice as many) keep every SM busy.
    if (static_cast<long long>((M + 127) / 128) * ((N + 255) / 256) < 132)
      return W8A8Config::kSm90_128x128;
    // Large M (prefill, the >= 1.7x cuBLAS bf16 goal at M >= 2048): 128x256 cooperative tiles
    // (two consumer warp groups, 64x256 each) read 25% fewer operand bytes per MMA than 128x128.
    // Justified by the w8a8 suite vs sm90_128x128 (forced) at M = 2048..8192.
    return W8A8Config::kSm90_128x256;
  }
  // sm_80 (A100, 108 SMs). M <= 32: a 32-row tile wastes the fewest MMA rows and 64-wide
  // columns give N/64 CTAs (64 for N = 4096); six cp.async stages keep ~70 KB of weights in
  // flight per SM for the weight stream.
  if (M <= 32) return W8A8Config::kSm80_32x64;
  // M <= 128: 64x128 tiles (4 warps of 32x64) still give >= 1 CTA per SM for N >= 4096 at M = 128.
  if (M <= 128) return W8A8Config::kSm80_64x128;
  // Large M: CUTLASS's default int8 sm_80 GEMM (128x256x64, 8 warps of 64x64, 3 stages), the
  // config its profiler found fastest for large int8 problems on A100.
  return W8A8Config::kSm80_128x256;
}

// What the heuristic picks for the TARGETS shapes, checked at compile time so a change to the
// rules shows up here.
static_assert(choose_w8a8_config(1, 4096, 4096, 90) == W8A8Config::kSm90_64x64);
static_assert(choose_w8a8_config(16, 28672, 8192, 90) == W8A8Config::kSm90_64x128);
static_assert(choose_w8a8_config(128, 4096, 4096, 90) == W8A8Config::kSm90_64x128);
static_assert(choose_w8a8_config(1024, 4096, 4096, 90) == W8A8Config::kSm90_128x128);
static_assert(choose_w8a8_config(2048, 4096, 4096, 90) == W8A8Config::kSm90_128x256);
static_assert(choose_w8a8_config(1, 4096, 4096, 80) == W8A8Config::kSm80_32x64);
static_assert(choose_w8a8_config(4096, 4096, 4096, 80) == W8A8Config::kSm80_128x256);
static_assert(w8a8_config_runs_on(W8A8Config::kSm80_64x128, 90) &&
              !w8a8_config_runs_on(W8A8Config::kSm90_64x64, 80));

}  // namespace squash::gemm
