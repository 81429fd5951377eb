"""Runs the benchmark suites and writes the results file (format: bench/results/README.md).

    python3 -m bench.run                          # all suites on the GPU, < 4 min on an H100
    python3 -m bench.run --suites w4a16,norm --quick
    python3 -m bench.run --device cpu             # the CPU suites (cpu_woq, cpu_decode), real shapes
    python3 -m bench.run --device cpu --quick --suites w4a16,norm   # GPU suites' smoke test here
    python3 -m bench.run --dry-run                # list every case with an H100 roofline time guess

Every suite gets a share of --budget-s (BUDGET_WEIGHT; unused time carries over to later
suites); past its share a suite stops and logs what it left out. The results file is rewritten
after every suite, so a run killed by a timeout keeps what it measured. Exit status: 0 when the
run finished and every squash impl it tried ran; 1 when a squash impl failed, the CUDA context
was lost, or nothing was recorded; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import sys
import traceback
from pathlib import Path

import torch

from . import harness
from .harness import Context, DeviceLost, Timer, log
from .suites import CPU_ORDER, ORDER, load


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--suites", help=f"comma-separated subset of {','.join(ORDER)} (GPU; default on cuda) or "
                                    f"{','.join(CPU_ORDER)} (CPU; default on cpu)")
    p.add_argument("--quick", action="store_true", help="fewer shapes per suite")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: the CPU suites, or the GPU suites as a smoke test with tiny shapes")
    p.add_argument("--dry-run", action="store_true",
                   help="execute nothing: list the cases with a roofline time estimate for an H100")
    p.add_argument("--out", help="results file (default: bench/results/<date>_<gpu>.json on cuda, "
                                 "out/bench_<device>.json otherwise)")
    p.add_argument("--budget-s", type=float, default=210.0,
                   help="time for all selected suites together (default 210)")
    p.add_argument("--no-squash", action="store_true", help="do not import squash_ops (peers only)")
    p.add_argument("--require-squash", action="store_true",
                   help="exit 1 at once unless squash_ops imports with its CUDA ops (bench/gpu_check.sh)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; CPU suites)")
    args = p.parse_args(argv)
    default = CPU_ORDER if args.device == "cpu" and not args.dry_run else ORDER
    args.suites = [s.strip() for s in (args.suites or ",".join(default)).split(",") if s.strip()]
    unknown = [s for s in args.suites if s not in ORDER + CPU_ORDER]
    if unknown:
        p.error(f"unknown suite(s) {unknown}; known: {', '.join(ORDER + CPU_ORDER)}")
    cpu_suites = [s for s in args.suites if s in CPU_ORDER]
    if cpu_suites and (args.device != "cpu" or args.dry_run):
        p.error(f"the CPU suites {cpu_suites} run with --device cpu (and not in --dry-run)")
    return args


def cpu_smoke(args) -> bool:
    """--device cpu with GPU suites: their smoke test (tiny shapes), not a benchmark."""
    return args.device == "cpu" and any(s in ORDER for s in args.suites)


def import_squash(required: bool, device: str) -> bool:
    """Imports squash_ops if it can; the peers are measured either way unless ``required``, where
    a missing squash_ops (or one without CUDA ops on a GPU) is a failure, not a peers-only run."""
    try:
        import squash_ops
        log(f"squash_ops {getattr(squash_ops, '__version__', '?')} from {os.path.dirname(squash_ops.__file__)}")
    except Exception as e:  # noqa: BLE001
        log(f"{'FAIL' if required else 'NOTE'} squash_ops not importable ({type(e).__name__}: {e})"
            f"{'' if required else '; measuring the peers only'}")
        return not required
    if required and device == "cuda" and not squash_ops.cuda_available():
        log("FAIL squash_ops has no CUDA ops in this build: its records would be the CPU reference")
        return False
    return True


def default_out(device: str, smoke: bool) -> Path:
    root = Path(__file__).resolve().parents[1]
    # Run from an installed wheel (squash_ops.bench in site-packages, no pyproject.toml above it),
    # results go to the current directory, never into site-packages.
    results, scratch = (root / "bench" / "results", root / "out") if (root / "pyproject.toml").is_file() \
        else (Path.cwd(), Path.cwd())
    date = f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}"
    if device == "cuda":
        name = harness.gpu_slug(torch.cuda.get_device_name(torch.cuda.current_device()))
        return results / f"{date}_{name}.json"
    if device == "cpu" and not smoke:
        return results / f"{date}_{harness.cpu_slug()}.json"
    return scratch / f"bench_{device}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "meta" if args.dry_run else args.device
    if device == "cuda" and not torch.cuda.is_available():
        log("bench.run: no CUDA device here; use --device cpu for the smoke test or --dry-run")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_squash and not import_squash(args.require_squash, device):
        return 1
    torch.manual_seed(0)
    ctx = Context(device=device, quick=args.quick, timer=Timer(device))
    if device == "meta":
        meta = {"device": "dry run (nothing executed; median_us = H100 roofline guess)", "torch": torch.__version__,
                "cuda": torch.version.cuda or "none", "commit": harness.git_commit(),
                "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    else:
        meta = harness.make_meta(device, smoke=cpu_smoke(args))
    out = Path(args.out) if args.out else default_out(device, cpu_smoke(args))
    if out.exists() and not out.is_file():
        log(f"bench.run: --out {out} exists and is not a regular file")
        return 2
    log(f"bench.run: device {meta['device']} | torch {meta['torch']} | cuda {meta['cuda']} | commit {meta['commit']}"
        f" | suites {','.join(args.suites)}{' (quick)' if args.quick else ''} | budget {args.budget_s:.0f} s"
        f" | out {out}")

    # `timeout` sends SIGTERM first: stop like Ctrl-C, so the summary and the file still come out.
    old_handler = signal.signal(signal.SIGTERM, _interrupt)
    t_start = ctx.now()
    try:
        with torch.inference_mode():
            timings, fatal, interrupted = run_suites(ctx, args.suites, args.budget_s, out, meta)
    finally:
        signal.signal(signal.SIGTERM, old_handler)

    log("")
    log(harness.summary(ctx.records) if ctx.records else "no records")
    log("== suites ==")
    for name, secs, n, status in timings:
        log(f"  {name:<11} {status:<5} {secs:7.1f} s {n:5d} records")
    est = " (dry-run estimate for an H100)" if device == "meta" else ""
    log(f"  total {ctx.now() - t_start:.1f} s{est}, {len(ctx.records)} records, {ctx.skips} skips, "
        f"{ctx.squash_errors} squash failures -> {out}")
    problems = _write(out, meta, ctx)
    for p in problems[:20]:
        log(f"FORMAT {p}")
    if len(problems) > 20:
        log(f"FORMAT ... {len(problems) - 20} more problems")
    errors = sum(1 for t in timings if t[3] != "ok")
    if fatal or interrupted or errors or problems or ctx.squash_errors or not ctx.records:
        return 1
    return 0


def run_suites(ctx: Context, suites: list[str], budget_s: float, out: Path, meta: dict):
    """Runs the suites in order; returns ([(suite, seconds, records, status)], fatal, interrupted)."""
    weights = {s: load(s).BUDGET_WEIGHT for s in suites}
    total_w = sum(weights.values())
    t_start, spent_w = ctx.now(), 0.0
    timings, fatal = [], None
    for name in suites:
        spent_w += weights[name]
        # Deadline = the suite's cumulative share: time a suite leaves unused carries over.
        ctx.begin_suite(t_start + budget_s * spent_w / total_w)
        t0, n0 = ctx.now(), len(ctx.records)
        log(f"=== suite {name} (until +{ctx.deadline - t_start:.0f} s) ===")
        status = "ok"
        try:
            load(name).run(ctx)
        except DeviceLost as e:
            fatal, status = str(e), "FATAL"
            log(f"FATAL {name}: {fatal}")
        except KeyboardInterrupt as e:
            log(f"INTERRUPTED ({e}) during suite {name}: writing what was measured")
            timings.append((name, ctx.now() - t0, len(ctx.records) - n0, "INTERRUPTED"))
            return timings, fatal, True
        except Exception as e:  # noqa: BLE001  (a broken suite must not stop the others)
            status = "ERROR"
            log(f"ERROR suite {name} stopped: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
        timings.append((name, ctx.now() - t0, len(ctx.records) - n0, status))
        _write(out, meta, ctx)
        if fatal:
            break
    return timings, fatal, False


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _write(out: Path, meta: dict, ctx: Context) -> list[str]:
    """(Re)writes the results file; returns its format problems (reported once, at the end)."""
    return harness.write_results(out, meta, ctx.records)


if __name__ == "__main__":
    sys.exit(main())
