"""The production origin: Amazon Athena through boto3, results read from S3 and typed by PyAthena.

Lifecycle: StartQueryExecution (SQL text unchanged, values bound as ExecutionParameters), poll
GetQueryExecution with backoff until a final state or the query timeout, then read the result
CSV that Athena wrote to S3 (falling back to paged GetQueryResults when there is no output
location or the file cannot be read), converting every column once from its Athena type
(``_athena_result``).

boto3 is imported on first use; the clients are made once per container.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .._config import resolve, resolve_seconds
from ..exceptions import ConfigurationError, OriginError, OriginTimeoutError
from ..origin import Column, QueryResult, time_left
from . import _validators

log = logging.getLogger("athena_warm")

_THROTTLE_CODES = {"ThrottlingException", "TooManyRequestsException", "SlowDown",
                   "RequestLimitExceeded", "Throttling"}
_TRANSIENT_CODES = {"InternalServerException", "InternalError", "ServiceUnavailable",
                    "RequestTimeout"}
_FINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELLED"}


def athena_literal(value: Any) -> str:
    """An Athena literal for one ExecutionParameters entry.

    Athena parses each execution parameter as one literal, separately from the SQL text, so a
    value can never change the statement; quotes inside strings are doubled as SQL requires.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # A plain 1.5 is a DECIMAL literal in Athena; the exponent makes it a DOUBLE, as the
        # value is in Python (and in DuckDB). NaN and the infinities have no literal.
        if value != value:
            return "nan()"
        if value in (math.inf, -math.inf):
            return "infinity()" if value > 0 else "-infinity()"
        text = repr(value).upper()
        return text if "E" in text else text + "E0"
    if isinstance(value, Decimal):
        return f"DECIMAL '{value}'"
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ', timespec='milliseconds')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ConfigurationError(f"cannot bind a {type(value).__name__} as an Athena parameter")


class AthenaOrigin:
    """Runs queries on Athena. Options: argument > ``ATHENA_WARM_*`` variable > default."""

    name = "athena"
    supports_reuse = True  # start(reuse=...): Athena's query result reuse

    def __init__(
        self,
        *,
        workgroup: str | None = None,
        s3_staging_dir: str | None = None,
        region: str | None = None,
        catalog: str | None = None,
        database: str | None = None,
        poll_interval: str | float | None = None,
        max_poll_interval: str | float | None = None,
        query_timeout: str | float | None = None,
        max_attempts: int | None = None,
        cancel_on_timeout: bool = True,
        session: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workgroup: str = resolve(workgroup, "WORKGROUP", "primary")
        self.s3_staging_dir: str | None = resolve(s3_staging_dir, "S3_STAGING_DIR", None)
        if self.s3_staging_dir is not None and not self.s3_staging_dir.startswith("s3://"):
            raise ConfigurationError(
                f"athena s3_staging_dir {self.s3_staging_dir!r} must be an s3://bucket/prefix/ "
                "URL (ATHENA_WARM_S3_STAGING_DIR)"
            )
        self.region: str | None = resolve(
            region, "REGION", os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        )
        self.catalog: str = resolve(catalog, "CATALOG", "AwsDataCatalog")
        self.database: str = resolve(database, "DATABASE", "default")
        self.poll_interval = resolve_seconds(poll_interval, "POLL_INTERVAL", 0.25)
        self.max_poll_interval = resolve_seconds(max_poll_interval, "MAX_POLL_INTERVAL", 5.0)
        self.query_timeout = resolve_seconds(query_timeout, "QUERY_TIMEOUT", 600.0)
        attempts = resolve(max_attempts, "AWS_MAX_ATTEMPTS", 5, int)
        if attempts < 1:
            raise ConfigurationError("athena max_attempts must be at least 1")
        self.max_attempts: int = attempts
        self.cancel_on_timeout = cancel_on_timeout
        self._session = session
        self._sleep = sleep
        self._clock = clock
        self._clients: tuple[Any, Any] | None = None
        self._glue: Any = None
        self.validate_max_keys: int = resolve(None, "VALIDATE_MAX_KEYS",
                                              _validators.DEFAULT_MAX_KEYS, int)
        self._lock = threading.Lock()
        # Called after every status poll with {query_id, state, elapsed_s, scanned_bytes}:
        # the CLI shows a long query's progress with it.
        self.progress: Callable[[dict[str, Any]], None] | None = None

    # -- clients ---------------------------------------------------------------------------------

    def clients(self) -> tuple[Any, Any]:
        """(athena, s3) boto3 clients, made once per container."""
        if self._clients is None:
            with self._lock:
                if self._clients is None:
                    import boto3

                    session = self._session or boto3.session.Session()
                    if not self.region and not session.region_name:
                        raise ConfigurationError(
                            "the Athena origin needs an AWS region: set AWS_REGION (Lambda "
                            "sets it), AWS_DEFAULT_REGION or ATHENA_WARM_REGION")
                    config = self._config()
                    self._clients = (
                        session.client("athena", config=config),
                        session.client("s3", config=config),
                    )
        return self._clients

    def _config(self) -> Any:
        from botocore.config import Config

        return Config(
            region_name=self.region,
            # one attempt per call: _call retries, within the invocation's time
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=3,
            read_timeout=10,
        )

    def glue(self) -> Any:
        """The Glue client (change validators), made on first use."""
        if self._glue is None:
            with self._lock:
                if self._glue is None:
                    import boto3

                    session = self._session or boto3.session.Session()
                    self._glue = session.client("glue", config=self._config())
        return self._glue

    # -- change validators -----------------------------------------------------------------------

    def validator(self, tables: Sequence[tuple[str | None, str]], *, database: str | None,
                  catalog: str | None, listing: bool) -> str | None:
        """A fingerprint of the tables' state from Glue (and, with ``listing``, their S3
        files); None for a view or a location with too many files. OriginError on failure."""
        cat = catalog or self.catalog
        if cat.lower() != "awsdatacatalog":
            log.info("athena-warm: no change validator for catalog %s (only the Glue "
                     "AwsDataCatalog is read); refreshing on the TTL", cat)
            return None
        catalog_id = None
        _, s3 = self.clients()
        glue = self.glue()
        try:
            states = [_validators.table_state(
                self._call, glue, s3, db or database or self.database, table,
                catalog_id=catalog_id, listing=listing, max_keys=self.validate_max_keys)
                for db, table in tables]
        except _validators.Unknown as exc:
            log.info("athena-warm: no change validator: %s; refreshing on the TTL", exc)
            return None
        return _validators.fingerprint(states)

    def table_location(self, database: str, table: str) -> str | None:
        """The table's S3 location from Glue (None for a view or no location)."""
        got = self._call(self.glue().get_table, None, DatabaseName=database, Name=table)
        loc = ((got.get("Table") or {}).get("StorageDescriptor") or {}).get("Location")
        return loc if isinstance(loc, str) and loc.startswith("s3://") else None

    # -- the query lifecycle ---------------------------------------------------------------------

    def start(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        database: str | None,
        workgroup: str | None,
        catalog: str | None,
        reuse: float | None = None,
    ) -> str:
        """StartQueryExecution; return the QueryExecutionId. ``reuse`` (seconds, at least 60)
        lets Athena serve a stored result of the same query that is at most that old."""
        athena, _ = self.clients()
        request: dict[str, Any] = {
            "QueryString": sql,
            "WorkGroup": workgroup or self.workgroup,
            "QueryExecutionContext": {
                "Database": database or self.database,
                "Catalog": catalog or self.catalog,
            },
        }
        if self.s3_staging_dir:
            request["ResultConfiguration"] = {"OutputLocation": self.s3_staging_dir}
        if params:
            request["ExecutionParameters"] = [athena_literal(v) for v in params]
        if reuse:
            request["ResultReuseConfiguration"] = {"ResultReuseByAgeConfiguration": {
                "Enabled": True, "MaxAgeInMinutes": max(1, min(10080, int(reuse // 60)))}}
        # One token for every attempt: a retry after a lost response never starts a second
        # query (Athena returns the first one's id).
        request["ClientRequestToken"] = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        response = self._call(athena.start_query_execution, None,
                              _abandoned=self._stop_started, **request)
        return str(response["QueryExecutionId"])

    def wait(self, query_id: str, *, max_wait: float | None = None) -> dict[str, Any] | None:
        """Poll until a final state; return the QueryExecution of a SUCCEEDED query.

        ``max_wait`` seconds stops waiting early and returns None while the query still runs,
        leaving it running: the caller hands its QueryExecutionId over to a later invocation.
        ``max_wait=0`` looks once. The query timeout counts from this call.
        """
        athena, _ = self.clients()
        try:
            return self._wait(athena, query_id, max_wait)
        except KeyboardInterrupt:  # Ctrl-C in the CLI: do not leave the query running
            self._stop(query_id)
            raise

    def _wait(self, athena: Any, query_id: str, max_wait: float | None) -> dict[str, Any] | None:
        started = self._clock()
        deadline = started + self.query_timeout
        left = time_left()
        if left is not None:  # never poll past the invocation's time
            max_wait = max(0.0, left) if max_wait is None else min(max_wait, max(0.0, left))
        until = None if max_wait is None else started + max_wait
        interval = self.poll_interval
        while True:
            qe = self._call(athena.get_query_execution, query_id, QueryExecutionId=query_id)[
                "QueryExecution"
            ]
            status = qe.get("Status", {})
            state = status.get("State", "UNKNOWN")
            if self.progress is not None:
                self.progress({
                    "query_id": query_id, "state": state,
                    "elapsed_s": round(self._clock() - started, 1),
                    "scanned_bytes": qe.get("Statistics", {}).get("DataScannedInBytes"),
                })
            if state == "SUCCEEDED":
                return dict(qe)
            if state in _FINAL_STATES:
                reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get(
                    "ErrorMessage", "no reason given"
                )
                raise OriginError(
                    f"Athena query {query_id} {state}: {reason}",
                    origin=self.name, state=state, query_id=query_id, reason=reason,
                )
            now = self._clock()
            if until is not None and now >= until:
                return None  # still running: hand over
            remaining = deadline - now
            if remaining <= 0:
                self._on_timeout(query_id)
                raise OriginTimeoutError(
                    f"Athena query {query_id} still {state} after the query timeout of "
                    f"{self.query_timeout:g}s"
                    + ("; it was stopped" if self.cancel_on_timeout else "")
                    + ". Raise ATHENA_WARM_QUERY_TIMEOUT or make the query cheaper.",
                    origin=self.name, state="TIMEOUT", query_id=query_id,
                    reason=f"timeout after {self.query_timeout:g}s in state {state}",
                )
            if until is not None:
                remaining = min(remaining, until - now)
            self._sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.max_poll_interval)

    def _on_timeout(self, query_id: str) -> None:
        if self.cancel_on_timeout:
            self._stop(query_id)

    def stop(self, query_id: str) -> None:
        """StopQueryExecution, best effort (logged when it fails)."""
        athena, _ = self.clients()
        try:
            athena.stop_query_execution(QueryExecutionId=query_id)
        except Exception as exc:  # best effort: the timeout is the error to report
            log.warning("athena-warm: could not stop Athena query %s: %s", query_id, exc)

    _stop = stop

    def fetch(self, query_id: str, execution: dict[str, Any]) -> QueryResult:
        """Read a SUCCEEDED query's rows, typed: the result file from S3 when it can be read,
        else GetQueryResults page by page."""
        from ._athena_result import convert_columns, converter_for, paused_gc, rows_to_columns

        athena, s3 = self.clients()
        output = execution.get("ResultConfiguration", {}).get("OutputLocation")
        url = output if output and output.startswith("s3://") and output.endswith(".csv") \
            else None
        # The result file downloads while GetQueryResults says what its columns are: one round
        # trip instead of two.
        body: list[bytes | str] = []
        download = None
        if url is not None:
            context = contextvars.copy_context()  # the deadline goes along
            download = threading.Thread(
                target=lambda: body.append(context.run(self._download, s3, query_id, url)),
                name="athena-warm-result-download", daemon=True)
            download.start()
        try:
            first = self._call(
                athena.get_query_results, query_id, QueryExecutionId=query_id, MaxResults=1
            )
        finally:
            if download is not None:
                download.join()
        info = first["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
        columns = tuple(Column(c["Name"], _type_name(c)) for c in info)
        converters = [converter_for(str(c.get("Type", "varchar"))) for c in info]
        try:
            with paused_gc():
                raw = None
                if url is not None:
                    raw = self._parse_csv(body[0] if body else "no download", query_id, url,
                                          len(columns))
                if raw is None:
                    raw = rows_to_columns(self._read_pages(athena, query_id), len(columns))
                if raw and raw[0] and [c[0] for c in raw] == [c.name for c in columns]:
                    raw = [c[1:] for c in raw]  # the header row of a SELECT
                rows = convert_columns(raw, converters)
                del raw
        except (ValueError, ArithmeticError) as exc:
            raise OriginError(
                f"Athena query {query_id}: a value in its result does not fit its column type "
                f"({exc}). Report it with the query id; CAST the column in the SQL meanwhile.",
                origin=self.name, state="ERROR", query_id=query_id, reason=str(exc),
            ) from exc
        stats = execution.get("Statistics", {})
        reused = stats.get("ResultReuseInformation", {}).get("ReusedPreviousResult")
        return QueryResult(columns=columns, rows=rows, query_id=query_id,
                           bytes_scanned=stats.get("DataScannedInBytes"),
                           reused_previous_result=None if reused is None else bool(reused))

    def query(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        database: str | None,
        workgroup: str | None,
        catalog: str | None,
        reuse: float | None = None,
    ) -> QueryResult:
        query_id = self.start(sql, params, database=database, workgroup=workgroup,
                              catalog=catalog, reuse=reuse)
        execution = self.wait(query_id)
        assert execution is not None  # no `until`: a final state or an error
        return self.fetch(query_id, execution)

    # -- helpers ---------------------------------------------------------------------------------

    def _download(self, s3: Any, query_id: str, url: str) -> bytes | str:
        """The result file's bytes, or why it could not be read (never raises: the caller
        pages GetQueryResults instead)."""
        bucket, _, key = url[len("s3://") :].partition("/")
        try:
            response = self._call(s3.get_object, query_id, Bucket=bucket, Key=key)
            return bytes(response["Body"].read())
        except OriginError as exc:
            return exc.reason or str(exc)
        except Exception as exc:  # the body's stream: a reset connection, a timeout
            return f"{type(exc).__name__}: {exc}"

    def _parse_csv(self, body: bytes | str, query_id: str, url: str,
                   width: int) -> list[list[str | None]] | None:
        """The result file's columns, or None (logged) when it could not be downloaded or read:
        the caller pages GetQueryResults instead."""
        from ._athena_result import ResultFileError, read_columns

        if isinstance(body, bytes):
            try:
                return read_columns(body, width)
            except ResultFileError as exc:
                body = str(exc)
        log.warning(
            "athena-warm: cannot read the result file %s (%s); paging GetQueryResults instead. "
            "Grant s3:GetObject on the staging dir to read results faster.", url, body,
            extra={"query_id": query_id},
        )
        return None

    def _read_pages(self, athena: Any, query_id: str) -> list[list[str | None]]:
        out: list[list[str | None]] = []
        token = None
        while True:
            kw: dict[str, Any] = {"QueryExecutionId": query_id, "MaxResults": 1000}
            if token:
                kw["NextToken"] = token
            page = self._call(athena.get_query_results, query_id, **kw)
            for row in page["ResultSet"]["Rows"]:
                out.append([d.get("VarCharValue") for d in row["Data"]])
            token = page.get("NextToken")
            if not token:
                return out

    def _stop_started(self, response: Any) -> None:
        """A StartQueryExecution that answered after its caller gave up: stop that query."""
        query_id = response.get("QueryExecutionId") if isinstance(response, dict) else None
        if query_id:
            log.warning("athena-warm: query %s started after the invocation gave up on it; "
                        "stopping it", query_id, extra={"query_id": query_id})
            self.stop(str(query_id))

    def _call(self, fn: Callable[..., Any], query_id: str | None, *,
              _abandoned: Callable[[Any], None] | None = None, **kwargs: Any) -> Any:
        """Call boto3 with at most ``max_attempts`` attempts in all, retrying throttling, 5xx
        and dropped connections with jittered backoff, never past the time left in the
        invocation; every error becomes one OriginError with AWS's reason."""
        from botocore.exceptions import BotoCoreError, ClientError

        op = getattr(fn, "__name__", "call")
        attempt = 0
        while True:
            attempt += 1
            left = time_left()
            if left is not None and left <= 0:
                raise OriginError(
                    f"Athena {op} not attempted: the invocation has no time left"
                    + (f" (query {query_id})" if query_id else ""),
                    origin=self.name, state="DEADLINE", query_id=query_id,
                    reason="no time left in the invocation")
            try:
                return _bounded(fn, kwargs, left, _abandoned)
            except _OutOfTime:
                raise OriginError(
                    f"Athena {op} did not answer in the {left:.1f} s the invocation had left"
                    + (f" (query {query_id})" if query_id else ""),
                    origin=self.name, state="DEADLINE", query_id=query_id,
                    reason="no answer before the invocation's deadline") from None
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", "Unknown"))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                reason = f"{code}: {err.get('Message', '')}".strip()
                throttled = code in _THROTTLE_CODES
                retryable = throttled or code in _TRANSIENT_CODES or int(status or 0) >= 500
                error = exc
            except BotoCoreError as exc:
                reason, throttled, error = f"{type(exc).__name__}: {exc}", False, exc
                retryable = _is_transient(exc)
                code = ""
            delay = self._backoff(attempt)
            left = time_left()
            out_of_time = left is not None and delay >= left
            if not retryable or attempt >= self.max_attempts or out_of_time:
                raise self._error(op, query_id, reason, code=code, throttled=throttled,
                                  attempts=attempt, out_of_time=out_of_time and retryable
                                  and attempt < self.max_attempts) from error
            log.info("athena-warm: Athena %s attempt %d of %d failed (%s); retrying in %.2f s",
                     op, attempt, self.max_attempts, reason, delay,
                     extra={"query_id": query_id})
            self._sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: a random delay up to 0.2 s, 0.4 s, 0.8 s... capped at 5 s."""
        return random.uniform(0, min(5.0, 0.2 * 2 ** (attempt - 1)))

    def _error(self, op: str, query_id: str | None, reason: str, *, code: str, throttled: bool,
               attempts: int, out_of_time: bool) -> OriginError:
        tries = f" after {attempts} attempt{'s' if attempts > 1 else ''}"
        if out_of_time:
            hint = " The invocation's time ran out before another attempt."
        elif throttled:
            hint = (" Athena is throttling this account; retry later, raise "
                    "ATHENA_WARM_AWS_MAX_ATTEMPTS, or ask for a higher quota.")
        elif not code:
            hint = (" Check AWS credentials, region (ATHENA_WARM_REGION or AWS_REGION) and "
                    "network access to Athena.")
        else:
            hint = ""
        if throttled:
            state = "THROTTLED"
        elif out_of_time:
            state = "DEADLINE"
        else:
            state = "FAILED" if query_id is None and code else "ERROR"
        return OriginError(
            f"Athena {op} failed" + (f" for query {query_id}" if query_id else "")
            + f"{tries}: {reason}.{hint}",
            origin=self.name, state=state, query_id=query_id, reason=reason)


_SOCKET_BOUND = 13.0  # a call's own worst case: 3 s to connect + 10 s for a read


class _OutOfTime(Exception):
    pass


def _bounded(fn: Callable[..., Any], kwargs: dict[str, Any], left: float | None,
             abandoned: Callable[[Any], None] | None) -> Any:
    """``fn(**kwargs)``, given up after ``left`` seconds when its sockets could take longer:
    the call then finishes on a daemon thread, and ``abandoned`` gets its response."""
    if left is None or left >= _SOCKET_BOUND:
        return fn(**kwargs)
    lock = threading.Lock()
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            value, error = fn(**kwargs), None
        except BaseException as exc:  # handed to the caller, if it still waits
            value, error = None, exc
        with lock:
            box["value"], box["error"] = value, error
            done.set()
            late = box.get("abandoned", False)
        if late and error is None and abandoned is not None:
            abandoned(value)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name="athena-warm-aws-call",
                     daemon=True).start()
    done.wait(max(0.0, left))
    with lock:
        if not done.is_set():
            box["abandoned"] = True
            raise _OutOfTime
    if box["error"] is not None:
        raise box["error"]
    return box["value"]


def _is_transient(exc: Exception) -> bool:
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    return isinstance(exc, (ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
                            ReadTimeoutError))


def _type_name(col: dict[str, Any]) -> str:
    t = str(col.get("Type", "varchar")).lower()
    if t == "decimal" and col.get("Precision"):
        return f"decimal({col['Precision']},{col.get('Scale', 0)})"
    return t
