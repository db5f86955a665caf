"""Contract tests: every origin passes the same suite (fixtures: duckdb, athena on moto)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from athena_warm.exceptions import OriginError
from athena_warm.origin import Origin

NASTY = "x'; DROP TABLE analytics.customers; -- \" ? %s {0} \\ \n ' OR '1'='1"


def q(origin: Any, sql: str, *params: Any, database: str | None = "analytics") -> Any:
    return origin.query(sql, params, database=database, workgroup=None, catalog=None)


def test_is_an_origin(any_origin: Any) -> None:
    assert isinstance(any_origin, Origin)
    assert any_origin.name in ("duckdb", "athena")


def test_types_convert(any_origin: Any) -> None:
    r = q(any_origin, "SELECT id, dbl, dec, flag, day, ts, txt FROM typed ORDER BY id")
    assert [c.name for c in r.columns] == ["id", "dbl", "dec", "flag", "day", "ts", "txt"]
    types = {c.name: c.type for c in r.columns}
    assert types["id"] == "bigint" and types["dbl"] == "double"
    assert types["dec"].startswith("decimal") and types["flag"] == "boolean"
    assert types["day"] == "date" and types["ts"] == "timestamp" and types["txt"] == "varchar"
    first, nulls, third = r.rows
    assert first == (1, 1.5, Decimal("12.34"), True, date(2024, 2, 29),
                     datetime(2024, 2, 29, 13, 14, 15, 123000), 'it\'s "quoted", ok')
    assert type(first[0]) is int and type(first[2]) is Decimal and type(first[3]) is bool
    assert nulls == (2, None, None, None, None, None, None)
    assert third == (3, -0.25, Decimal("-1.00"), False, date(1970, 1, 1),
                     datetime(1970, 1, 1), "")  # an empty string is not NULL


def test_parameters_are_bound_and_come_back_as_data(any_origin: Any) -> None:
    r = q(any_origin, "SELECT customer_id, ? AS tag FROM customers WHERE customer_id = ?",
          NASTY, "C0007")
    assert r.rows == [("C0007", NASTY)]


def test_parameters_of_every_type(any_origin: Any) -> None:
    r = q(any_origin,
          "SELECT count(*) AS n FROM typed WHERE id > ? AND dbl > ? AND dec = ? AND flag = ? "
          "AND day = ? AND ts = ?",
          0, 1.0, Decimal("12.34"), True, date(2024, 2, 29),
          datetime(2024, 2, 29, 13, 14, 15, 123000))
    assert r.rows == [(1,)]


def test_sql_error_is_an_origin_error(any_origin: Any) -> None:
    with pytest.raises(OriginError) as ei:
        q(any_origin, "SELECT no_such_column FROM customers")
    assert ei.value.state == "FAILED"
    assert "no_such_column" in str(ei.value)


def test_missing_table_is_an_origin_error(any_origin: Any) -> None:
    with pytest.raises(OriginError, match="no_such_table"):
        q(any_origin, "SELECT * FROM no_such_table")


def test_empty_result_has_columns_and_no_rows(any_origin: Any) -> None:
    r = q(any_origin, "SELECT k, v FROM empty")
    assert r.rows == [] and [c.name for c in r.columns] == ["k", "v"]


def test_qualified_table_names(any_origin: Any) -> None:
    r = q(any_origin, "SELECT count(*) AS n FROM analytics.customers", database=None)
    assert r.rows == [(1000,)]
