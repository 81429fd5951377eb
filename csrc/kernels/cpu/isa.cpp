#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace squash::cpu_kernels {
namespace {

Isa detect() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // AVX-512 paths use F + BW + VL (+ VNNI where the kernel says so); AVX2 paths also use FMA/F16C.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

int from_env() {
  const char* v = std::getenv("SQUASH_CPU_ISA");
  if (!v || !*v) return -1;
  if (!std::strcmp(v, "scalar")) return static_cast<int>(Isa::kScalar);
  if (!std::strcmp(v, "avx2")) return static_cast<int>(Isa::kAvx2);
  if (!std::strcmp(v, "avx512")) return static_cast<int>(Isa::kAvx512);
  return -1;  // unknown names are ignored; python/squash_ops/cpu.py validates the variable
}

std::atomic<int> g_override{-2};  // -2: not yet read from the environment

}  // namespace

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() {
  int o = g_override.load(std::memory_order_relaxed);
  if (o == -2) {
    const int env = from_env();
    o = env <= static_cast<int>(detected_isa()) ? env : -1;
    g_override.store(o, std::memory_order_relaxed);
  }
  return o < 0 ? detected_isa() : static_cast<Isa>(o);
}

bool set_isa_override(int isa) {
  if (isa > static_cast<int>(detected_isa()) || isa < -1) return false;
  g_override.store(isa, std::memory_order_relaxed);
  return true;
}

namespace {

// The extension flags the kernels ask about, read once (cpuid).
struct Extensions {
  bool vnni = false, bf16 = false, vbmi = false;
};

const Extensions& extensions() {
  static const Extensions e = [] {
    Extensions x;
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    x.vnni = __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
    x.bf16 = __builtin_cpu_supports("avx512bf16") != 0;
    x.vbmi = __builtin_cpu_supports("avx512vbmi") != 0;
#endif
    return x;
  }();
  return e;
}

}  // namespace

bool has_vnni() { return extensions().vnni; }
bool has_avx512_bf16() { return extensions().bf16; }
bool has_avx512_vbmi() { return extensions().vbmi; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace squash::cpu_kernels
