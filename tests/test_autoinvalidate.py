"""Automatic invalidation from EventBridge (issue 12): a Glue change event refreshes, with no
gap, each mapping that reads the changed table, and none for other tables. The events are the
ones AWS documents (EventBridge user guide, "Glue Data Catalog Table State Change")."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

import athena_warm
from athena_warm import Mapping
from athena_warm.autoinvalidate import changed_tables, handle
from athena_warm.exceptions import ConfigurationError
from athena_warm.l2 import MemoryTier
from tests.conftest import REGION, FakeClock
from tests.helpers import CountingOrigin
from tests.test_revalidation import touch

TABLE_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "2617428d-715f-edef-70b9-ce7d0a1aa8a2",
    "detail-type": "Glue Data Catalog Table State Change",
    "source": "aws.glue",
    "account": "123456789012",
    "time": "2017-10-20T05:20:08Z",
    "region": "us-east-1",
    "resources": ["arn:aws:glue:us-east-1:123456789012:table/d1/t1"],
    "detail": {
        "databaseName": "d1",
        "changedPartitions": ["[C.pdf, dir3]", "[D.doc, dir4]"],
        "typeOfChange": "BatchCreatePartition",
        "tableName": "t1",
    },
}
DATABASE_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "5089ddb8-2ab5-4739-7323-8519741f53d7",
    "detail-type": "Glue Data Catalog Database State Change",
    "source": "aws.glue",
    "account": "123456789012",
    "time": "2019-04-25T15:40:07Z",
    "region": "us-east-1",
    "resources": ["arn:aws:glue:us-east-1:123456789012:table/dbname/table_name"],
    "detail": {"databaseName": "dbname", "typeOfChange": "CreateTable",
               "changedTables": ["table_name"]},
}
S3_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::example-bucket"],
    "detail": {"version": "0", "bucket": {"name": "lake"},
               "object": {"key": "analytics/customers/part%3D1/file.parquet", "size": 5,
                          "etag": "b1946ac92492d2347c6235b4d2611184", "sequencer": "1"},
               "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
               "source-ip-address": "1.2.3.4", "reason": "PutObject"},
}


def event_for(db: str, table: str) -> dict[str, Any]:
    e = copy.deepcopy(TABLE_EVENT)
    e["detail"].update(databaseName=db, tableName=table)
    return e


def test_the_documented_events_name_their_tables() -> None:
    assert changed_tables(TABLE_EVENT) == ["d1.t1"]
    assert changed_tables(DATABASE_EVENT) == ["dbname.table_name"]
    assert changed_tables(S3_EVENT) == []  # without the tables' locations
    assert changed_tables(S3_EVENT, locations={
        "analytics.customers": "s3://lake/analytics/customers",
        "analytics.other": "s3://lake/analytics/custom"}) == ["analytics.customers"]
    assert changed_tables({"detail-type": "Glue Job State Change", "detail": {}}) == []
    assert changed_tables({"detail-type": TABLE_EVENT["detail-type"], "detail": "x"}) == []


def test_a_glue_event_refreshes_each_reader_once_with_no_gap(lake: Path, tmp_path: Path,
                                                             clock: FakeClock) -> None:
    from athena_warm.adapters.duckdb import DuckDBOrigin

    for t in ("customers", "dup_keys"):
        shutil.copytree(lake / "analytics" / t, tmp_path / "analytics" / t)
    lake = tmp_path

    Mapping("cust", sql="SELECT customer_id, account_id FROM customers", key="customer_id",
            value="account_id", database="analytics")
    Mapping("accounts", sql="SELECT DISTINCT account_id, 1 AS one FROM analytics.customers",
            key="account_id", value="one")
    Mapping("dups", sql="SELECT k, v FROM dup_keys", key="k", value="v", database="analytics",
            on_duplicate="last")
    tier = MemoryTier(clock=clock)
    origin = CountingOrigin(DuckDBOrigin(lake), name="duckdb", validator=True)
    fn = athena_warm.Cache(origin=origin, l2=tier, clock=clock)  # the function's container
    warm = athena_warm.Cache(origin=origin, l2=tier, clock=clock, check_interval=1)
    for n in ("cust", "accounts", "dups"):
        warm.get(n)
    before = origin.queries
    touch(lake)  # the table's update that the event reports
    out = handle(event_for("analytics", "customers"), cache=fn)
    assert [r["name"] for r in out["refreshed"]] == ["accounts", "cust"]
    assert out["current"] == [] and out["failed"] == []
    assert origin.queries == before + 2  # one per reader, none for dup_keys
    clock.advance(2)
    for n in ("cust", "accounts"):  # warm containers switch to the new copies from L2
        m = warm.get(n)
        assert m.meta.source == "l2" and m.meta.generation == 1
    assert warm.get("dups").meta.generation == 0 and origin.queries == before + 2
    # the same event again (a burst: one per API call): the copies match the tables already
    again = handle(event_for("analytics", "customers"), cache=fn)
    assert again["refreshed"] == [] and sorted(again["current"]) == ["accounts", "cust"]
    assert origin.queries == before + 2
    # another table: nobody reads it
    assert handle(event_for("analytics", "nope"), cache=fn)["refreshed"] == []


def test_without_l2_the_handler_says_what_to_set(lake: Path) -> None:
    with pytest.raises(ConfigurationError, match="ATHENA_WARM_REDIS_URL"):
        handle(TABLE_EVENT, cache=athena_warm.Cache(origin=f"duckdb:{lake}", l2=False))


def test_the_lambda_handler_on_moto_with_an_s3_event(athena: Any, redis_url: str,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler as Lambda runs it: declarations from ATHENA_WARM_CONFIG, the Athena origin
    (moto), the S3 event mapped to the table through its Glue location."""
    from athena_warm import autoinvalidate

    glue = boto3.client("glue", region_name=REGION)
    glue.create_database(DatabaseInput={"Name": "analytics"})
    glue.create_table(DatabaseName="analytics", TableInput={
        "Name": "customers", "StorageDescriptor": {"Location": "s3://lake/analytics/customers/"}})
    config = tmp_path / "m.toml"
    config.write_text('[mappings.cust]\nsql = "SELECT customer_id, account_id FROM customers"\n'
                      'key = "customer_id"\nvalue = "account_id"\ndatabase = "analytics"\n')
    monkeypatch.setenv("ATHENA_WARM_CONFIG", str(config))
    athena_warm.configure(origin=athena, l2=redis_url)
    out = autoinvalidate.handler(S3_EVENT, None)
    assert out["tables"] == ["analytics.customers"]
    assert [r["name"] for r in out["refreshed"]] == ["cust"]
    assert len(athena.double.started) == 1
    json.dumps(out)  # the handler's answer is JSON


def test_the_cli_shows_which_mappings_read_a_table(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(
        '[mappings.a]\nsql = "SELECT k, v FROM db1.t WHERE k IN (SELECT k FROM u)"\nkey = "k"\n'
        'value = "v"\ndatabase = "db2"\n'
        '[mappings.b]\nsql = "SELECT k, v FROM x"\nkey = "k"\nvalue = "v"\ntables = ["db1.t"]\n'
        'validate_interval = "5m"\n'
        '[mappings.c]\nsql = "SELECT 1 AS k"\nkey = "k"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "athena_warm.cli", "--config",
                               str(config), *args], capture_output=True, text=True, timeout=60)

    r = cli("tables", "db1.t")
    assert r.returncode == 0 and r.stdout.split() == ["a", "b"], r.stderr
    assert cli("tables", "db2.u").stdout.split() == ["a"]
    assert cli("tables", "u", "--json").stdout.strip() == '{"table": "u", "mappings": ["a"]}'
    none = cli("tables", "db1.other")
    assert none.returncode == 0 and none.stdout == "" and "no declared mapping" in none.stderr
    listing = cli("tables").stdout
    assert "db1.t,db2.u" in listing and "(unknown: ttl only)" in listing and "5m" in listing
    bad = cli("tables", "a b")
    assert bad.returncode == 2 and "not a table name" in bad.stderr
