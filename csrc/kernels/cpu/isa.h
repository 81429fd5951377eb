// Runtime ISA selection for the torch-free CPU kernels.
//
// Every CPU kernel has a portable scalar path (any target) and vectorized paths compiled with
// their own flags in files named *_avx2.cpp / *_avx512.cpp (CMakeLists.txt adds the -m flags per
// file, so the rest of the library stays runnable on any x86-64). The dispatcher picks the best
// path the running CPU supports once per process; SQUASH_CPU_ISA=scalar|avx2|avx512 forces a
// lower one (tests force each path the machine can run; a forced path the CPU lacks is refused).
#pragma once

namespace squash::cpu_kernels {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// What this CPU can run (cpuid + OS support for the register state), independent of overrides.
Isa detected_isa();

// The ISA kernels dispatch to: detected_isa(), lowered by SQUASH_CPU_ISA or set_isa_override.
Isa active_isa();

// Force an ISA for this process (tests); -1 clears the override. Returns false (and changes
// nothing) when the CPU cannot run the requested ISA.
bool set_isa_override(int isa);

const char* isa_name(Isa isa);

// The CPU has an int8 dot-product instruction (AVX-512 VNNI or AVX-VNNI: vpdpbusd, 4 products
// summed into int32 without intermediate saturation).
bool has_vnni();

// The CPU has AVX-512 BF16 (vdpbf16ps: bf16 pair dot products accumulated in float32).
bool has_avx512_bf16();

// The CPU has AVX-512 VBMI (vpermb: any byte of a register to any byte, in one op).
bool has_avx512_vbmi();

}  // namespace squash::cpu_kernels
