"""Revalidation (issue 12): at a TTL, the tables' metadata is compared before the query runs.

On moto: Glue's UpdateTime/VersionId (CreateTime before the first update), Iceberg's
metadata_location, and the S3 listing of a plain table's location. Locally: the DuckDB origin's
files. A copy whose tables did not change lives another TTL with zero queries, here and in L2;
a changed table or a failed check runs the query.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from athena_warm.adapters import _validators
from athena_warm.adapters.duckdb import DuckDBOrigin

import athena_warm
from athena_warm import Mapping
from athena_warm._events import listeners
from athena_warm.exceptions import DeclarationError
from athena_warm.l2 import MemoryTier
from tests.conftest import REGION, FakeClock
from tests.helpers import CountingOrigin

TTL = 3600.0
WALL0 = 1_700_000_000.0


@pytest.fixture
def events() -> Any:
    seen: list[dict[str, Any]] = []
    listeners.append(seen.append)
    yield seen
    listeners.remove(seen.append)


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def cache(origin: Any, clock: FakeClock, **kw: Any) -> athena_warm.Cache:
    kw.setdefault("l2", False)
    return athena_warm.Cache(origin=origin, clock=clock, wall_clock=lambda: WALL0 + clock(),
                             retry_interval=1, **kw)


def declare(**kw: Any) -> Mapping:
    kw.setdefault("sql", "SELECT customer_id, account_id FROM customers")
    return Mapping("cust", key="customer_id", value="account_id", database="analytics",
                   ttl=TTL, ttl_jitter=0, **kw)


# -- on moto: Glue and S3 -------------------------------------------------------------------------

COLUMNS = [{"Name": "customer_id", "Type": "string"}, {"Name": "account_id", "Type": "string"}]


class Lake:
    """The Glue table analytics.customers and its files in S3 (moto)."""

    def __init__(self, **table: Any) -> None:
        self.glue = boto3.client("glue", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)
        self.s3.create_bucket(Bucket="lake")
        self.put("part-0.parquet", b"v1")
        self.glue.create_database(DatabaseInput={"Name": "analytics"})
        self.table = {"Name": "customers", "TableType": "EXTERNAL_TABLE",
                      "StorageDescriptor": {"Columns": COLUMNS,
                                            "Location": "s3://lake/analytics/customers"},
                      **table}
        self.glue.create_table(DatabaseName="analytics", TableInput=self.table)

    def put(self, name: str, body: bytes) -> None:
        self.s3.put_object(Bucket="lake", Key=f"analytics/customers/{name}", Body=body)

    def update(self, **changes: Any) -> None:
        self.table = {**self.table, **changes}
        self.glue.update_table(DatabaseName="analytics", TableInput=self.table)


def calls(origin: Any, service: str) -> list[str]:
    """The operations ``origin`` sends to ``service`` from now on."""
    seen: list[str] = []
    client = origin.glue() if service == "glue" else origin.clients()[1]
    client.meta.events.register(f"before-call.{service}.*",
                                lambda model, **_: seen.append(model.name))
    return seen


def test_an_unchanged_table_is_revalidated_with_no_query(athena: Any, clock: FakeClock,
                                                         events: list[Any]) -> None:
    Lake()
    declare()
    c = cache(athena, clock)
    glue_calls = calls(athena, "glue")
    first = c.get("cust")
    assert len(athena.double.started) == 1 and first.meta.validated_at is None
    assert glue_calls == ["GetTable"]  # the validator is taken before the query
    for _ in range(3):  # three TTLs pass: three looks at Glue, no query
        clock.advance(TTL + 1)
        m = c.get("cust")
        assert m is first and m.meta.validated_at == WALL0 + clock()
    assert len(athena.double.started) == 1
    assert names(events).count("revalidated") == 3 and glue_calls == ["GetTable"] * 4
    clock.advance(TTL / 2)  # within the renewed TTL: a plain L1 hit, no call at all
    assert c.get("cust") is first and len(glue_calls) == 4


def test_a_glue_update_runs_exactly_one_query(athena: Any, clock: FakeClock) -> None:
    lake = Lake()
    declare()
    c = cache(athena, clock)
    c.get("cust")
    clock.advance(TTL + 1)
    c.get("cust")  # unchanged (moto has no UpdateTime yet: CreateTime)
    assert len(athena.double.started) == 1
    lake.update(Parameters={"comment": "new columns"})
    clock.advance(TTL + 1)
    m = c.get("cust")
    assert len(athena.double.started) == 2 and m.meta.source == "origin"
    assert m.meta.validated_at is None
    clock.advance(TTL + 1)
    c.get("cust")  # and the new state is the new baseline
    assert len(athena.double.started) == 2


def test_files_replaced_without_a_glue_update_are_seen_by_the_s3_listing(
        athena: Any, clock: FakeClock) -> None:
    lake = Lake()
    declare()
    c = cache(athena, clock)
    c.get("cust")
    lake.put("part-0.parquet", b"v2, rewritten in place")
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 2
    lake.put("part-1.parquet", b"a new file")
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 3


def test_validate_glue_skips_the_listing(athena: Any, clock: FakeClock) -> None:
    lake = Lake()
    declare(validate="glue")
    c = cache(athena, clock)
    s3_calls = calls(athena, "s3")
    c.get("cust")
    lake.put("part-0.parquet", b"v2")  # not seen without the listing: Glue only
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 1
    assert "ListObjectsV2" not in s3_calls


def test_an_iceberg_commit_is_seen_through_metadata_location(athena: Any,
                                                             clock: FakeClock) -> None:
    meta = "s3://lake/analytics/customers/metadata/00001-a.metadata.json"
    lake = Lake(Parameters={"table_type": "ICEBERG", "metadata_location": meta})
    declare()
    c = cache(athena, clock)
    s3_calls = calls(athena, "s3")
    c.get("cust")
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 1
    assert "ListObjectsV2" not in s3_calls  # every commit writes new metadata: no listing
    lake.update(Parameters={"table_type": "ICEBERG", "metadata_location": meta.replace(
        "00001-a", "00002-b"), "previous_metadata_location": meta})
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 2


def test_the_iceberg_state_is_its_metadata_location(aws: None) -> None:
    """metadata_location alone changes the fingerprint (UpdateTime held equal)."""
    def state(location: str) -> str:
        table = {"Table": {"TableType": "EXTERNAL_TABLE", "VersionId": "1",
                           "UpdateTime": "2026-01-01",
                           "Parameters": {"table_type": "ICEBERG",
                                          "metadata_location": location}}}
        got = _validators.table_state(lambda fn, _, **kw: fn(**kw),
                                      type("G", (), {"get_table": lambda **_: table}), None,
                                      "analytics", "customers", catalog_id=None, listing=True,
                                      max_keys=10)
        return _validators.fingerprint([got])

    assert state("s3://b/m/1.json") == state("s3://b/m/1.json") != state("s3://b/m/2.json")


def test_a_failed_check_runs_the_query_and_never_claims_revalidation(
        athena: Any, clock: FakeClock, events: list[Any]) -> None:
    Lake()
    declare()
    c = cache(athena, clock)
    c.get("cust")
    # Glue cannot be reached now (a network or permission problem): GetTable fails
    athena._glue = boto3.session.Session().client(
        "glue", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=athena._config())
    clock.advance(TTL + 1)
    m = c.get("cust")
    assert len(athena.double.started) == 2 and m.meta.validated_at is None
    assert "revalidated" not in names(events)
    failed = [e for e in events if e["event"] == "validate_failed"]
    assert failed and failed[0]["mapping"] == "cust"
    clock.advance(TTL + 1)
    c.get("cust")  # the copy made without a validator cannot be revalidated either
    assert len(athena.double.started) == 3


@pytest.mark.parametrize("kind", ["view", "not in glue"])
def test_a_view_or_a_table_glue_does_not_know_refreshes_on_its_ttl(
        athena: Any, clock: FakeClock, events: list[Any], kind: str) -> None:
    lake = Lake(TableType="VIRTUAL_VIEW")
    if kind == "not in glue":
        lake.glue.delete_table(DatabaseName="analytics", Name="customers")
    declare()
    c = cache(athena, clock)
    c.get("cust")
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 2
    assert "validate_failed" not in names(events)  # unknown is not a failure


def test_too_many_files_fall_back_to_the_ttl(athena: Any, clock: FakeClock) -> None:
    lake = Lake()
    for i in range(3):
        lake.put(f"extra-{i}.parquet", b"x")
    athena.validate_max_keys = 3
    declare()
    c = cache(athena, clock)
    c.get("cust")
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 2


def test_validate_none_is_the_ttl_only(athena: Any, clock: FakeClock) -> None:
    Lake()
    declare(validate=None)
    c = cache(athena, clock)
    glue_calls = calls(athena, "glue")
    c.get("cust")
    clock.advance(TTL + 1)
    c.get("cust")
    assert len(athena.double.started) == 2 and glue_calls == []


# -- the fleet: L2 carries the revalidation -------------------------------------------------------


@pytest.fixture
def own_lake(lake: Path, tmp_path: Path) -> Path:
    """A copy of the test lake whose files a test may change."""
    root = tmp_path / "lake"
    shutil.copytree(lake / "analytics" / "customers", root / "analytics" / "customers")
    return root


def counting_duckdb(path: Path) -> CountingOrigin:
    return CountingOrigin(DuckDBOrigin(path), name="duckdb", validator=True)


def touch(root: Path) -> None:
    """Rewrite the table's file (same rows, new modification time and size)."""
    import duckdb

    f = root / "analytics" / "customers" / "part-0.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_parquet('{f}') UNION ALL SELECT 'C9999', 'A9', "
                f"9999, true, 'r1') TO '{f}.new' (FORMAT parquet)")
    con.close()
    Path(f"{f}.new").replace(f)


def test_a_revalidation_reaches_the_fleet_through_l2(own_lake: Path, clock: FakeClock,
                                                     events: list[Any]) -> None:
    declare()
    tier = MemoryTier(clock=clock)
    a_origin, b_origin, d_origin = (counting_duckdb(own_lake) for _ in range(3))
    a, b = cache(a_origin, clock, l2=tier), cache(b_origin, clock, l2=tier)
    first = a.get("cust")
    assert b.get("cust").meta.source == "l2"  # B holds the same copy
    clock.advance(TTL + 1)
    assert a.get("cust") is first  # A revalidates: no query, the note goes to L2
    assert a_origin.queries == 1 and a_origin.checks == 2
    reads = names(events).count("load")
    kept = b.get("cust")  # B's copy is past its TTL too: the note extends it, no download
    assert kept.meta.validated_at == WALL0 + clock() and b_origin.queries == 0
    assert b_origin.checks == 0 and names(events).count("load") == reads
    assert "renewed" in names(events)
    # A cold container finds the copy older than its TTL, but renewed: served fresh from L2
    d = cache(d_origin, clock, l2=tier)
    got = d.get("cust")
    assert got.meta.source == "l2" and got.meta.validated_at == WALL0 + clock()
    assert d_origin.queries == 0 and d_origin.checks == 0
    status = a.l2_status("cust")
    assert status["validated_at"] == WALL0 + clock() and not status["stale"]
    # Past ttl + max_stale since the data was read, a renewed copy is still served
    for _ in range(30):
        clock.advance(TTL + 1)
        a.get("cust")
    assert a_origin.queries == 1
    cold = cache(counting_duckdb(own_lake), clock, l2=tier).get("cust")
    assert cold.meta.source == "l2"


def test_a_forged_or_unsigned_note_is_ignored(own_lake: Path, clock: FakeClock,
                                              events: list[Any]) -> None:
    declare()
    tier = MemoryTier(clock=clock)
    a = cache(counting_duckdb(own_lake), clock, l2=tier, signing_key="k" * 32)
    a.get("cust")
    entry = next(e for _, e in a.l1.items())
    created_ms = int(entry.created_at * 1000)
    clock.advance(TTL + 1)
    note = f'{{"c":{created_ms},"v":"{entry.validator}","a":{WALL0 + clock()}}}'
    assert tier.renew("cust", entry.view.meta.fingerprint, note, created_ms=created_ms,
                      ttl=TTL) is True  # written by someone without the key
    d_origin = counting_duckdb(own_lake)
    d = cache(d_origin, clock, l2=tier, signing_key="k" * 32)
    d.get("cust")
    assert d_origin.checks == 1  # the forged note did not spare the check: D made its own
    assert any(e["event"] == "l2_corrupt" and "note" in e["reason"] for e in events)


def test_validate_interval_notices_a_change_between_ttls_once_per_fleet(
        own_lake: Path, clock: FakeClock, events: list[Any]) -> None:
    declare(validate_interval="5m")
    tier = MemoryTier(clock=clock)
    origins = [counting_duckdb(own_lake) for _ in range(3)]
    fleet = [cache(o, clock, l2=tier, check_interval=60) for o in origins]
    for c in fleet:
        c.get("cust")
    assert sum(o.queries for o in origins) == 1
    for _ in range(3):  # 15 minutes, unchanged: one check per 5 minutes for the whole fleet
        clock.advance(301)
        for c in fleet:
            c.get("cust")
    assert sum(o.queries for o in origins) == 1
    assert sum(o.checks for o in origins) == 1 + 3
    touch(own_lake)
    clock.advance(301)
    for c in fleet:
        c.get("cust")  # one notices, bumps the generation and reloads; the others follow
    clock.advance(61)
    got = [c.get("cust") for c in fleet]
    assert sum(o.queries for o in origins) == 2
    assert all("C9999" in m for m in got)
    assert names(events).count("table_changed") == 1


def test_validate_interval_without_l2(own_lake: Path, clock: FakeClock) -> None:
    declare(validate_interval="10m")
    o = counting_duckdb(own_lake)
    c = cache(o, clock)
    c.get("cust")
    clock.advance(601)
    c.get("cust")
    assert (o.queries, o.checks) == (1, 2)
    touch(own_lake)
    clock.advance(601)
    assert "C9999" in c.get("cust") or "C9999" in c.get("cust")
    assert o.queries == 2


def test_the_kill_switch_makes_no_metadata_call(own_lake: Path, clock: FakeClock,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    declare()
    o = counting_duckdb(own_lake)
    monkeypatch.setenv("ATHENA_WARM_DISABLED", "true")
    c = cache(o, clock)
    assert "C0008" in c.get("cust")
    assert (o.queries, o.checks) == (1, 0)


def test_the_duckdb_origin_fingerprints_files(own_lake: Path) -> None:
    o = DuckDBOrigin(own_lake)
    tables = [("analytics", "customers")]
    v1 = o.validator(tables, database=None)
    assert v1 == o.validator([(None, "customers")], database="analytics")
    touch(own_lake)
    assert o.validator(tables, database=None) != v1
    assert o.validator([("analytics", "nope")], database=None) is None


# -- which tables a mapping reads ----------------------------------------------------------------


@pytest.mark.parametrize(("sql", "tables"), [
    ("SELECT a FROM t", ((None, "t"),)),
    ("SELECT a FROM db.t JOIN other o ON o.k = t.k", ((None, "other"), ("db", "t"))),
    ("WITH x AS (SELECT * FROM db.src) SELECT * FROM x", (("db", "src"),)),
    ('SELECT * FROM "AwsDataCatalog"."Db"."T" WHERE k IN (SELECT k FROM s.u)',
     (("db", "t"), ("s", "u"))),
    ("SELECT * FROM t CROSS JOIN UNNEST(t.arr) AS u(x)", ((None, "t"),)),
    ("SELECT 1", None),
    ("SELEC nonsense FROM", None),
])
def test_tables_are_found_in_the_sql(sql: str, tables: Any) -> None:
    assert Mapping("m", sql=sql, key="a", register=False).read_tables() == tables


def test_declared_tables_win_and_are_checked() -> None:
    m = Mapping("m", sql="SELECT a FROM v", key="a", tables=["db.t1", "t2"], register=False)
    assert m.read_tables() == (("db", "t1"), (None, "t2"))
    assert m.reads("db.t1") and m.reads("t2") and m.reads("default.t2")
    assert not m.reads("other.t1") and not m.reads("v")
    with pytest.raises(DeclarationError, match="not a table name"):
        Mapping("m", sql="SELECT 1", key="a", tables=["a b"], register=False)
    with pytest.raises(DeclarationError, match=r"list of 'database\.table'"):
        Mapping("m", sql="SELECT 1", key="a", tables="db.t", register=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "match"), [
    ({"validate": "always"}, "validate='always'"),
    ({"validate_interval": "1s"}, "from 10 s to below the ttl"),
    ({"validate_interval": "2h"}, "from 10 s to below the ttl"),
    ({"validate_interval": "5m", "validate": None}, "with validate='auto'"),
])
def test_bad_validation_options_are_refused(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(DeclarationError, match=match):
        Mapping("m", sql="SELECT a FROM t", key="a", ttl="1h", register=False, **kw)


def test_validation_options_do_not_change_the_fingerprint() -> None:
    a = Mapping("m", sql="SELECT a FROM t", key="a", register=False)
    b = Mapping("m", sql="SELECT a FROM t", key="a", register=False, validate="glue",
                tables=["t"], validate_interval="5m")
    assert a.fingerprint == b.fingerprint


def test_toml_takes_the_validation_options(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text('[mappings.m]\nsql = "SELECT a FROM t"\nkey = "a"\nvalidate = false\n'
                 '[mappings.n]\nsql = "SELECT a FROM v"\nkey = "a"\ntables = ["db.t"]\n'
                 'validate_interval = "5m"\n')
    m, n = athena_warm.declarations.load_config(p)
    assert m.validate is None and n.tables == ("db.t",) and n.validate_interval == 300
