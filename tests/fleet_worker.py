"""One Lambda 'container' of the multi-process tests: waits for the start signal in Redis,
then calls get_mapping from several threads at once and prints what each call got.

    python -m tests.fleet_worker JSON_OPTIONS

Options: url, lake, threads, delay (seconds the origin sleeps per query), refresh_timeout,
remaining (seconds each call may take), athena (use AthenaOrigin against a moto server whose
results DuckDB computes), name (worker name, for the counters), s3 (a moto server: the shared
tier is S3 there, s3://fleet-cache/aw, and Redis only counts and signals), no_l2, node (a
directory: the node tier), count_reads (whole-copy reads of the fleet's tier in test:l2reads).
Counters in Redis: test:queries (origin queries started), test:ready (workers ready).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import redis
from athena_warm.adapters.duckdb import DuckDBOrigin
from athena_warm.adapters.redis import RedisL2

from athena_warm import Cache, Mapping
from tests.helpers import CountingOrigin


def athena_origin(opts: dict[str, Any], counter: Any) -> Any:
    """AthenaOrigin on a moto server; each StartQueryExecution computes its result in DuckDB
    and hands it to the server's result queue, and counts in test:queries."""
    import requests
    from athena_warm.adapters.athena import AthenaOrigin

    from tests.athena_double import _varchar

    engine = DuckDBOrigin(opts["lake"])
    origin = AthenaOrigin(region="us-east-1", s3_staging_dir="s3://athena-results/staging/",
                          max_attempts=1, poll_interval=0.1, max_poll_interval=0.2)
    athena, _ = origin.clients()
    athena.list_work_groups()  # loads the service model and connects before the start signal

    def before_start(params: dict[str, Any], **_: Any) -> None:
        counter.incr("test:queries")
        result = engine.query(params["QueryString"], [],
                              database=params["QueryExecutionContext"]["Database"])
        rows = [{"Data": [{"VarCharValue": c.name} for c in result.columns]}] + [
            {"Data": [{"VarCharValue": _varchar(v)} if v is not None else {} for v in row]}
            for row in result.rows]
        info = [{"Name": c.name, "Label": c.name, "Type": c.type, "Precision": 0, "Scale": 0,
                 "Nullable": "UNKNOWN", "CaseSensitive": True} for c in result.columns]
        requests.post(opts["moto"] + "/moto-api/static/athena/query-results",
                      json={"results": [{"rows": rows, "column_info": info}]}, timeout=5)

    athena.meta.events.register("before-parameter-build.athena.StartQueryExecution",
                                before_start)
    return origin


class CountingReads:
    """The fleet's tier, counting its whole-copy reads in test:l2reads (it calls through)."""

    def __init__(self, tier: Any, counter: Any) -> None:
        self.tier, self.counter = tier, counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tier, name)

    def read(self, *args: Any, **kw: Any) -> Any:
        got = self.tier.read(*args, **kw)
        if got is not None:
            self.counter.incr("test:l2reads")
        return got


def shared_tier(opts: dict[str, Any], counter: Any) -> Any:
    """The worker's shared tier: Redis (default), S3 (``s3``), none (``no_l2``), with the node
    tier in front (``node``: a directory the workers share)."""
    fleet = None if opts.get("no_l2") else fleet_tier(opts)
    if fleet is not None and opts.get("count_reads"):
        fleet = CountingReads(fleet, counter)
    if not opts.get("node"):
        return fleet
    from athena_warm._files import FileTier
    from athena_warm._node import NodeTier

    local = FileTier(opts["node"])
    return local if fleet is None else NodeTier(local, fleet)


def fleet_tier(opts: dict[str, Any]) -> Any:
    if not opts.get("s3"):
        return RedisL2(opts["url"])
    from athena_warm.adapters.s3 import S3Tier

    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": opts["s3"]})
    tier = S3Tier("s3://fleet-cache/aw")
    tier.client()  # boto3's import and client (1-4 s in 20 processes at once) before the start
    return tier


def main() -> None:
    opts = json.loads(sys.argv[1])
    counter = redis.Redis.from_url(opts["url"])
    Mapping("customers", sql="SELECT customer_id, account_id FROM customers",
            database="analytics", key="customer_id", value="account_id", ttl="1h",
            max_stale="1d", ttl_jitter=0)
    origin = athena_origin(opts, counter) if opts.get("athena") else \
        CountingOrigin(DuckDBOrigin(opts["lake"]), delay=opts.get("delay", 0.0),
                       on_query=lambda: counter.incr("test:queries"))
    cache = Cache(origin=origin, l2=shared_tier(opts, counter),
                  refresh_timeout=opts.get("refresh_timeout", 60))
    counter.incr("test:ready")
    while not counter.get("test:go"):
        time.sleep(0.01)
    results: list[dict[str, Any]] = []

    def call() -> None:
        start = time.perf_counter()
        try:
            m = cache.get("customers", remaining=opts.get("remaining"))
            results.append({"tier": m.meta.tier, "rows": len(m), "generation": m.meta.generation,
                            "seconds": time.perf_counter() - start, "done_at": time.time()})
        except Exception as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}",
                            "seconds": time.perf_counter() - start})

    threads = [threading.Thread(target=call) for _ in range(opts.get("threads", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    import resource

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"name": opts.get("name"), "results": results, "rss_mb": rss_mb}),
          flush=True)


if __name__ == "__main__":
    main()
