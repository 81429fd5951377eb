"""Benchmarks of squash_ops against the peers of TARGETS.md (run: ``python3 -m bench.run``).

`bench.harness` times calls and writes the results file; `bench.suites` holds one module per
suite; `bench/gpu_check.sh` is the one command the lent GPU machine runs (build, tests,
benchmarks, compute-sanitizer). Results are committed unedited under `bench/results/`.
"""
