"""The Athena origin through moto, with results computed by DuckDB from the real SQL."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import boto3
import pytest
from athena_warm.adapters.athena import AthenaOrigin, athena_literal
from botocore.awsrequest import AWSResponse

import athena_warm
from athena_warm import Mapping
from athena_warm.exceptions import OriginError, OriginTimeoutError
from tests.athena_double import AthenaDouble, parse_literal
from tests.conftest import REGION, FakeClock


def run(origin: Any, sql: str, *params: Any) -> Any:
    return origin.query(sql, params, database="analytics", workgroup=None, catalog=None)


def test_values_are_sent_as_execution_parameters_not_in_the_sql(athena: Any) -> None:
    sql = "SELECT customer_id FROM customers WHERE region = ? AND n < ?"
    r = run(athena, sql, "r1", 10)
    req = athena.double.started[-1]
    assert req["QueryString"] == sql  # the text is sent as written
    assert req["ExecutionParameters"] == ["'r1'", "10"]
    assert req["ResultConfiguration"] == {"OutputLocation": "s3://athena-results/staging/"}
    assert req["QueryExecutionContext"] == {"Database": "analytics", "Catalog": "AwsDataCatalog"}
    assert req["WorkGroup"] == "primary"
    assert sorted(x[0] for x in r.rows) == ["C0001", "C0003", "C0005", "C0007", "C0009"]
    assert r.query_id


@pytest.mark.parametrize("value", [
    "plain", "it's", "''", "x'); DROP TABLE t; --", 'say "hi"', "", "?", "\\", "line\nbreak",
    0, -7, 2**62, 1.25, True, False, None,
])
def test_every_literal_is_exactly_one_literal(value: Any) -> None:
    back = parse_literal(athena_literal(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value", [1.5, -0.0, 1e300, 5e-324, float("inf"), float("-inf")])
def test_a_float_parameter_is_a_double_on_both_origins(any_origin: Any, value: float) -> None:
    """A plain 1.5 is a DECIMAL literal in Athena: it came back as Decimal('1.5') (issue 11)."""
    r = any_origin.query("SELECT ? AS x", (value,), database="analytics", workgroup=None,
                         catalog=None)
    (got,), = r.rows
    assert type(got) is float and got == value and math.copysign(1, got) == math.copysign(
        1, value)
    assert r.columns[0].type == "double"


def test_a_nan_parameter_is_a_double(any_origin: Any) -> None:
    r = any_origin.query("SELECT ? AS x", (float("nan"),), database="analytics",
                         workgroup=None, catalog=None)
    assert math.isnan(r.rows[0][0])


def test_failed_query_carries_id_and_athenas_reason(athena: Any) -> None:
    with pytest.raises(OriginError) as ei:
        run(athena, "SELECT nope FROM customers")
    err = ei.value
    assert err.state == "FAILED" and err.query_id and "nope" in (err.reason or "")
    assert err.query_id in str(err)


def test_cancelled_query(athena: Any) -> None:
    athena.double.cancel_next = True
    with pytest.raises(OriginError) as ei:
        run(athena, "SELECT customer_id FROM customers")
    assert ei.value.state == "CANCELLED" and ei.value.query_id


def test_timeout_stops_the_query_with_backoff(athena: Any, clock: FakeClock) -> None:
    from moto.moto_api import state_manager

    state_manager.set_transition("athena::execution", {"progression": "manual", "times": 10**6})
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock.advance(s)

    athena._sleep = sleep
    athena.query_timeout = 30.0
    try:
        with pytest.raises(OriginTimeoutError) as ei:
            run(athena, "SELECT customer_id FROM customers")
    finally:
        state_manager.unset_transition("athena::execution")
    err = ei.value
    assert err.state == "TIMEOUT" and err.query_id and "ATHENA_WARM_QUERY_TIMEOUT" in str(err)
    assert sum(sleeps) == pytest.approx(30.0)
    assert sleeps[0] == 0.25 and sleeps[1] == 0.375 and max(sleeps) <= 5.0  # backoff, capped
    backend = athena.double.backend
    assert backend.executions[err.query_id].status == "CANCELLED"  # StopQueryExecution was sent


def _throttle(**_: Any) -> Any:
    http = AWSResponse("https://athena", 400, {}, None)
    return http, {"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"},
                  "ResponseMetadata": {"HTTPStatusCode": 400}}


def test_throttling_is_one_origin_error(aws: None) -> None:
    origin = AthenaOrigin(region=REGION, max_attempts=1)
    athena_client, _ = origin.clients()
    athena_client.meta.events.register("before-call.athena.StartQueryExecution", _throttle)
    with pytest.raises(OriginError) as ei:
        run(origin, "SELECT 1")
    assert ei.value.state == "THROTTLED"
    assert "TooManyRequestsException" in str(ei.value) and "quota" in str(ei.value)


def test_without_staging_dir_results_are_paged(aws: None, lake: Path, clock: FakeClock) -> None:
    origin = AthenaOrigin(region=REGION, sleep=clock.sleep, clock=clock)
    a, s = origin.clients()
    double = AthenaDouble(a, s, str(lake))
    r = run(origin, "SELECT id, txt FROM typed ORDER BY id")
    assert "ResultConfiguration" not in double.started[-1]
    assert r.rows == [(1, 'it\'s "quoted", ok'), (2, None), (3, "")]


def test_clients_are_made_once_per_container(athena: Any) -> None:
    first = athena.clients()
    run(athena, "SELECT count(*) AS n FROM customers")
    run(athena, "SELECT count(*) AS n FROM customers")
    assert athena.clients() is first


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATHENA_WARM_WORKGROUP", "analysts")
    monkeypatch.setenv("ATHENA_WARM_QUERY_TIMEOUT", "3m")
    monkeypatch.setenv("ATHENA_WARM_S3_STAGING_DIR", "s3://b/p/")
    o = AthenaOrigin(query_timeout="90s")
    assert o.workgroup == "analysts" and o.query_timeout == 90.0 and o.s3_staging_dir == "s3://b/p/"
    monkeypatch.setenv("ATHENA_WARM_S3_STAGING_DIR", "my-bucket/prefix")
    with pytest.raises(Exception, match="s3://"):
        AthenaOrigin()


def test_a_mapping_loads_through_athena(athena: Any, make_cache: Any) -> None:
    Mapping("active", sql="SELECT customer_id, account_id FROM customers WHERE active AND n < ?",
            params=[30], key="customer_id", value="account_id", database="analytics")
    m = make_cache(athena).get("active")
    assert m["C0003"] == "A3" and len(m) == 10 and m.meta.tier == "origin"
    assert m.meta.query_id in athena.double.backend.executions
    assert boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket="athena-results")["KeyCount"] >= 1


# -- Athena's own result reuse, opt-in per mapping (issue 11) -------------------------------------


def test_result_reuse_lets_cold_containers_share_one_scan(athena: Any, clock: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    Mapping("reused", sql="SELECT customer_id, account_id FROM customers", key="customer_id",
            value="account_id", database="analytics", ttl="1h", reuse="15m")
    first = athena_warm.Cache(origin=athena, l2=False, clock=clock).get("reused")
    with caplog.at_level(logging.INFO, logger="athena_warm"):
        second = athena_warm.Cache(origin=athena, l2=False, clock=clock).get("reused")
    starts = athena.double.started
    assert starts[-1]["ResultReuseConfiguration"] == {
        "ResultReuseByAgeConfiguration": {"Enabled": True, "MaxAgeInMinutes": 15}}
    assert first.meta.reused_previous_result is False
    assert second.meta.reused_previous_result is True and dict(second) == dict(first)
    assert "Athena reused a stored result" in caplog.text


def test_without_reuse_nothing_is_asked(athena: Any, clock: Any) -> None:
    Mapping("not_reused", sql="SELECT customer_id, account_id FROM customers",
            key="customer_id", value="account_id", database="analytics")
    athena_warm.Cache(origin=athena, l2=False, clock=clock).get("not_reused")
    assert "ResultReuseConfiguration" not in athena.double.started[-1]


@pytest.mark.parametrize("reuse, ttl", [("30s", "1h"), ("2h", "1h"), ("8d", "30d"), ("x", "1h")])
def test_reuse_must_fit_athenas_range_and_the_ttl(reuse: str, ttl: str) -> None:
    with pytest.raises(athena_warm.exceptions.DeclarationError, match="reuse"):
        Mapping("bad_reuse", sql="SELECT 1 AS a", key="a", ttl=ttl, reuse=reuse,
                register=False)


def test_reused_results_are_counted_in_the_metrics() -> None:
    from athena_warm.middleware import InvocationMetrics

    m = InvocationMetrics(namespace=None, service=None, price_per_tb=5.0)
    m.record({"event": "load", "mapping": "m", "tier": "origin", "bytes_scanned": 0,
              "reused_previous_result": True})
    assert m.counts["m"]["AthenaResultsReused"] == 1 and m.counts["m"]["OriginQueries"] == 1
