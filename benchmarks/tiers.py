"""The shared tiers side by side: what a cold load, a warm check and a refresh cost on each.

    python benchmarks/tiers.py [--rows 200000] [--runs 7] [--url redis://...]

For Redis (a local server), S3 (a moto server on loopback) and the node tier (files in a
temporary directory), with a mapping of --rows rows:

  cold load      an empty L1 reading the copy from the tier (Cache.get: generation, header,
                 copy, checks, decode): milliseconds, and requests to the tier
  warm check     a container asking for the generation (once per check_interval)
  refresh        the TTL ended: lease, query, publish, release (the origin answers at once)

Requests: the tier's calls for Redis and files (a Redis call is one or two round trips), the
HTTP requests for S3.

The request counts are what a real deployment pays and waits for; the milliseconds of S3 are
moto's on this machine, not S3's (AWS documents tens of milliseconds per small request in a
region, see the README), and Redis's are a local server's, without a network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import ROOT, demo_rows, redis_url, scratch

BUCKET = "athena-warm-bench"


def moto_server() -> tuple[str, subprocess.Popen[bytes]]:
    import requests

    from tests.servers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.moto_serial", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/moto-api/", timeout=1)
            return url, proc
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                sys.exit("moto server did not start")
            time.sleep(0.1)


class Counted:
    """A tier that counts the calls made to it (each is one request on S3; on Redis one round
    trip) and passes them through."""

    def __init__(self, tier: Any) -> None:
        self.tier, self.calls = tier, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.tier, name)
        if not callable(attr) or name.startswith("_") or name in ("key", "reachable"):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            return attr(*a, **kw)

        return call


def s3_requests(tier: Any) -> list[str]:
    seen: list[str] = []
    tier.client().meta.events.register(
        "before-send.s3.*", lambda request, **_: seen.append(request.method))
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--url")
    args = ap.parse_args()
    import boto3
    from athena_warm.adapters.redis import RedisL2
    from athena_warm.adapters.s3 import S3Tier

    import athena_warm
    from athena_warm import Cache
    from athena_warm._files import FileTier
    from athena_warm.origin import Column, QueryResult

    decl, result = demo_rows(args.rows)

    class Fixed:
        name = "fixed"

        def query(self, *a: Any, **k: Any) -> QueryResult:
            return QueryResult((Column("customer_id", "varchar"),
                                Column("account_id", "varchar")), result.rows)

    endpoint, moto = moto_server()
    os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    print(f"{args.rows:,} rows; median of {args.runs} runs\n")
    print(f"{'tier':<8}{'cold load':>11}{'requests':>10}{'warm check':>12}{'requests':>10}"
          f"{'refresh':>10}{'requests':>10}")
    try:
        with redis_url(args.url) as url:
            makers = {"redis": lambda: RedisL2(url),
                      "s3": lambda: S3Tier(f"s3://{BUCKET}/bench"),
                      "node": lambda: FileTier(str(scratch("athena-warm-node-")) + "/node")}
            for name, make in makers.items():
                tier = make()
                athena_warm.declarations.unregister(decl.name)
                athena_warm.Mapping(decl.name, sql=decl.sql, database=decl.database,
                                    key=decl.key_columns, value=decl.value_columns,
                                    ttl="1h", validate=None)
                Cache(origin=Fixed(), l2=tier).get(decl.name)  # published
                loads, checks = [], []
                for _ in range(args.runs):
                    counted = Counted(tier)
                    cold = Cache(origin=Fixed(), l2=counted)
                    s = time.perf_counter()
                    cold.get(decl.name)
                    loads.append((time.perf_counter() - s) * 1000)
                    load_calls = counted.calls
                    counted.calls = 0
                    s = time.perf_counter()
                    tier.generation(decl.name)
                    checks.append((time.perf_counter() - s) * 1000)
                seen = s3_requests(tier) if name == "s3" else []
                counted = Counted(tier)
                warm = Cache(origin=Fixed(), l2=counted)
                warm.get(decl.name)
                load_http = len(seen)
                counted.calls = 0
                s = time.perf_counter()
                warm.refresh(decl.name)
                refresh_ms = (time.perf_counter() - s) * 1000
                refresh_calls = counted.calls
                if name == "s3":  # the HTTP requests, not the tier's calls
                    load_calls, refresh_calls = load_http, len(seen) - load_http
                print(f"{name:<8}{statistics.median(loads):>9.1f}ms{load_calls:>10}"
                      f"{statistics.median(checks):>10.2f}ms{1:>10}"
                      f"{refresh_ms:>8.0f}ms{refresh_calls:>10}")
    finally:
        moto.terminate()


if __name__ == "__main__":
    main()
