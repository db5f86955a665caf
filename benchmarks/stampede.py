"""A simulated fleet across TTL windows: origin queries and invocation latency.

    python benchmarks/stampede.py [--containers 16] [--ttl 6] [--windows 3] [--delay 0.5]
                                  [--rows 20000] [--url redis://...]

"in ttl/2" is the most origin queries that started within any half-TTL span: the stampede.
"per window" counts the cold start's load too (copies age from their query's start, so a run of
N windows holds the cold load and up to N refreshes).

Each "container" is a process that invokes a handler in a loop (every 20 ms) for --windows TTL
windows, looking up one key of a --rows mapping. The origin is DuckDB plus --delay seconds of
sleep (Athena's minutes, scaled down with the TTL). Three ways to cache it:

  athena-warm   L1 + L2 (Redis) + a fleet lease: one refresher, everyone else serves the
                stale copy (TTL jitter 10%)
  naive         the hand-written module-global dict with a TTL, one per container
  dogpile       dogpile.cache's Redis backend with its distributed lock (the value lives only
                in Redis: every invocation GETs and unpickles it)

Needs the bench extra (dogpile.cache). Without --url a redis-server (or valkey) is started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT, redis_url, scratch

MAPPING = "customer_mapping"
SQL = "SELECT customer_id, account_id FROM customer_mapping WHERE active"


class DelayedOrigin:
    """DuckDB plus a fixed delay; counts its queries in Redis (test:queries)."""

    name = "delayed"

    def __init__(self, lake: str, delay: float, counter: Any) -> None:
        from athena_warm.adapters.duckdb import DuckDBOrigin

        self.inner = DuckDBOrigin(lake)
        self.delay = delay
        self.counter = counter

    def query(self, sql: str, params: Any, **kw: Any) -> Any:
        self.counter.incr("bench:queries")
        self.counter.rpush("bench:query_at", time.time())
        time.sleep(self.delay)
        return self.inner.query(sql, params, **kw)

    def rows(self) -> dict[Any, Any]:
        result = self.query(SQL, (), database="analytics")
        return {r[0]: r[1] for r in result.rows}


def worker(opts: dict[str, Any]) -> None:
    import redis

    counter = redis.Redis.from_url(opts["url"])
    origin = DelayedOrigin(opts["lake"], opts["delay"], counter)
    ttl = opts["ttl"]
    key = "C0000042"
    mode = opts["mode"]
    if mode == "athena-warm":
        from athena_warm.adapters.redis import RedisL2

        from athena_warm import Cache, Mapping

        Mapping(MAPPING, sql=SQL, database="analytics", key="customer_id", value="account_id",
                ttl=ttl, max_stale=ttl * 10, ttl_jitter=0.1)
        cache = Cache(origin=origin, l2=RedisL2(opts["url"]), check_interval=ttl,
                      retry_interval=0.2)

        def handler() -> Any:
            with cache.invocation(remaining=30):
                return cache.get(MAPPING).get(key)
    elif mode == "naive":
        state: dict[str, Any] = {"data": None, "loaded": 0.0}

        def handler() -> Any:
            if state["data"] is None or time.time() - state["loaded"] >= ttl:
                state["data"], state["loaded"] = origin.rows(), time.time()
            return state["data"].get(key)
    else:
        from dogpile.cache import make_region

        url = redis.connection.parse_url(opts["url"])
        region = make_region().configure(
            "dogpile.cache.redis", expiration_time=ttl,
            arguments={"host": url.get("host", "127.0.0.1"), "port": url.get("port", 6379),
                       "distributed_lock": True, "thread_local_lock": False,
                       "lock_timeout": 30, "redis_expiration_time": int(ttl * 10) + 1})

        def handler() -> Any:
            return region.get_or_create(MAPPING, origin.rows).get(key)

    counter.incr("bench:ready")
    while not counter.get("bench:go"):
        time.sleep(0.005)
    end = float(counter.get("bench:go")) + ttl * opts["windows"]
    latencies = []
    while time.time() < end:
        t = time.perf_counter()
        handler()
        latencies.append(time.perf_counter() - t)
        time.sleep(0.02)
    print(json.dumps(latencies))


def run(mode: str, args: argparse.Namespace, url: str, lake: str) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    opts = {"mode": mode, "url": url, "lake": lake, "ttl": args.ttl, "delay": args.delay,
            "windows": args.windows}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(opts)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(args.containers)]
    while int(r.get("bench:ready") or 0) < args.containers:
        time.sleep(0.02)
    r.set("bench:go", time.time() + 0.2)
    latencies: list[float] = []
    for p in procs:
        out, _ = p.communicate(timeout=args.ttl * args.windows + 120)
        latencies += json.loads(out.strip().splitlines()[-1])
    latencies.sort()
    q = int(r.get("bench:queries") or 0)
    starts = sorted(float(t) for t in r.lrange("bench:query_at", 0, -1))
    burst = max((sum(1 for u in starts if t <= u < t + args.ttl / 2) for t in starts), default=0)
    return {"mode": mode, "queries": q, "burst": burst, "invocations": len(latencies),
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000,
            "p999": latencies[int(len(latencies) * 0.999)] * 1000,
            "max": latencies[-1] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", type=int, default=16)
    ap.add_argument("--ttl", type=float, default=6.0)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--delay", type=float, default=0.5)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--url")
    ap.add_argument("--modes", default="athena-warm,naive,dogpile")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from athena_warm._demo import write_sample_data

    lake = scratch("athena-warm-stampede-")
    write_sample_data(lake, args.rows)
    with redis_url(args.url) as url:
        results = [run(m, args, url, str(lake)) for m in args.modes.split(",")]
    print(f"{args.containers} containers x {args.windows} TTL windows of {args.ttl:g} s, an "
          f"invocation every 20 ms each, origin {args.delay:g} s, {args.rows:,}-row mapping")
    print(f"{'':12}  {'origin queries':>14}  {'per window':>10}  {'in ttl/2':>8}  "
          f"{'invocations':>11}  "
          f"{'p50':>9}  {'p99':>9}  {'p99.9':>9}  {'max':>9}")
    for res in results:
        print(f"{res['mode']:12}  {res['queries']:14}  {res['queries'] / args.windows:10.1f}  "
              f"{res['burst']:8}  {res['invocations']:11}  {res['p50']:6.3f} ms  "
              f"{res['p99']:6.3f} ms  {res['p999']:6.1f} ms  {res['max']:6.0f} ms")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
