// CPU emulation of the attention_decode kernels: runs the real kernel source one CTA at a time,
// its 128 threads as cooperative fibers (emu_shim.h), on the cases of decode_check.h. It checks
// the index math, masking, split/merge/combine logic, the cp.async group counting (copies run at
// issue, then as late as cp.async.wait_group allows, so a wait count that is too small shows up
// as stale tiles) and shared-memory races through cp.async on a machine without a GPU.
// Build and run: bench/cpp/emu/run.sh.
#include "emu_shim.h"  // first: the kernels' PTX wrappers come from it

#include "attention/decode_kernel.cuh"
#include "decode_check.h"

namespace sa = squash::attention;
using namespace decode_check;

namespace {

sa::AttentionDecodeParams g_params;
template <typename T, int D, int R>
void split_body() {
  sa::attention_decode_split_kernel<T, D, R>(g_params);
}
template <typename T, int D>
void combine_body() {
  sa::attention_decode_combine_kernel<T, D>(g_params);
}

// Mirrors run_attention_decode() in decode_launch_template.cuh.
template <typename T, int D>
void launch(const sa::AttentionDecodeParams& p) {
  g_params = p;
  const int rows = p.seqlen_q * (p.heads_q / p.heads_kv);
  const long ctas = long(sa::decode_row_tiles(rows)) * p.num_splits * p.batch * p.heads_kv;
  const bool four = sa::decode_rows_per_cta(rows) == 4;
  void (*fn)() = four ? split_body<T, D, 4> : split_body<T, D, 8>;
  const size_t smem = four ? sa::DecodeTraits<T, D, 4>::kSmemBytes : sa::DecodeTraits<T, D, 8>::kSmemBytes;
  for (long b = 0; b < ctas; ++b) emu::run_block({unsigned(b), 0, 0}, 128, fn, smem);
  if (p.num_splits > 1) {
    const long rows_all = long(p.batch) * p.heads_q * p.seqlen_q;
    for (long b = 0; b < (rows_all + 3) / 4; ++b)
      emu::run_block({unsigned(b), 0, 0}, 128, combine_body<T, D>);
  }
}

template <typename T>
void launch_dim(const sa::AttentionDecodeParams& p) {
  if (p.head_dim == 64) launch<T, 64>(p);
  else if (p.head_dim == 128) launch<T, 128>(p);
  else launch<T, 256>(p);
}

}  // namespace

int main(int argc, char** argv) {
  const bool all = argc > 1 && std::string(argv[1]) == "--all";
  std::mt19937 rng(1234);
  int failed = 0, n = 0;
  for (bool late : {false, true}) {
    emu::late_copies = late;
    for (const auto& c : check_cases(!all)) {
      const CheckData d = make_check_data(c, rng, 132);
      sa::AttentionDecodeParams p = make_params(c, d);
      std::vector<uint16_t> out(d.vo.size, kNaNBits);
      std::vector<float> lse(std::max(1, c.B * c.Hq * c.Sq), std::nanf(""));
      std::vector<float> ws(d.workspace_bytes / 4 + 4, std::nanf(""));
      p.q = d.q.data(), p.k = d.k.data(), p.v = d.v.data(), p.out = out.data();
      p.lse = lse.data(), p.cache_seqlens = c.lens.data();
      p.workspace = d.workspace_bytes ? ws.data() : nullptr;
      emu::begin_case(d.k, d.v);
      if (c.bf16) launch_dim<__nv_bfloat16>(p);
      else launch_dim<__half>(p);
      const bool ok = verify(c, d, out.data(), lse.data(), late ? "late copies " : "early copies ");
      failed += !(emu::races_ok() && ok);
      ++n;
    }
  }
  std::printf("emulation: %d cases, %d failed\n", n, failed);
  return failed ? 1 : 0;
}
