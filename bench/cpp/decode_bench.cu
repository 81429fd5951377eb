// Torch-free check and microbenchmark of attention_decode (csrc/kernels/attention).
//
// Build (repository root; not part of CMake; bench/gpu_check.sh's stage cpp builds it against
// the kernel library and runs --check and compute-sanitizer, CPP_TIMINGS=1 adds --bench --sweep):
//   mkdir -p build && nvcc -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr \
//     -gencode=arch=compute_90a,code=sm_90a -Icsrc/kernels bench/cpp/decode_bench.cu \
//     csrc/kernels/attention/decode_launch.cu csrc/kernels/attention/decode_hd*.cu \
//     -o build/decode_bench
// Run:
//   build/decode_bench --check          correctness vs a float64 host reference (exit 1 on failure)
//   build/decode_bench --quick          a subset of --check, for compute-sanitizer memcheck/racecheck
//   build/decode_bench --bench          GB/s vs device copy bandwidth, heuristic num_splits
//   build/decode_bench --bench --sweep  also every forced num_splits in {1,2,4,...,128}
//   (no flag: --check then --bench)
//
// Bench cases: Sq 1, 32 q heads / 8 kv heads, head_dim 128, bf16 (fp16 with --fp16), KV length
// 1k..64k, batch 1..64, every sequence at the full length. Bytes = K + V actually read + q + out
// + lse. Inputs are rotated over enough copies (>= 256 MB in all) that L2 (50 MB) cannot serve
// them; each time is the median of per-launch cudaEvent intervals.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/decode.h"
#include "bench_util.cuh"
#include "decode_check.h"

namespace sa = squash::attention;

namespace {

using namespace decode_check;
using bench_util::fill;
using bench_util::median_ms;

int sm_count() {
  int dev = 0, n = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

// ------------------------------------------------------------------------------------------
// --check (cases, data and reference in decode_check.h)
// ------------------------------------------------------------------------------------------
bool run_check_case(const CheckCase& c, std::mt19937& rng, int num_sms, bool pdl) {
  const CheckData d = make_check_data(c, rng, num_sms);
  sa::AttentionDecodeParams p = make_params(c, d);
  const size_t lse_n = std::max<size_t>(1, size_t(c.B) * c.Hq * c.Sq);
  uint16_t *dq, *dk, *dv, *dout;
  float* dlse;
  int32_t* dlens;
  void* dws = nullptr;
  CK(cudaMalloc(&dq, d.vq.size * 2));
  CK(cudaMalloc(&dk, d.vk.size * 2));
  CK(cudaMalloc(&dv, d.vv.size * 2));
  CK(cudaMalloc(&dout, d.vo.size * 2));
  CK(cudaMalloc(&dlse, lse_n * 4));
  CK(cudaMalloc(&dlens, std::max(1, c.B) * 4));
  if (d.workspace_bytes) CK(cudaMalloc(&dws, d.workspace_bytes));
  CK(cudaMemcpy(dq, d.q.data(), d.vq.size * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dk, d.k.data(), d.vk.size * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, d.v.data(), d.vv.size * 2, cudaMemcpyHostToDevice));
  if (c.B) CK(cudaMemcpy(dlens, c.lens.data(), c.B * 4, cudaMemcpyHostToDevice));
  // Poison the outputs and the workspace: anything not written stays NaN.
  CK(cudaMemset(dout, 0xff, d.vo.size * 2));
  CK(cudaMemset(dlse, 0xff, lse_n * 4));
  if (dws) CK(cudaMemset(dws, 0xff, d.workspace_bytes));
  p.q = dq, p.k = dk, p.v = dv, p.out = dout, p.lse = dlse, p.cache_seqlens = dlens;
  p.workspace = dws;
  p.pdl = pdl && p.num_splits > 1;
  CK(sa::attention_decode(p, c.bf16 ? sa::DecodeDtype::kBFloat16 : sa::DecodeDtype::kFloat16, 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> hout(d.vo.size);
  std::vector<float> hlse(lse_n);
  CK(cudaMemcpy(hout.data(), dout, d.vo.size * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hlse.data(), dlse, lse_n * 4, cudaMemcpyDeviceToHost));
  const bool ok = verify(c, d, hout.data(), hlse.data(), p.pdl ? "pdl " : "");
  CK(cudaFree(dq));
  CK(cudaFree(dk));
  CK(cudaFree(dv));
  CK(cudaFree(dout));
  CK(cudaFree(dlse));
  CK(cudaFree(dlens));
  if (dws) CK(cudaFree(dws));
  return ok;
}

int run_checks(bool quick) {
  std::mt19937 rng(1234);
  const int sms = sm_count();
  int dev = 0, cc_major = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, dev));
  const auto cases = check_cases(quick);
  int failed = 0;
  // On sm_90+ every other case launches the combine kernel with PDL.
  for (size_t i = 0; i < cases.size(); ++i)
    failed += !run_check_case(cases[i], rng, sms, cc_major >= 9 && i % 2 == 1);
  std::printf("check: %zu cases, %d failed\n", cases.size(), failed);
  return failed ? 1 : 0;
}

// ------------------------------------------------------------------------------------------
// --bench
// ------------------------------------------------------------------------------------------
double copy_gbps() {
  const size_t bytes = size_t(1) << 30;
  void *a, *b;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  CK(cudaMemset(a, 1, bytes));
  const float ms = median_ms([&](int) { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 20);
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
}

int run_bench(bool bf16, bool sweep) {
  const int sms = sm_count();
  int dev = 0, cc_major = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, dev));
  const double copy = copy_gbps();
  std::printf("device copy bandwidth (read + write): %.0f GB/s, %d SMs\n", copy, sms);
  std::printf("%-6s %-7s %-7s %-4s %-10s %-10s %-9s %s\n", "batch", "kv_len", "splits", "pdl", "us",
              "GB/s", "%copy", "");
  const int Hq = 32, Hkv = 8, D = 128, Sq = 1;
  const size_t kMinRotateBytes = size_t(256) << 20, kMaxBytes = size_t(24) << 30;
  for (int B : {1, 4, 16, 64})
    for (int L : {1024, 2048, 4096, 8192, 16384, 32768, 65536}) {
      const size_t kv_elems = size_t(B) * L * Hkv * D;  // one of K, V
      const size_t case_bytes = 2 * kv_elems * 2;
      if (case_bytes > kMaxBytes) continue;
      const int copies = int(std::max<size_t>(1, (kMinRotateBytes + case_bytes - 1) / case_bytes));
      const size_t q_elems = size_t(B) * Sq * Hq * D;
      uint16_t *k, *v, *q, *out;
      float* lse;
      int32_t* lens;
      CK(cudaMalloc(&k, kv_elems * 2 * copies));
      CK(cudaMalloc(&v, kv_elems * 2 * copies));
      CK(cudaMalloc(&q, q_elems * 2));
      CK(cudaMalloc(&out, q_elems * 2));
      CK(cudaMalloc(&lse, size_t(B) * Hq * Sq * 4));
      CK(cudaMalloc(&lens, B * 4));
      fill(k, kv_elems * copies, 1, bf16);
      fill(v, kv_elems * copies, 2, bf16);
      fill(q, q_elems, 3, bf16);
      std::vector<int32_t> hl(B, L);
      CK(cudaMemcpy(lens, hl.data(), B * 4, cudaMemcpyHostToDevice));

      sa::AttentionDecodeParams p;
      p.q = q, p.out = out, p.lse = lse, p.cache_seqlens = lens;
      p.q_head_stride = D, p.q_seq_stride = Hq * D, p.q_batch_stride = int64_t(Sq) * Hq * D;
      p.out_head_stride = D, p.out_seq_stride = Hq * D, p.out_batch_stride = int64_t(Sq) * Hq * D;
      p.k_head_stride = p.v_head_stride = D;
      p.k_seq_stride = p.v_seq_stride = int64_t(Hkv) * D;
      p.k_batch_stride = p.v_batch_stride = int64_t(L) * Hkv * D;
      p.batch = B, p.seqlen_q = Sq, p.heads_q = Hq, p.heads_kv = Hkv, p.head_dim = D;
      p.max_seqlen = L;
      p.softmax_scale = 1.f / std::sqrt(float(D));
      p.causal = true;
      const int heuristic = sa::decode_num_splits(B, Hkv, sa::decode_row_tiles(Sq * Hq / Hkv), L, D, sms);
      std::vector<int> split_list = {heuristic};
      if (sweep)
        for (int s = 1; s <= sa::kDecodeMaxSplits; s *= 2)
          if (s != heuristic) split_list.push_back(s);
      void* ws = nullptr;
      CK(cudaMalloc(&ws, std::max<size_t>(16, sa::attention_decode_workspace_bytes(
                                                  B, Hq, Sq, D, sa::kDecodeMaxSplits))));
      p.workspace = ws;
      const double bytes = double(case_bytes) + 2.0 * q_elems * 2 + double(B) * Hq * Sq * 4;
      const int iters = case_bytes > (size_t(1) << 30) ? 10 : 50;
      for (int s : split_list) {
        for (int pdl = 0; pdl <= (s > 1 && cc_major >= 9 ? 1 : 0); ++pdl) {
          p.num_splits = s;
          p.pdl = pdl != 0;
          const float ms = median_ms(
              [&](int it) {
                const int c = it % copies;
                p.k = k + c * kv_elems;
                p.v = v + c * kv_elems;
                CK(sa::attention_decode(p, bf16 ? sa::DecodeDtype::kBFloat16
                                                : sa::DecodeDtype::kFloat16, 0));
              },
              iters);
          const double gbps = bytes / (ms * 1e-3) / 1e9;
          std::printf("%-6d %-7d %-7d %-4d %-10.1f %-10.0f %-9.1f %s\n", B, L, s, pdl, ms * 1e3,
                      gbps, 100.0 * gbps / copy, s == heuristic && !pdl ? "(default)" : "");
        }
      }
      CK(cudaDeviceSynchronize());
      CK(cudaFree(k));
      CK(cudaFree(v));
      CK(cudaFree(q));
      CK(cudaFree(out));
      CK(cudaFree(lse));
      CK(cudaFree(lens));
      CK(cudaFree(ws));
    }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = false, quick = false, bench = false, sweep = false, bf16 = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") check = true;
    else if (a == "--quick") quick = check = true;
    else if (a == "--bench") bench = true;
    else if (a == "--sweep") sweep = bench = true;
    else if (a == "--fp16") bf16 = false;
    else {
      std::fprintf(stderr, "usage: %s [--check] [--quick] [--bench] [--sweep] [--fp16]\n", argv[0]);
      return 2;
    }
  }
  if (!check && !bench) check = bench = true;
  bench_util::print_device();
  int rc = 0;
  if (check) rc = run_checks(quick);
  if (bench) rc |= run_bench(bf16, sweep);
  return rc;
}
