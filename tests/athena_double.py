"""A real-enough Athena for tests: moto serves the API, DuckDB computes the results.

Attach to a boto3 Athena client with ``AthenaDouble(client, s3_client, lake)``. On every
StartQueryExecution it parses each ExecutionParameters entry as exactly one Athena literal (as
Athena does: a value can never change the statement), runs the SQL text on DuckDB over the same
lake as the duckdb origin, and hands the rows to moto's result queue just before moto takes
them. Because moto writes the result CSV without doubling quotes inside values (real Athena
doubles them), the double rewrites the CSV as Athena would. moto never reports FAILED: a query
that DuckDB rejects is reported FAILED with DuckDB's message, through an after-call hook.
GetQueryResults pages as Athena's does (moto ignores MaxResults and NextToken).
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from athena_warm.adapters.duckdb import DuckDBOrigin
from moto.athena.models import QueryResults, athena_backends
from moto.athena.responses import AthenaResponse
from moto.core import DEFAULT_ACCOUNT_ID

from athena_warm.exceptions import OriginError

_LITERAL = re.compile(
    r"""^(?:
        (?P<null>NULL) |
        (?P<bool>true|false) |
        (?P<double>-?\d+(?:\.\d+)?[eE][-+]?\d+) |
        (?P<special>nan\(\)|infinity\(\)|-infinity\(\)) |
        (?P<num>-?\d+(?:\.\d+)?) |
        (?P<typed>DATE|TIMESTAMP|DECIMAL)\s+'(?P<typed_body>[^']*)' |
        '(?P<str>(?:[^']|'')*)'
    )$""",
    re.X | re.I | re.S,
)


class LiteralError(ValueError):
    pass


def parse_literal(text: str) -> Any:
    m = _LITERAL.match(text)
    if not m:
        raise LiteralError(f"execution parameter is not one literal: {text!r}")
    if m.group("null"):
        return None
    if m.group("bool"):
        return m.group("bool").lower() == "true"
    if m.group("double"):
        return float(m.group("double"))  # an exponent makes a DOUBLE
    if m.group("special"):
        return {"nan()": math.nan, "infinity()": math.inf,
                "-infinity()": -math.inf}[m.group("special").lower()]
    if m.group("num"):
        n = m.group("num")
        return Decimal(n) if "." in n else int(n)  # 1.5 is a DECIMAL literal in Athena
    if m.group("typed"):
        kind, body = m.group("typed").upper(), m.group("typed_body")
        if kind == "DATE":
            return date.fromisoformat(body)
        if kind == "TIMESTAMP":
            return datetime.fromisoformat(body)
        return Decimal(body)
    return m.group("str").replace("''", "'")


def _varchar(v: Any) -> str | None:
    if v is None:
        return None
    return _text(v)


def _json(v: Any) -> str | None:
    return None if v is None else json.dumps(v, separators=(",", ":"))


def _text(v: Any) -> str:
    """A value as Athena writes it in a result file: nested values in Trino's text form
    (``[1, 2]``, ``{a=1}``, ``{x=1, y=hi}``, ``null`` inside), strings unquoted."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(v, float):
        return _java_double(v)
    if isinstance(v, (list, tuple)):
        if isinstance(v, tuple):  # an anonymous row
            return "{" + ", ".join(f"field{i}={_text(x)}" for i, x in enumerate(v)) + "}"
        return "[" + ", ".join(_text(x) for x in v) + "]"
    if isinstance(v, dict):
        names = list(v)
        if names == [f"_{i}" for i in range(len(names))]:  # sqlglot's anonymous row
            names = [f"field{i}" for i in range(len(names))]
        return "{" + ", ".join(f"{_text(k) if not isinstance(k, str) else n}={_text(x)}"
                               for n, (k, x) in zip(names, v.items(), strict=True)) + "}"
    if isinstance(v, Decimal):
        return format(v, "f")  # Athena writes 0.000000000, never 0E-9
    if isinstance(v, (bytes, bytearray)):
        return " ".join(f"{b:02x}" for b in v)
    return str(v)


def _java_double(v: float) -> str:
    """Java's Double.toString, which Athena uses: 1.5, 1.0E10, NaN, Infinity."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0 or 1e-3 <= abs(v) < 1e7:
        return repr(v)  # shortest digits, always with a '.': 1.5, 100.0
    sign, digits, exp = Decimal(repr(v)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    exponent = len(digits) + int(exp) - 1
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{exponent}"


def _csv_field(v: str | None) -> str:
    return "" if v is None else '"' + v.replace('"', '""') + '"'


def _paged_get_query_results(self: Any) -> str:
    """GetQueryResults as Athena serves it: at most MaxResults rows (1 to 1000, default 1000)
    per page, the header row first, NextToken to the next page (moto returns every row at
    once and ignores both)."""
    exec_id = self._get_param("QueryExecutionId")
    limit = int(self._get_param("MaxResults") or 1000)
    if not 1 <= limit <= 1000:
        return json.dumps({"__type": "InvalidRequestException",
                           "Message": "MaxResults must be between 1 and 1000"}), {"status": 400}
    start = int(self._get_param("NextToken") or 0)
    result = self.athena_backend.get_query_results(exec_id)
    page: dict[str, Any] = {"ResultSet": {
        "Rows": result.rows[start:start + limit],
        "ResultSetMetadata": {"ColumnInfo": result.column_info}}, "UpdateCount": 0}
    if start + limit < len(result.rows):
        page["NextToken"] = str(start + limit)
    return json.dumps(page)


AthenaResponse.get_query_results = _paged_get_query_results  # type: ignore[assignment]


class AthenaDouble:
    def __init__(self, athena: Any, s3: Any, lake: str, *, region: str = "us-east-1",
                 events: Any = None, memo: bool = False) -> None:
        """Hooks ``athena``'s client events, or ``events`` (a boto3 Session's, so that every
        client made from it, a peer library's too, is served). ``memo`` renders each distinct
        query once (benchmarks: the readers, not the double, are measured)."""
        self.athena = athena
        self.s3 = s3
        self.engine = DuckDBOrigin(lake)
        self.backend = athena_backends[DEFAULT_ACCOUNT_ID][region]
        self.started: list[dict[str, Any]] = []  # every StartQueryExecution request
        self.failures: dict[str, str] = {}  # query id -> reason reported as FAILED
        self.cancel_next = False
        self.last_run: dict[Any, float] = {}  # query -> when it last ran (result reuse)
        self.reused: set[str] = set()  # query ids Athena answered from a stored result
        self._pending_reuse = False
        self._pending_csv: bytes | None = None
        self._pending_error: str | None = None
        self._memo: dict[Any, tuple[Any, Any, bytes]] | None = {} if memo else None
        ev = events if events is not None else athena.meta.events
        ev.register("before-parameter-build.athena.StartQueryExecution", self._before_start)
        ev.register("after-call.athena.StartQueryExecution", self._after_start)
        ev.register("after-call.athena.GetQueryExecution", self._after_get)

    def _before_start(self, params: dict[str, Any], **_: Any) -> None:
        self.started.append(params)
        self._pending_csv = self._pending_error = None
        self._pending_reuse = False
        reuse = params.get("ResultReuseConfiguration", {}).get("ResultReuseByAgeConfiguration", {})
        query_key = (params["QueryString"], tuple(params.get("ExecutionParameters", ())),
                     params.get("QueryExecutionContext", {}).get("Database"))
        last = self.last_run.get(query_key)
        if reuse.get("Enabled") and last is not None and \
                time.time() - last <= 60 * int(reuse.get("MaxAgeInMinutes", 60)):
            self._pending_reuse = True  # Athena serves the stored result; nothing is scanned
        else:
            self.last_run[query_key] = time.time()
        memo_key = (params["QueryString"], tuple(params.get("ExecutionParameters", ())),
                    params.get("QueryExecutionContext", {}).get("Database"))
        if self._memo is not None and memo_key in self._memo:
            rows, info, self._pending_csv = self._memo[memo_key]
            self.backend.query_results_queue.append(QueryResults(rows=rows, column_info=info))
            return
        try:
            values = [parse_literal(p) for p in params.get("ExecutionParameters", [])]
            database = params.get("QueryExecutionContext", {}).get("Database")
            result = self.engine.query(params["QueryString"], values, database=database)
        except (OriginError, LiteralError) as exc:
            self._pending_error = str(exc)
            self.backend.query_results_queue.append(QueryResults(rows=[], column_info=[]))
            return
        header = [c.name for c in result.columns]
        render = [_json if c.type == "json" else _varchar for c in result.columns]
        texts = [[f(v) for f, v in zip(render, row, strict=True)] for row in result.rows]
        rows = [{"Data": [{"VarCharValue": h} for h in header]}] + [
            {"Data": [{"VarCharValue": t} if t is not None else {} for t in row]} for row in texts
        ]
        info = []
        for c in result.columns:
            t, precision, scale = c.type, 0, 0
            m = re.match(r"decimal\((\d+),(\d+)\)", t)
            if m:
                t, precision, scale = "decimal", int(m.group(1)), int(m.group(2))
            t = t.split("(")[0] if t.split("(")[0] in ("array", "map", "row") else t
            info.append({"Name": c.name, "Label": c.name, "Type": t, "Precision": precision,
                         "Scale": scale, "Nullable": "UNKNOWN", "CaseSensitive": True})
        self.backend.query_results_queue.append(QueryResults(rows=rows, column_info=info))
        self._pending_csv = "".join(
            ",".join(_csv_field(v) for v in row) + "\n" for row in [header, *texts]
        ).encode()
        if self._memo is not None:
            self._memo[memo_key] = (rows, info, self._pending_csv)

    def _after_start(self, parsed: dict[str, Any], **_: Any) -> None:
        qid = parsed["QueryExecutionId"]
        if self._pending_error is not None:
            self.failures[qid] = self._pending_error
        if self._pending_reuse:
            self.reused.add(qid)
        execution = self.backend.executions[qid]
        out = (execution.config or {}).get("OutputLocation")
        if out and self._pending_csv is not None:
            bucket, _, key = out[len("s3://"):].partition("/")
            self.s3.put_object(Bucket=bucket, Key=key, Body=self._pending_csv)
        if self.cancel_next:
            self.cancel_next = False
            self.backend.stop_query_execution(qid)

    def _after_get(self, parsed: dict[str, Any], **_: Any) -> None:
        qe = parsed.get("QueryExecution", {})
        if "Statistics" in qe or qe.get("QueryExecutionId") in self.reused:
            stats = qe.setdefault("Statistics", {})
            reused = qe.get("QueryExecutionId") in self.reused
            stats["ResultReuseInformation"] = {"ReusedPreviousResult": reused}
            if reused:
                stats["DataScannedInBytes"] = 0
        reason = self.failures.get(qe.get("QueryExecutionId", ""))
        if reason is not None:
            qe["Status"] = {"State": "FAILED", "StateChangeReason": reason,
                            "AthenaError": {"ErrorMessage": reason}}
