"""The origin interface: run one query, return its rows with column names and types.

An origin implements ``query()``; everything else (caching, building the mapping, policy) lives
in the core. Production origin: ``athena`` (PyAthena + boto3). Local origin: ``duckdb:PATH``.
Adapters are imported on first use, so importing athena_warm stays cheap.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload, runtime_checkable

from ._config import resolve
from .exceptions import ConfigurationError

__all__ = ["AsyncOrigin", "Column", "ColumnRows", "Origin", "QueryResult", "ValidatingOrigin",
           "open_origin", "time_left"]

# The deadline of the refresh running in this context: (deadline, the clock it is on).
_DEADLINE: contextvars.ContextVar[tuple[float, Callable[[], float]] | None] = \
    contextvars.ContextVar("athena_warm_deadline", default=None)


def time_left() -> float | None:
    """Seconds left for the origin call in progress: the invocation's remaining time, less a
    margin to hand the result over (None outside an invocation). An origin bounds its waits,
    retries and network calls by it, so that no call outlives the invocation."""
    scope = _DEADLINE.get()
    if scope is None:
        return None
    deadline, clock = scope
    return deadline - clock()


@contextlib.contextmanager
def deadline_scope(deadline: float | None, clock: Callable[[], float]) -> Iterator[None]:
    """Run origin calls with ``deadline`` (on ``clock``) visible to them through time_left()."""
    token = _DEADLINE.set(None if deadline is None else (deadline, clock))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@dataclass(frozen=True, slots=True)
class Column:
    """A result column: its name and its Athena type name (``bigint``, ``decimal(10,2)``...)."""

    name: str
    type: str


class ColumnRows(Sequence[tuple[Any, ...]]):
    """Rows kept as columns: an origin that reads column by column hands them over without a
    tuple per row, and the mapping is built from the key and value columns directly. As a
    sequence it is the rows, each a tuple."""

    __slots__ = ("_len", "columns")

    def __init__(self, columns: Sequence[Sequence[Any]]) -> None:
        lengths = {len(c) for c in columns}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns: tuple[Sequence[Any], ...] = tuple(columns)
        self._len = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[Any, ...]]: ...

    def __getitem__(self, i: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(i, slice):
            return list(zip(*(c[i] for c in self.columns), strict=True))
        return tuple(c[i] for c in self.columns)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(*self.columns, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ColumnRows):
            return self.columns == other.columns
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == self._len and all(
                tuple(o) == r for o, r in zip(other, self, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ColumnRows({len(self.columns)} columns, {self._len} rows)"


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows as tuples in column order, already converted to Python values (a ``ColumnRows``
    when the origin reads column by column)."""

    columns: tuple[Column, ...]
    rows: Sequence[tuple[Any, ...]]
    query_id: str | None = None
    bytes_scanned: int | None = None
    reused_previous_result: bool | None = None  # Athena served a stored result (``reuse=``)


@runtime_checkable
class Origin(Protocol):
    """Where a mapping's data comes from."""

    name: str

    def query(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        database: str | None,
        workgroup: str | None,
        catalog: str | None,
    ) -> QueryResult:
        """Run ``sql`` with ``params`` bound to its ``?`` placeholders; raise OriginError."""
        ...


@runtime_checkable
class AsyncOrigin(Origin, Protocol):
    """An origin whose queries outlive an invocation (Athena): started in one invocation, their
    result collected in a later one, in any container, by QueryExecutionId."""

    def start(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        database: str | None,
        workgroup: str | None,
        catalog: str | None,
    ) -> str:
        """Start the query; return its id."""
        ...

    def wait(self, query_id: str, *, max_wait: float | None = None) -> dict[str, Any] | None:
        """Wait for it up to ``max_wait`` seconds (0: look once); None if still running, the
        execution if it succeeded; OriginError if it failed."""
        ...

    def fetch(self, query_id: str, execution: dict[str, Any]) -> QueryResult:
        """The rows of a succeeded query."""
        ...


@runtime_checkable
class ValidatingOrigin(Origin, Protocol):
    """An origin that tells, from metadata and without a query, whether the tables a mapping
    reads changed (Athena: Glue and S3; DuckDB: the files)."""

    def validator(self, tables: Sequence[tuple[str | None, str]], *, database: str | None,
                  catalog: str | None, listing: bool) -> str | None:
        """A short fingerprint of the current state of ``tables`` ((database or None for
        ``database``/the origin's default, table)): equal fingerprints mean unchanged data.
        ``listing``: also fingerprint the files under each table's location. None when it
        cannot be known (a view, too many files); OriginError when a metadata call fails."""
        ...


def open_origin(spec: str | None = None) -> Origin:
    """Build the origin named by ``spec`` or ``$ATHENA_WARM_ORIGIN``: ``athena`` (the default)
    or ``duckdb:PATH`` (a folder of ``database/table/`` Parquet or CSV files, or a .duckdb file).
    """
    spec = resolve(spec, "ORIGIN", "athena")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "athena" and not arg:
        from .adapters.athena import AthenaOrigin

        return AthenaOrigin()
    if kind == "duckdb":
        if not arg:
            raise ConfigurationError(
                "origin 'duckdb' needs a path: duckdb:PATH, a folder of database/table/ files "
                "or a .duckdb file"
            )
        try:
            from .adapters.duckdb import DuckDBOrigin
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                f"origin 'duckdb' needs the local extra: pip install 'athena-warm[local]' ({exc})"
            ) from None
        return DuckDBOrigin(arg)
    raise ConfigurationError(
        f"unknown origin {spec!r}; use 'athena' or 'duckdb:PATH' (ATHENA_WARM_ORIGIN)"
    )
