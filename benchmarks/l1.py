"""L1 hot-key lookup: athena-warm against a plain dict, the seed's TTL'd global, and cachetools.

    python benchmarks/l1.py [--rows 200000] [--lookups 200000] [--repeat 7]

Every figure is nanoseconds per lookup of a random existing key in a warm 200k-row mapping,
the best of --repeat interleaved runs of a loop over --lookups keys (loop overhead included,
as in a real handler). Ratios are against the plain dict. Needs the local extra (duckdb).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import timeit
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import scratch

import athena_warm
from athena_warm._demo import declare, write_sample_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()

    root = scratch("athena-warm-bench-")
    write_sample_data(root, args.rows)
    declare()
    cache = athena_warm.configure(origin=f"duckdb:{root}")
    t0 = time.perf_counter()
    m = athena_warm.get_mapping("customer_mapping")
    load_ms = (time.perf_counter() - t0) * 1000
    plain = dict(m)
    rng = random.Random(42)
    keys = rng.choices(list(plain), k=args.lookups)

    import cachetools

    per_key = cachetools.TTLCache(maxsize=len(plain) + 1, ttl=3600)
    per_key.update(plain)
    whole = cachetools.TTLCache(maxsize=1, ttl=3600)
    whole["customer_mapping"] = plain

    # The hand-written pattern: a module-global dict and a TTL check on every use.
    seed_state = {"data": plain, "loaded": time.time()}

    def seed_lookup(k: str, _s: dict[str, Any] = seed_state, _time: Any = time.time) -> Any:
        if _time() - _s["loaded"] < 3600:
            return _s["data"][k]
        raise RuntimeError("expired")

    env: dict[str, Any] = {
        "keys": keys, "plain": plain, "m": m, "get_mapping": athena_warm.get_mapping,
        "per_key": per_key, "proxy": types.MappingProxyType(plain), "whole": whole,
        "seed_lookup": seed_lookup,
    }
    n, r = args.lookups, args.repeat
    cases: list[tuple[str, str, bool]] = [  # (label, statement, inside an invocation scope)
        ("plain dict: d[k]", "plain[k]", False),
        ("MappingProxyType(dict)[k] (for reference)", "proxy[k]", False),
        ("athena-warm, mapping held: m[k]", "m[k]", False),
        ("athena-warm, mapping held: m.get(k)", "m.get(k)", False),
        ("athena-warm get_mapping(name)[k], in invocation", 'get_mapping("customer_mapping")[k]',
         True),
        ("athena-warm get_mapping(name)[k], TTL check each call",
         'get_mapping("customer_mapping")[k]', False),
        ("seed pattern: global dict + TTL check", "seed_lookup(k)", False),
        ("cachetools TTLCache, one entry per key", "per_key[k]", False),
        ("cachetools TTLCache holding the dict", 'whole["customer_mapping"][k]', False),
    ]
    timers = [timeit.Timer(f"for k in keys:\n    {stmt}", globals=env) for _, stmt, _ in cases]
    best = [float("inf")] * len(cases)
    for _ in range(r):  # interleaved rounds: a noisy neighbour hurts every case alike
        for i, (_, _, scoped) in enumerate(cases):
            if scoped:
                with cache.invocation():
                    t = timers[i].timeit(number=1)
            else:
                t = timers[i].timeit(number=1)
            best[i] = min(best[i], t / n * 1e9)
    rows = [(label, ns) for (label, _, _), ns in zip(cases, best, strict=True)]
    base = rows[0][1]
    print(f"L1 lookup, {len(plain):,}-row mapping (loaded from DuckDB in {load_ms:,.0f} ms), "
          f"{n:,} random existing keys, best of {r}; Python {sys.version.split()[0]}")
    width = max(len(name) for name, _ in rows)
    print(f"{'':{width}}  {'ns/lookup':>10}  {'vs dict':>8}")
    for name, ns in rows:
        print(f"{name:{width}}  {ns:10.1f}  {ns / base:7.2f}x")
    print("\nGoal: get_mapping(name)[k] within 2x of a dict lookup (the freshness check once per "
          "invocation), and a held mapping as fast as a dict.")


if __name__ == "__main__":
    main()
