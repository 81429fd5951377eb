#!/usr/bin/env bash
# From a fresh clone of HEAD: build the wheel with the documented flags, install it into a venv that
# cannot see this checkout, and run the installed package (import, squash bench dry run) away from
# any source tree. ~3 min on the 2-core machine with MAX_JOBS=1 (a CPU torch builds no CUDA code).
#
# The venv gets the machine's packages (torch, transformers, ...) through PYTHONPATH, from a folder
# of links that leaves squash_ops out: with --system-site-packages an editable install of the
# checkout (its .pth import hook) would win over the wheel and the check would test the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone -q . "$work/clone"
(cd "$work/clone" && MAX_JOBS=${MAX_JOBS:-1} CMAKE_BUILD_PARALLEL_LEVEL=${MAX_JOBS:-1} \
  $PY -m pip wheel -q . --no-build-isolation --no-deps -c constraints.txt -w "$work/dist")

site=$($PY -c "import site; print(site.getsitepackages()[0])")
mkdir "$work/deps"
for f in "$site"/*; do
  case $(basename "$f") in squash_ops*|_editable_*squash_ops*|*.pth) ;; *) ln -s "$f" "$work/deps/";; esac
done
$PY -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps "$work"/dist/squash_ops-*.whl

mkdir "$work/run" && cd "$work/run"
export PYTHONPATH="$work/deps"
"$work/venv/bin/python" -c "import squash_ops, squash_ops.bench.run; assert squash_ops.__file__.startswith('$work/venv'), squash_ops.__file__"
"$work/venv/bin/squash" bench --dry-run --suites w8a16 --quick --out dry.json
"$work/venv/bin/python" -c "import json; assert json.load(open('dry.json'))['records']"
echo "check_wheel: the wheel builds, installs and runs squash bench outside the checkout"
