"""``athena-warm demo``: the seed document's trick, done by athena-warm, on a laptop.

Writes a customer mapping table (200,000 rows, fixed seed) as Parquet, declares it, and runs an
example handler through a sequence of invocations in two separate processes: two Lambda
"containers", each with its own L1. Time inside the containers is simulated (an injected clock)
so a TTL of one hour expires in a second of real time; latencies are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from ._declare import Mapping

MAPPING = "customer_mapping"
TTL = "1h"
SEED = 42

# Simulated seconds since the demo started at which each container is invoked.
SCHEDULES: dict[str, list[float]] = {
    "A": [0, 1, 30, 600, 3540, 3660, 3720],
    "B": [300, 301, 1800, 3700],
}


def write_sample_data(root: Path, rows: int) -> Path:
    """``root/analytics/customer_mapping/part-0.parquet``: ``rows`` customers, fixed seed."""
    import duckdb

    table_dir = root / "analytics" / MAPPING
    table_dir.mkdir(parents=True, exist_ok=True)
    target = table_dir / "part-0.parquet"
    con = duckdb.connect()
    con.execute(
        f"""COPY (
            SELECT 'C' || lpad(i::VARCHAR, 7, '0')                                AS customer_id,
                   'A' || lpad((hash(i, {SEED}) % 50000)::VARCHAR, 5, '0')        AS account_id,
                   (hash(i, {SEED + 1}) % 20) <> 0                                 AS active
            FROM range({int(rows)}) t(i)
        ) TO '{target}' (FORMAT parquet)"""
    )
    con.close()
    return target


def declare() -> Mapping:
    return Mapping(
        MAPPING,
        sql="SELECT customer_id, account_id FROM customer_mapping WHERE active",
        database="analytics",
        key="customer_id",
        value="account_id",
        ttl=TTL,
        ttl_jitter=0,  # exact expiry, so the demo's timeline is the same every run
        max_stale="7d",
    )


class _SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_container(name: str, origin: str) -> None:
    """One container: a process with its own L1 running the example function
    (deploy/functions/customer_lookup.py, installed as athena_warm.examples.customer_lookup)
    through the local invoker, on its schedule. Prints one ``DEMO {json}`` line per invocation."""
    import athena_warm
    from athena_warm.local import invoke

    os.environ.update({
        "MAPPING_TTL": TTL, "MAPPING_TTL_JITTER": "0",  # the same timeline every run
        "ATHENA_WARM_PREWARM": "false",  # so the first invocation shows the origin load
        "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING", "ATHENA_WARM_LOG_LEVEL": "WARNING",
    })
    clock = _SimulatedClock()
    athena_warm.configure(origin=origin, l2=False, clock=clock)
    from athena_warm.examples import customer_lookup as app

    for at in SCHEDULES[name]:
        clock.now = at
        customer = f"C{int(at * 7919) % 200_000:07d}"
        start = time.perf_counter()
        out = invoke(app.handler, {"customer_id": customer}, timeout=30,
                     function_name="customer-lookup")
        latency = time.perf_counter() - start
        print("DEMO " + json.dumps({"container": name, "pid": os.getpid(), "at": at,
                                    "latency_s": latency, **out}), flush=True)


def _fmt_at(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"+{h}h{m:02d}m{s:02d}s" if h else (f"+{m}m{s:02d}s" if m else f"+{s}s")


def _fmt_latency(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds * 1000:,.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def run_demo(*, rows: int = 200_000, workdir: str | None = None, out: TextIO = sys.stdout) -> int:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="athena-warm-demo-"))
    t0 = time.perf_counter()
    target = write_sample_data(root, rows)
    out.write(
        f"athena-warm demo\n"
        f"  table   analytics.{MAPPING}: {rows:,} customers (seed {SEED}) written to {target}\n"
        f"          in {time.perf_counter() - t0:.1f} s\n"
        f"  origin  duckdb:{root} (the same SQL would run on Athena)\n"
        f"  mapping {MAPPING}: customer_id -> account_id, ttl {TTL}\n"
        f"  handler deploy/functions/customer_lookup.py (Powertools Logger, Metrics, Tracer and\n"
        f"          the warm_mappings middleware), run by athena_warm.local.invoke\n"
        f"  two containers (separate processes, each with its own L1); time inside them is\n"
        f"  simulated, latencies are real\n\n"
    )
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "athena_warm._demo", "container", name, f"duckdb:{root}"],
            stdout=subprocess.PIPE, text=True,
        )
        for name in SCHEDULES
    }
    records: list[dict[str, Any]] = []
    failed = False
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            out.write(f"container {name} failed with exit code {proc.returncode}\n")
            failed = True
        records += [json.loads(line[5:]) for line in stdout.splitlines()
                    if line.startswith("DEMO {")]
    records.sort(key=lambda r: (r["at"], r["container"]))
    header = ("container", "pid", "invocation", "at", "tier", "latency", "executions",
              "lookup")
    table = [header]
    for seq, r in enumerate(records, 1):
        note = ""
        if r["tier"] == "origin":
            note = "  <- first load in this container" if r["executions"] == 1 else \
                "  <- ttl expired: reloaded"
        table.append((
            r["container"], str(r["pid"]), f"#{seq}", _fmt_at(r["at"]), r["tier"],
            _fmt_latency(r["latency_s"]), str(r["executions"]),
            f"{r['customer_id']} -> {r['account_id'] or '(inactive: not in mapping)'}{note}",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
        out.write(f"{cells}  {row[-1]}\n")
    hits = [r["latency_s"] for r in records if r["tier"] == "l1"]
    loads = [r["latency_s"] for r in records if r["tier"] == "origin"]
    if hits and loads:
        hits.sort()
        loads.sort()
        out.write(
            f"\n{len(loads)} origin loads (median {_fmt_latency(loads[len(loads) // 2])}), "
            f"{len(hits)} L1 hits (median {_fmt_latency(hits[len(hits) // 2])}); each "
            "container loaded on its own first call: L1 is per container.\n"
            "A shared L2 (Redis/Valkey) lets the second container skip its origin load.\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "container":
        run_container(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m athena_warm._demo container NAME ORIGIN")
