// Stand-in for the header that only CUDA builds of torch generate; used by
// scripts/check_bindings.sh to syntax-check the CUDA bindings against the CPU torch wheel.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
