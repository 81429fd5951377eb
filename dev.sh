#!/usr/bin/env bash
# The two commands of the README: `./dev.sh demo` (main job) and `./dev.sh test` (test suite).
# Both run scripts/setup.sh first, which installs only what is missing and builds in place.
set -euo pipefail
cd "$(dirname "$0")"
cmd=${1:-}
shift || true
case "$cmd" in
  demo) bash scripts/setup.sh && exec "${PYTHON:-python3}" -m squash_ops.demo "$@" ;;
  test) bash scripts/setup.sh && exec "${PYTHON:-python3}" -m pytest -q "$@" ;;
  *) echo "usage: ./dev.sh demo|test [args]" >&2; exit 2 ;;
esac
