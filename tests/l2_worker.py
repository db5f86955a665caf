"""A 'container' for the cross-process L2 tests: reads commands on stdin, answers JSON lines.

    python -m tests.l2_worker REDIS_URL LAKE CHECK_INTERVAL
    > get NAME        {"tier": ..., "generation": ..., "rows": ..., "origin_queries": N}
    > invalidate NAME {"generation": N}
"""

from __future__ import annotations

import json
import sys
from typing import Any

from athena_warm.adapters.duckdb import DuckDBOrigin

from athena_warm import Cache, Mapping
from tests.helpers import CountingOrigin


def main() -> None:
    url, lake, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
    Mapping("customers", sql="SELECT customer_id, account_id FROM customers",
            database="analytics", key="customer_id", value="account_id", ttl="1h")
    origin = CountingOrigin(DuckDBOrigin(lake))
    cache = Cache(origin=origin, l2=url, check_interval=interval)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, _, name = line.strip().partition(" ")
        if cmd == "get":
            m = cache.get(name)
            out: dict[str, Any] = {"tier": m.meta.tier, "generation": m.meta.generation,
                                   "rows": len(m), "origin_queries": origin.queries}
        elif cmd == "invalidate":
            out = {"generation": cache.invalidate(name)}
        else:
            break
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
