"""A mapping loaded through Athena: athena-warm against PyAthena's cursors and awswrangler.

    python benchmarks/origin.py [--rows 200000] [--runs 5] [--only NAME,...]

Every reader runs the demo's query on the same moto Athena (the tests' Athena double: DuckDB
computes the result once, moto serves GetQueryResults, and the result CSV is written to S3 as
Athena writes it), in one process, the cases interleaved run by run. Each case goes from
StartQueryExecution to the built ``{customer_id: account_id}`` dict. Printed per reader: the
median and best wall time, the ratio to athena-warm, the AWS API calls of one load by name, and
the peak memory of one load over the process's memory before it (each measured in a fresh
child process: the peak resident set, which sees pyarrow's and pandas' native buffers too).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, scratch

REGION = "us-east-1"
STAGING = "s3://athena-results/bench/"
SQL = "SELECT customer_id, account_id FROM customer_mapping WHERE active"


def setup(rows: int) -> tuple[Any, Callable[[], dict[str, Any]]]:
    """Start moto and the double; return (session, counter reset) with the lake written."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        os.environ[k] = v
    # A moto server in this process: the double edits the same backends it serves, and readers
    # that do not use botocore (pyarrow's S3 client, for ArrowCursor) reach it over HTTP too.
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    import boto3

    from athena_warm._demo import write_sample_data
    from tests.athena_double import AthenaDouble

    lake = scratch("athena-warm-bench-")
    write_sample_data(lake, rows)
    session = boto3.Session(region_name=REGION)
    s3 = session.client("s3")
    s3.create_bucket(Bucket="athena-results")
    calls: collections.Counter[str] = collections.Counter()
    session.events.register("before-call.*.*",
                            lambda model, **_: calls.update([model.name]))
    AthenaDouble(None, s3, str(lake), events=session.events, memo=True)

    def take() -> dict[str, Any]:
        out = dict(calls)
        calls.clear()
        return out

    return session, take


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def readers(session: Any) -> dict[str, Callable[[], dict[Any, Any]]]:
    from athena_warm.adapters.athena import AthenaOrigin

    import athena_warm

    def ours() -> dict[Any, Any]:
        athena_warm.declarations.unregister("bench_mapping")
        athena_warm.Mapping("bench_mapping", sql=SQL, key="customer_id", value="account_id",
                            database="analytics")
        origin = AthenaOrigin(session=session, s3_staging_dir=STAGING, region=REGION)
        return athena_warm.Cache(origin=origin, l2=False).get("bench_mapping")

    def connect() -> Any:
        import pyathena

        return pyathena.connect(s3_staging_dir=STAGING, region_name=REGION, session=session,
                                schema_name="analytics")

    def pyathena_cursor() -> dict[Any, Any]:
        cur = connect().cursor()
        cur.execute(SQL)
        return dict(cur.fetchall())

    def arrow_cursor() -> dict[Any, Any]:
        from pyarrow import fs
        from pyathena.arrow.cursor import ArrowCursor

        if not getattr(fs.S3FileSystem, "_bench", False):  # plumbing: reach the moto server
            real = fs.S3FileSystem

            def to_moto(**kw: Any) -> Any:
                return real(**kw, endpoint_override=os.environ["AWS_ENDPOINT_URL"])

            to_moto._bench = True  # type: ignore[attr-defined]
            fs.S3FileSystem = to_moto

        table = connect().cursor(ArrowCursor).execute(SQL).as_arrow()
        return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))

    def pandas_cursor() -> dict[Any, Any]:
        from pyathena.pandas.cursor import PandasCursor

        df = connect().cursor(PandasCursor).execute(SQL).as_pandas()
        return dict(zip(df.iloc[:, 0], df.iloc[:, 1], strict=True))

    def s3fs_cursor() -> dict[Any, Any]:
        from pyathena.s3fs.cursor import S3FSCursor

        cur = connect().cursor(S3FSCursor)
        cur.execute(SQL)
        return dict(cur.fetchall())

    def wrangler(**kw: Any) -> Callable[[], dict[Any, Any]]:
        def run() -> dict[Any, Any]:
            import awswrangler as wr

            df = wr.athena.read_sql_query(SQL, database="analytics", ctas_approach=False,
                                          s3_output=STAGING, boto3_session=session, **kw)
            return dict(zip(df.iloc[:, 0], df.iloc[:, 1], strict=True))
        return run

    return {
        "athena-warm": ours,
        "pyathena Cursor": pyathena_cursor,
        "pyathena ArrowCursor": arrow_cursor,
        "pyathena PandasCursor": pandas_cursor,
        "pyathena S3FSCursor": s3fs_cursor,
        "awswrangler": wrangler(),
        "awswrangler (cache 15 min)": wrangler(
            athena_cache_settings={"max_cache_seconds": 900}),
    }


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(name: str, rows: int) -> None:
    session, _ = setup(rows)
    fn = readers(session)[name]
    import gc

    fn()  # imports, clients and the first query's one-off costs are not the load's
    del fn
    gc.collect()
    fn = readers(session)[name]
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed goes back to the system
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status("VmRSS")
    result = fn()
    peak = _status("VmHWM") - before
    del result
    gc.collect()
    import tracemalloc

    tracemalloc.start()  # Python's own allocations, exactly: the peak against what is kept
    result = fn()
    kept, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"peak": peak, "n": len(result), "mapping": kept,
                      "traced_peak": traced_peak}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.rows)
        return
    session, take = setup(args.rows)
    cases = readers(session)
    if args.only:
        cases = {k: v for k, v in cases.items() if k in args.only.split(",")}
    expected = None
    api: dict[str, dict[str, Any]] = {}
    for name, fn in list(cases.items()):  # warm up: imports, clients; the answers must agree
        try:
            result = fn()
        except Exception as exc:  # a peer feature moto does not serve
            print(f"({name} not measured: {type(exc).__name__}: {str(exc)[:160]})")
            del cases[name]
            continue
        take()
        fn()
        api[name] = take()
        expected = expected or dict(result)
        assert dict(result) == expected, f"{name} built a different mapping"
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.runs):
        for name, fn in cases.items():
            s = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - s) * 1000)
    memory: dict[str, int] = {}
    mapping_bytes: dict[str, int] = {}
    traced: dict[str, int] = {}
    if not args.no_memory:
        for name in cases:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", name, "--rows", str(args.rows)],
                capture_output=True, text=True, cwd=ROOT, check=False)
            try:
                got = json.loads(out.stdout.strip().splitlines()[-1])
                memory[name], mapping_bytes[name] = got["peak"], got["mapping"]
                traced[name] = got["traced_peak"]
            except (IndexError, ValueError, KeyError):
                print(f"(memory of {name} not measured: {out.stderr.strip()[-300:]})")
    ours = statistics.median(samples["athena-warm"]) if "athena-warm" in samples else None
    print(f"{args.rows:,} rows, median of {args.runs} runs (Python {sys.version.split()[0]})")
    print("| reader | median ms | best ms | x athena-warm | peak RSS MiB | traced peak / kept "
          "| API calls |")
    print("|---|---|---|---|---|---|---|")
    for name, s in samples.items():
        med = statistics.median(s)
        ratio = f"{med / ours:.2f}" if ours else "-"
        peak = f"{memory[name] / 2**20:.0f}" if name in memory else "-"
        share = f"{traced[name] / mapping_bytes[name]:.1f}" if name in memory else "-"
        calls = ", ".join(f"{k} {v}" for k, v in sorted(api[name].items()))
        print(f"| {name} | {med:.0f} | {min(s):.0f} | {ratio} | {peak} | {share} | {calls} |")
    if "athena-warm" in mapping_bytes:
        print(f"(peak RSS: the growth of the resident set during one load, after a warm-up, in "
              f"a fresh process; traced: Python's allocations under tracemalloc, the peak over "
              f"what the load keeps, {mapping_bytes['athena-warm'] / 2**20:.0f} MiB for "
              "athena-warm's mapping; pyarrow's and pandas' native buffers are not traced)")


if __name__ == "__main__":
    main()
