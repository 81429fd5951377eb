#!/usr/bin/env bash
# Syntax-checks the CUDA bindings (csrc/ops/cuda/*.cpp) on a machine whose torch has no CUDA:
# they are only compiled for real where torch has CUDA (the GPU machine). Uses a stand-in for
# the one generated c10/cuda header that the CPU wheel lacks (scripts/stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
shopt -s nullglob
files=(csrc/ops/cuda/*.cpp)
[ ${#files[@]} -gt 0 ] || { echo "check_bindings: no CUDA bindings yet"; exit 0; }
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
[ -d "$CUDA_HOME/include" ] || { echo "check_bindings: no CUDA headers; skipping" >&2; exit 0; }
mapfile -t incs < <($PY -c "import torch.utils.cpp_extension as e; print('\n'.join(e.include_paths()))")
abi=$($PY -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
flags=(-std=c++$($PY -c "import inspect, torch.utils.cpp_extension as e; print(20 if '-std=c++20' in inspect.getsource(e) else 17)") -fsyntax-only -DSQUASH_WITH_CUDA=1 -D_GLIBCXX_USE_CXX11_ABI=$abi -Icsrc
       -Iscripts/stubs -isystem "$CUDA_HOME/include")
for i in "${incs[@]}"; do flags+=(-isystem "$i"); done
status=0
for f in "${files[@]}"; do
  if g++ "${flags[@]}" "$f"; then echo "check_bindings: ok   $f"; else echo "check_bindings: FAIL $f"; status=1; fi
done
exit $status
