"""One load per Lambda Managed Instance: N processes sharing one /tmp, as one execution
environment runs them (one per concurrent request), all asking for a mapping at once.

    python benchmarks/node.py [--processes 16] [--rows 200000] [--delay 0.5] [--url redis://...]

Four set-ups, each from a cold start (nothing in L1, nothing in /tmp):

  no L2, no node tier     every process queries the origin (the seed's pattern, and ours
                          without a shared tier)
  no L2, node tier        one process queries; the others wait on its lease and read the file
  Redis, no node tier     (the mapping already in Redis) every process downloads it
  Redis + node tier       one process downloads it; the others read the file

Figures: origin queries, whole-copy reads from Redis, the time from the start signal until the
last process has the mapping, and each process's peak RSS (ru_maxrss; the one that queried
also imported DuckDB, the origin here). Redis (or valkey) is started unless --url is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import ROOT, redis_url, scratch


def worker(opts: dict[str, Any]) -> None:
    import resource

    import redis

    import athena_warm
    from athena_warm._demo import declare

    counter = redis.Redis.from_url(opts["url"])

    class DelayedOrigin:
        name = "delayed"

        def query(self, sql: str, params: Any, **kw: Any) -> Any:
            from athena_warm.adapters.duckdb import DuckDBOrigin  # only the one who queries

            counter.incr("bench:queries")
            time.sleep(opts["delay"])
            return DuckDBOrigin(opts["lake"]).query(sql, params, **kw)

    class CountingReads:
        def __init__(self, tier: Any) -> None:
            self.tier = tier

        def __getattr__(self, name: str) -> Any:
            return getattr(self.tier, name)

        def read(self, *a: Any, **kw: Any) -> Any:
            got = self.tier.read(*a, **kw)
            if got is not None:
                counter.incr("bench:l2reads")
            return got

    declare()
    fleet: Any = None
    if opts["redis"]:
        from athena_warm.adapters.redis import RedisL2

        fleet = CountingReads(RedisL2(opts["url"], namespace="bench"))
    tier: Any = fleet
    if opts["node"]:
        from athena_warm._files import FileTier
        from athena_warm._node import NodeTier

        local = FileTier(opts["node"])
        tier = local if fleet is None else NodeTier(local, fleet)
    cache = athena_warm.Cache(origin=DelayedOrigin(), l2=tier if tier is not None else False)
    counter.incr("bench:ready")
    while not counter.get("bench:go"):
        time.sleep(0.005)
    m = cache.get("customer_mapping")
    done = time.time()
    print(json.dumps({"tier": m.meta.tier, "rows": len(m), "done": done,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run(url: str, lake: str, *, processes: int, delay: float, redis: bool,
        node: bool) -> dict[str, Any]:
    import redis as redis_py

    admin = redis_py.Redis.from_url(url)
    for k in ("bench:queries", "bench:l2reads", "bench:ready", "bench:go"):
        admin.delete(k)
    folder = str(scratch("athena-warm-node-")) + "/tmp" if node else None
    opts = {"url": url, "lake": lake, "delay": delay, "redis": redis, "node": folder}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(opts)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    while int(admin.get("bench:ready") or 0) < processes:
        time.sleep(0.01)
    start = time.time()
    admin.set("bench:go", 1)
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    rss = sorted(r["rss_mb"] for r in reports)
    return {"queries": int(admin.get("bench:queries") or 0),
            "l2_reads": int(admin.get("bench:l2reads") or 0),
            "all_within_s": max(r["done"] for r in reports) - start,
            "rss_median_mb": statistics.median(rss), "rss_max_mb": rss[-1],
            "tiers": sorted({r["tier"] for r in reports})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--url")
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from athena_warm._demo import write_sample_data

    lake = scratch("athena-warm-lake-")
    write_sample_data(lake, args.rows)
    print(f"{args.processes} processes sharing one tmp directory, {args.rows:,} rows, origin "
          f"{args.delay} s\n")
    print(f"{'set-up':<24}{'origin queries':>15}{'Redis reads':>12}{'all have it':>13}"
          f"{'RSS median':>12}{'RSS max':>9}")
    with redis_url(args.url) as url:
        import redis as redis_py

        for name, use_redis, node in [("no L2, no node tier", False, False),
                                      ("no L2, node tier", False, True),
                                      ("Redis, no node tier", True, False),
                                      ("Redis + node tier", True, True)]:
            if use_redis:  # the mapping is in Redis already: another machine published it
                redis_py.Redis.from_url(url).flushall()
                run(url, str(lake), processes=1, delay=0, redis=True, node=False)
            r = run(url, str(lake), processes=args.processes, delay=args.delay,
                    redis=use_redis, node=node)
            print(f"{name:<24}{r['queries']:>15}{r['l2_reads']:>12}"
                  f"{r['all_within_s']:>12.2f}s{r['rss_median_mb']:>10.0f}MB"
                  f"{r['rss_max_mb']:>7.0f}MB")


if __name__ == "__main__":
    main()
