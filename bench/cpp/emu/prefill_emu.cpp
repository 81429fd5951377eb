// CPU emulation of the attention prefill kernel (csrc/kernels/attention/prefill_kernel.cuh): runs
// the real kernel source one CTA at a time, its threads as cooperative fibers (emu_shim.h, which
// supplies mma.sync, ldmatrix and cp.async per the PTX ISA), on the cases of prefill_check.h,
// compared with FlashAttention's tolerance rule against a float64 reference. Each case runs with
// copies at issue, then with copies as late as cp.async.wait_group allows and the fibers in
// reverse order (other warps ahead); shared-memory races through cp.async/ldmatrix fail a case.
// Build and run: bench/cpp/emu/run.sh.
#include "emu_shim.h"  // first: the kernels' PTX wrappers come from it

#include "attention/prefill_kernel.cuh"
#include "prefill_check.h"

namespace sa = squash::attention;
using namespace prefill_check;

namespace {

sa::AttentionPrefillParams g_params;
template <typename T, int D>
void body() {
  sa::attention_prefill_kernel<T, D>(g_params);
}

// Mirrors run_attention_prefill() in prefill_launch_template.cuh.
template <typename T, int D>
void launch(const sa::AttentionPrefillParams& p) {
  using Tr = sa::PrefillTraits<T, D>;
  g_params = p;
  const unsigned m_blocks = (p.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  for (unsigned x = 0; x < m_blocks * p.batch * p.heads_q; ++x)
    emu::run_block({x, 0, 0}, Tr::kThreads, body<T, D>, Tr::kSmemBytes);
}

template <typename T>
void launch_dim(const sa::AttentionPrefillParams& p) {
  if (p.head_dim == 64) launch<T, 64>(p);
  else if (p.head_dim == 128) launch<T, 128>(p);
  else launch<T, 256>(p);
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  int failed = 0, n = 0;
  for (const auto& c : emu_cases()) {
    const CheckData d = make_check_data(c, rng);
    for (int mode = 0; mode < 2; ++mode) {
      emu::late_copies = emu::reverse_order = mode == 1;
      sa::AttentionPrefillParams p = make_params(c, d);
      std::vector<uint16_t> out(d.vo.size, kNaNBits);
      std::vector<float> lse(std::max<int64_t>(1, d.lse_size), std::nanf(""));
      p.q = d.q.data() + kGuard, p.k = d.k.data() + kGuard, p.v = d.v.data() + kGuard;
      p.out = out.data() + kGuard, p.lse = lse.data();
      if (c.varlen()) p.cu_seqlens_q = d.cu_q.data(), p.cu_seqlens_k = d.cu_k.data();
      emu::begin_case(d.q, d.k, d.v);
      if (c.bf16) launch_dim<__nv_bfloat16>(p);
      else launch_dim<__half>(p);
      const bool ok = verify(c, d, out.data(), lse.data(), mode ? "late+reverse " : "early ");
      failed += !(emu::races_ok() && ok);
      ++n;
    }
  }
  std::printf("prefill emulation: %d runs, %d failed\n", n, failed);
  return failed ? 1 : 0;
}
