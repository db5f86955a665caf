"""Cold start: what importing athena_warm costs, next to what it avoids importing.

    python benchmarks/import_time.py [--runs 11]

Each figure is the median wall time of ``python -c "import X"`` in a fresh process, minus the
median of ``python -c "pass"``. athena_warm imports none of the heavy modules until first use.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

MODULES = ["athena_warm", "aws_lambda_powertools", "boto3", "pyathena", "duckdb", "sqlglot",
           "redis", "pyarrow", "pandas"]


def wall(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    base = statistics.median(wall("pass") for _ in range(args.runs))
    print(f"import cost over a bare interpreter ({base * 1000:.0f} ms), median of {args.runs} "
          f"fresh processes; Python {sys.version.split()[0]}")
    for mod in MODULES:
        try:
            t = statistics.median(wall(f"import {mod}") for _ in range(args.runs))
        except subprocess.CalledProcessError:
            print(f"  {mod:24s} not installed")
            continue
        print(f"  {mod:24s} {(t - base) * 1000:7.1f} ms")
    probe = (f"import sys, athena_warm; heavy = [m for m in {MODULES[1:]!r} "
             "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    print(f"heavy modules loaded by 'import athena_warm': {out.stdout.strip()}")


if __name__ == "__main__":
    main()
