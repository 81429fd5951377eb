"""Verdicts of bench/gpu_check.sh: each one fails (exit 1) when what it read did not prove the
thing it is named for, so that no stage of a GPU run passes vacuously.

    python3 -m bench.gpu_verdict ops                      # squash_ops has its CUDA ops registered
    python3 -m bench.gpu_verdict cpp LOG [--tool memcheck|racecheck]
                                                          # a bench/cpp --check (under a sanitizer)
    python3 -m bench.gpu_verdict pytest LOG [--tool memcheck]
                                                          # a pytest run (under a sanitizer)
    python3 -m bench.gpu_verdict merge OUT.json PART.json...
                                                          # the suites' result files as one

Skipped GPU tests are refused by the pytest plugin bench/pytest_gpu_check.py, which sees markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The summary line each sanitizer tool prints when it ran to the end, and what a clean run says.
SANITIZER_SUMMARY = {
    "memcheck": (re.compile(r"^========= ERROR SUMMARY: (\d+) errors?", re.M), "errors"),
    "racecheck": (re.compile(r"^========= RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)", re.M),
                  "hazards"),
}

# What each bench/cpp self-check prints at its end (see each bench's main): a count of cases
# checked and of failures. A check that checked nothing proves nothing.
CPP_RESULT = [
    re.compile(r"^check: (?P<n>\d+) cases, (?P<bad>\d+) (?:failed|wrong|failures)\s*$", re.M),
    re.compile(r"^(?P<ok>\d+)/(?P<n>\d+) checks passed\s*$", re.M),
    re.compile(r"^(?P<all>all outputs checked: ok|SOME OUTPUTS WRONG)\s*$", re.M),
]


def cuda_ops_expected() -> list[str]:
    """The ops the CUDA bindings register (m.impl("name", ...) in csrc/ops/cuda/*.cpp)."""
    names = []
    for f in sorted((REPO / "csrc" / "ops" / "cuda").glob("*.cpp")):
        names += re.findall(r'm\.impl\("(\w+)"', f.read_text())
    return names


def verdict_ops() -> list[str]:
    import torch

    import squash_ops

    expected = cuda_ops_expected()
    problems = [] if expected else ["no m.impl(...) found in csrc/ops/cuda/*.cpp"]
    if not torch.cuda.is_available():
        problems.append("torch sees no CUDA device")
    missing = [op for op in expected if not squash_ops.has_cuda_kernel(op)]
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} CUDA ops not registered: {', '.join(missing)}"
                        " (the build linked no CUDA kernels)")
    else:
        print(f"ops: {len(expected)} CUDA ops registered: {', '.join(expected)}")
    return problems


def sanitizer_problems(text: str, tool: str) -> list[str]:
    regex, what = SANITIZER_SUMMARY[tool]
    found = regex.findall(text)
    if not found:
        return [f"no '{tool}' summary line: compute-sanitizer did not run to the end"]
    problems = []
    for m in found:  # one summary per sanitized process (--target-processes all)
        counts = [int(x) for x in (m if isinstance(m, tuple) else (m,))]
        if any(counts):
            problems.append(f"{tool} reported {counts[0]} {what}" + (f" ({counts[1]} errors, {counts[2]} warnings)"
                                                                       if len(counts) == 3 else ""))
    return problems


def verdict_cpp(text: str, tool: str | None) -> list[str]:
    problems = sanitizer_problems(text, tool) if tool else []
    results = [m for r in CPP_RESULT for m in r.finditer(text)]
    if not results:
        return problems + ["no self-check result line: the check did not finish"]
    for m in results:
        d = m.groupdict()
        if d.get("all"):
            if d["all"] != "all outputs checked: ok":
                problems.append(m.group(0).strip())
        elif int(d["n"]) == 0:
            problems.append(f"'{m.group(0).strip()}': nothing was checked")
        elif int(d.get("bad") or 0) or ("ok" in d and d["ok"] is not None and d["ok"] != d["n"]):
            problems.append(m.group(0).strip())
    return problems


def verdict_pytest(text: str, tool: str | None) -> list[str]:
    problems = sanitizer_problems(text, tool) if tool else []
    lines = re.findall(r"^=* ?(.*\bin [\d.]+s\b.*?) ?=*$", text, re.M)
    if not lines:
        return problems + ["no pytest summary line: the run did not finish"]
    last = lines[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", last)}
    if counts.get("passed", 0) == 0:
        problems.append(f"no test passed ({last})")
    if counts.get("failed", 0) or counts.get("error", 0) or counts.get("errors", 0):
        problems.append(last)
    return problems


def merge(out: Path, parts: list[Path]) -> list[str]:
    from bench.harness import write_results

    meta, records = None, []
    for p in parts:
        if not p.is_file():
            continue
        obj = json.loads(p.read_text())
        meta = meta or obj["meta"]
        records += obj["records"]
    if meta is None:
        return ["no suite wrote a results file"]
    return write_results(out, meta, records)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.gpu_verdict", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ops")
    for name in ("cpp", "pytest"):
        s = sub.add_parser(name)
        s.add_argument("log", type=Path)
        s.add_argument("--tool", choices=sorted(SANITIZER_SUMMARY))
    s = sub.add_parser("merge")
    s.add_argument("out", type=Path)
    s.add_argument("parts", type=Path, nargs="*")
    a = p.parse_args(argv)
    if a.cmd == "ops":
        problems = verdict_ops()
    elif a.cmd == "merge":
        problems = merge(a.out, a.parts)
    else:
        text = a.log.read_text(errors="replace") if a.log.is_file() else ""
        problems = (verdict_cpp if a.cmd == "cpp" else verdict_pytest)(text, a.tool)
    for prob in problems:
        print(f"VERDICT FAIL {a.cmd} {getattr(a, 'log', '')}: {prob}")
    if not problems and a.cmd in ("cpp", "pytest"):
        print(f"VERDICT ok {a.cmd} {a.log}" + (f" ({a.tool} clean)" if a.tool else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
