#!/usr/bin/env bash
# Builds and runs the host emulation of the GEMM kernels (no GPU needed; see cuda_host_shim.h).
# `bash scripts/emulate/run.sh quick` runs a subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
g++ -std=c++20 -O2 -pthread -Icsrc/kernels -Iscripts/emulate -isystem "$CUDA_HOME/include" \
  scripts/emulate/gemm_emulate.cpp -o "$out/gemm_emulate"
"$out/gemm_emulate" "$@"
