"""A warm container that keeps reading a mapping, for the zero-gap test.

    python -m tests.reader_worker REDIS_URL LAKE SECONDS UNTIL_GENERATION

Prints "ready" after its first read; reads until it has seen UNTIL_GENERATION (and 0.2 s more)
or SECONDS pass, then prints one JSON line: every read's tier and generation, and how many
queries its origin ran.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from athena_warm import Cache, Mapping
from tests.l2_worker import CountingOrigin


def main() -> None:
    url, lake, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    until_generation = int(sys.argv[4])
    Mapping("customers", sql="SELECT customer_id, account_id FROM customers",
            database="analytics", key="customer_id", value="account_id", ttl="1h",
            max_stale="1d", ttl_jitter=0)
    origin = CountingOrigin(lake)
    cache = Cache(origin=origin, l2=url, check_interval=0.02)
    reads: list[tuple[str, int]] = []
    m = cache.get("customers")
    reads.append((m.meta.tier, m.meta.generation))
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with cache.invocation(remaining=3):
            m = cache.get("customers")
            reads.append((m.meta.tier, m.meta.generation))
        if m.meta.generation >= until_generation:
            end = min(end, time.monotonic() + 0.2)
        time.sleep(0.005)
    out: dict[str, Any] = {"reads": reads, "origin_queries": origin.queries}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
