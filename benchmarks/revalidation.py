"""30 days of a mapping whose table changes twice: Athena queries with and without revalidation.

    python benchmarks/revalidation.py [--days 30] [--containers 3] [--rows 2000]

A fleet of containers sharing one L2 (the in-memory tier) serves the demo's mapping (TTL 1 h)
on a fake clock, each invoked every 5 minutes; the table is updated on day 10 and day 20 (Glue
``UpdateTable`` and a new file in S3, and the rows the query returns change). On moto (Athena
through the tests' double, Glue, S3), every AWS request is counted by operation. Three policies:

- ``ttl``: ``validate=None``, the TTL alone (what every peer does);
- ``validate``: the default, the tables' metadata is compared at each TTL;
- ``validate + 5m``: also ``validate_interval="5m"``, so an update is seen within minutes.

Printed per policy: Athena queries, Glue GetTable and S3 ListObjectsV2 requests (total and per
day), the longest time any container served the old rows after an update, and the month's cost
at Athena's $5/TB for a 10 GB scan per query, Glue's $1 per million requests (past the free
million) and S3's $0.005 per 1,000 LIST requests.
"""

from __future__ import annotations

import argparse
import collections
import os
from typing import Any

from _common import scratch  # (importing _common puts the checkout on sys.path)

REGION = "us-east-1"
TTL = 3600.0
STEP = 300.0  # each container is invoked every 5 minutes
SCAN_TB = 10 / 1024  # 10 GB per query
ATHENA_PER_TB, GLUE_PER_REQUEST, S3_LIST_PER_REQUEST = 5.0, 1.0 / 1e6, 0.005 / 1000


def run(policy: str, *, days: int, containers: int, rows: int) -> dict[str, Any]:
    import boto3
    from athena_warm.adapters.athena import AthenaOrigin
    from moto import mock_aws

    import athena_warm
    from athena_warm._demo import MAPPING, write_sample_data
    from tests.athena_double import AthenaDouble

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        os.environ[k] = v
    with mock_aws():
        lake = scratch("athena-warm-bench-")
        write_sample_data(lake, rows)
        s3, glue = boto3.client("s3", region_name=REGION), boto3.client("glue", region_name=REGION)
        s3.create_bucket(Bucket="athena-results")
        s3.create_bucket(Bucket="lake")
        s3.put_object(Bucket="lake", Key=f"analytics/{MAPPING}/part-0.parquet", Body=b"v0")
        glue.create_database(DatabaseInput={"Name": "analytics"})
        table = {"Name": MAPPING, "TableType": "EXTERNAL_TABLE",
                 "StorageDescriptor": {"Location": f"s3://lake/analytics/{MAPPING}/"}}
        glue.create_table(DatabaseName="analytics", TableInput=table)

        now = [0.0]
        epoch = 1_700_000_000.0
        requests: collections.Counter[str] = collections.Counter()
        athena_warm.declarations.unregister(MAPPING)
        athena_warm.Mapping(
            MAPPING, sql="SELECT customer_id, account_id FROM customer_mapping WHERE active",
            database="analytics", key="customer_id", value="account_id", ttl=TTL,
            max_stale="7d", validate=None if policy == "ttl" else "auto",
            validate_interval="5m" if policy == "validate + 5m" else None)
        tier = athena_warm.l2.MemoryTier(clock=lambda: now[0])
        fleet = []
        doubles = []  # Athena's answers, computed by DuckDB from the lake
        for _ in range(containers):
            origin = AthenaOrigin(s3_staging_dir="s3://athena-results/bench/", region=REGION,
                                  max_attempts=1, sleep=lambda s: None, clock=lambda: now[0])
            athena_client, s3_client = origin.clients()
            doubles.append(AthenaDouble(athena_client, s3_client, str(lake)))
            for client in (athena_client, s3_client, origin.glue()):
                client.meta.events.register(
                    "before-call.*.*", lambda model, **_: requests.update([model.name]))
            fleet.append(athena_warm.Cache(origin=origin, l2=tier, clock=lambda: now[0],
                                           wall_clock=lambda: epoch + now[0],
                                           check_interval=60, sleep=lambda s: None))
        updates = [10 * 86400.0, 20 * 86400.0]
        stale_for: list[float] = []
        pending: dict[int, float] | None = None
        t = 0.0
        while t < days * 86400:
            if updates and t >= updates[0]:
                at = updates.pop(0)
                write_sample_data(lake, rows, update=True) if len(updates) == 1 else \
                    write_sample_data(lake, rows)
                s3.put_object(Bucket="lake", Key=f"analytics/{MAPPING}/part-0.parquet",
                              Body=f"v{at}".encode())
                glue.update_table(DatabaseName="analytics", TableInput=table)
                pending = {i: at for i in range(containers)}
            for i, c in enumerate(fleet):
                now[0] = t + i * (STEP / containers)  # the containers' calls are staggered
                m = c.get(MAPPING)
                if pending is not None and i in pending and \
                        m.meta.loaded_at - epoch >= pending[i]:
                    stale_for.append(now[0] - pending.pop(i))
                    if not pending:
                        pending = None
            t += STEP
    queries = requests["StartQueryExecution"]
    gets, lists = requests["GetTable"], requests["ListObjectsV2"]
    cost = queries * SCAN_TB * ATHENA_PER_TB + gets * GLUE_PER_REQUEST + \
        lists * S3_LIST_PER_REQUEST
    return {"policy": policy, "queries": queries, "glue": gets, "s3_list": lists,
            "stale_max_s": max(stale_for) if stale_for else None, "cost": cost, "days": days}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--containers", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    import logging

    logging.getLogger("athena_warm").setLevel(logging.ERROR)
    print(f"{args.days} days, TTL 1 h, {args.containers} containers sharing L2, each invoked "
          f"every 5 min; table updated on day 10 and day 20\n")
    rows = [("policy", "Athena queries", "Glue GetTable (/day)", "S3 LIST (/day)",
             "old rows served after an update, at most", "cost / month")]
    for policy in ("ttl", "validate", "validate + 5m"):
        r = run(policy, days=args.days, containers=args.containers, rows=args.rows)
        per_day = args.days or 1
        rows.append((policy, f"{r['queries']:,}", f"{r['glue']:,} ({r['glue'] / per_day:.0f})",
                     f"{r['s3_list']:,} ({r['s3_list'] / per_day:.0f})",
                     "-" if r["stale_max_s"] is None else f"{r['stale_max_s'] / 60:.0f} min",
                     f"${r['cost'] * 30 / per_day:,.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"\nAthena at $5/TB scanned, {SCAN_TB * 1024:.0f} GB per query; Glue $1 per million "
          "requests (the first million a month are free); S3 LIST $0.005 per 1,000.")


if __name__ == "__main__":
    main()
