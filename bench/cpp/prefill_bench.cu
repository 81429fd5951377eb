// Torch-free check and microbenchmark of attention_prefill (csrc/kernels/attention/prefill.h).
//
// Build (repository root; not part of CMake; bench/gpu_check.sh's stage cpp builds it against
// the kernel library and runs --check and compute-sanitizer, CPP_TIMINGS=1 adds --bench):
//   mkdir -p build && nvcc -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr \
//     -gencode=arch=compute_90a,code=sm_90a -Icsrc/kernels -Ibench/cpp bench/cpp/prefill_bench.cu \
//     csrc/kernels/attention/prefill_launch.cu csrc/kernels/attention/prefill_hd*.cu \
//     -o build/prefill_bench
// Run:
//   build/prefill_bench --check    correctness vs a float64 host reference with FlashAttention's
//                                  tolerance rule (prefill_check.h; exit 1 on failure)
//   build/prefill_bench --quick    the emulation's cases only, for compute-sanitizer
//   build/prefill_bench --bench    TFLOP/s sweep (bf16; --fp16 for fp16)
//   (no flag: --check then --bench)
//
// Bench cases: batch x seq = 16k tokens, seq 512..16k, 32 q heads = 32 kv heads (the attn_fwd
// suite's shapes), head dim 64 and 128, causal and not. FLOPs = 4 * B * H * S^2 * D, halved for
// causal (FlashAttention's convention). Each time is the median of per-launch cudaEvent
// intervals; q/k/v (128 MB each at D 128) are far larger than L2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "attention/prefill.h"
#include "bench_util.cuh"
#include "prefill_check.h"

namespace sa = squash::attention;

namespace {

using namespace prefill_check;
using bench_util::fill;
using bench_util::median_ms;

sa::AttentionDtype dtype_of(bool bf16) {
  return bf16 ? sa::AttentionDtype::kBFloat16 : sa::AttentionDtype::kFloat16;
}

template <typename V>
typename V::value_type* to_device(const V& h) {
  typename V::value_type* d = nullptr;
  const size_t bytes = std::max<size_t>(16, h.size() * sizeof(typename V::value_type));
  CK(cudaMalloc(&d, bytes));
  if (!h.empty()) CK(cudaMemcpy(d, h.data(), h.size() * sizeof(h[0]), cudaMemcpyHostToDevice));
  return d;
}

// ------------------------------------------------------------------------------------------
// --check (cases, data and reference in prefill_check.h)
// ------------------------------------------------------------------------------------------
bool run_check_case(const PrefillCase& c, std::mt19937& rng) {
  const CheckData d = make_check_data(c, rng);
  sa::AttentionPrefillParams p = make_params(c, d);
  const size_t lse_n = std::max<int64_t>(1, d.lse_size);
  uint16_t *dq = to_device(d.q), *dk = to_device(d.k), *dv = to_device(d.v);
  // Outputs start as NaN (0xff bytes): every value the kernel does not write stays NaN, and the
  // check requires exactly the output rows to be written.
  const std::vector<uint16_t> out_poison(d.vo.size, kNaNBits);
  const std::vector<float> lse_poison(lse_n, std::nanf(""));
  uint16_t* dout = to_device(out_poison);
  float* dlse = to_device(lse_poison);
  int32_t *dcq = nullptr, *dck = nullptr;
  if (c.varlen()) dcq = to_device(d.cu_q), dck = to_device(d.cu_k);
  p.q = dq + kGuard, p.k = dk + kGuard, p.v = dv + kGuard, p.out = dout + kGuard, p.lse = dlse;
  p.cu_seqlens_q = dcq, p.cu_seqlens_k = dck;
  CK(sa::attention_prefill(p, dtype_of(c.bf16), 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> hout(d.vo.size);
  std::vector<float> hlse(lse_n);
  CK(cudaMemcpy(hout.data(), dout, d.vo.size * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hlse.data(), dlse, lse_n * 4, cudaMemcpyDeviceToHost));
  const bool ok = verify(c, d, hout.data(), hlse.data(), "");
  for (void* ptr : {static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv),
                    static_cast<void*>(dout), static_cast<void*>(dlse), static_cast<void*>(dcq),
                    static_cast<void*>(dck)})
    if (ptr) CK(cudaFree(ptr));
  return ok;
}

int run_checks(bool quick) {
  std::mt19937 rng(1234);
  const auto cases = quick ? emu_cases() : gpu_cases();
  int failed = 0;
  for (const auto& c : cases) failed += !run_check_case(c, rng);
  std::printf("check: %zu cases, %d failed\n", cases.size(), failed);
  return failed ? 1 : 0;
}

// ------------------------------------------------------------------------------------------
// --bench
// ------------------------------------------------------------------------------------------
int run_bench(bool bf16) {
  const int kTokens = 16384, H = 32;
  std::printf("%-6s %-6s %-4s %-7s %-10s %-8s\n", "batch", "seq", "D", "causal", "us",
              "TFLOP/s");
  for (int D : {128, 64}) {
    const size_t elems = size_t(kTokens) * H * D;
    uint16_t *q, *k, *v, *out;
    float* lse;
    CK(cudaMalloc(&q, elems * 2));
    CK(cudaMalloc(&k, elems * 2));
    CK(cudaMalloc(&v, elems * 2));
    CK(cudaMalloc(&out, elems * 2));
    CK(cudaMalloc(&lse, size_t(kTokens) * H * 4));
    fill(q, elems, 1, bf16);
    fill(k, elems, 2, bf16);
    fill(v, elems, 3, bf16);
    for (int S = 512; S <= 16384; S *= 2)
      for (bool causal : {false, true}) {
        const int B = kTokens / S;
        sa::AttentionPrefillParams p;
        p.q = q, p.k = k, p.v = v, p.out = out, p.lse = lse;
        p.q_head_stride = p.k_head_stride = p.v_head_stride = p.out_head_stride = D;
        p.q_seq_stride = p.k_seq_stride = p.v_seq_stride = p.out_seq_stride = int64_t(H) * D;
        p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.out_batch_stride =
            int64_t(S) * H * D;
        p.lse_batch_stride = int64_t(H) * S, p.lse_head_stride = S;
        p.batch = B, p.seqlen_q = S, p.seqlen_k = S, p.heads_q = H, p.heads_kv = H;
        p.head_dim = D;
        p.softmax_scale = 1.f / std::sqrt(float(D));
        p.causal = causal;
        const float ms =
            median_ms([&](int) { CK(sa::attention_prefill(p, dtype_of(bf16), 0)); }, 20);
        const double flops = 4.0 * B * H * double(S) * S * D / (causal ? 2 : 1);
        std::printf("%-6d %-6d %-4d %-7d %-10.1f %-8.1f\n", B, S, D, int(causal), ms * 1e3,
                    flops / (ms * 1e-3) / 1e12);
      }
    CK(cudaDeviceSynchronize());
    for (void* ptr : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v),
                      static_cast<void*>(out), static_cast<void*>(lse)})
      CK(cudaFree(ptr));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false, quick = false, bench = false, bf16 = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") check = true;
    else if (a == "--quick") quick = check = true;
    else if (a == "--bench") bench = true;
    else if (a == "--fp16") bf16 = false;
    else {
      std::fprintf(stderr, "usage: %s [--check] [--quick] [--bench] [--fp16]\n", argv[0]);
      return 2;
    }
  }
  if (!check && !bench) check = bench = true;
  bench_util::print_device();
  int rc = 0;
  if (check) rc = run_checks(quick);
  if (bench) rc |= run_bench(bf16);
  return rc;
}
