"""Shared by the fault and model-based tests: fake clocks, a table whose version changes, and a
fleet of containers (each its own Cache) over one shared tier."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from athena_warm import Cache, Mapping
from athena_warm.l2 import MemoryTier
from athena_warm.origin import Column, QueryResult
from tests.conftest import FakeClock


class Clocks:
    """One monotonic and one wall clock that move together (a fleet on one host's time)."""

    def __init__(self) -> None:
        self.mono = FakeClock()
        self.wall = FakeClock(1.7e9)

    def advance(self, seconds: float) -> None:
        self.mono.advance(seconds)
        self.wall.advance(seconds)


class Table:
    """A table whose rows name its version (``v1``, ``v2``...). An origin reads the version at
    the query's start, like a real query reads a snapshot."""

    def __init__(self, rows: int = 3) -> None:
        self.version = 1
        self.rows = rows

    def result(self, bad: str | None = None) -> QueryResult:
        cols = (Column("customer_id", "varchar"), Column("account_id", "varchar"))
        rows: list[tuple[Any, ...]] = [(f"C{i}", f"v{self.version}") for i in range(self.rows)]
        if bad == "duplicate":
            rows.append(rows[0])
        elif bad == "empty":
            rows = []
        elif bad == "missing":
            cols = (Column("customer_id", "varchar"), Column("other", "varchar"))
        elif bad == "time":  # Athena `time`
            rows = [(k, datetime.time(12, 30)) for k, _ in rows]
        elif bad == "unstorable":  # a value no origin returns and the L2 codec cannot store
            rows = [(k, complex(1, 2)) for k, _ in rows]
        return QueryResult(columns=cols, rows=rows)


class TableOrigin:
    """A synchronous origin over a Table. ``fail`` raises; ``bad`` returns a bad result;
    ``during`` runs in the middle of the query (a freeze, an invalidation, a table update)."""

    name = "table"

    def __init__(self, table: Table) -> None:
        self.table = table
        self.calls = 0
        self.fail: BaseException | None = None
        self.bad: str | None = None
        self.during: Callable[[], None] | None = None

    def query(self, sql: str, params: Sequence[Any], **kw: Any) -> QueryResult:
        self.calls += 1
        result = self.table.result(self.bad)  # the snapshot the query reads
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        return result


def declare_table(name: str = "customers", **kw: Any) -> Mapping:
    opts: dict[str, Any] = dict(sql="SELECT customer_id, account_id FROM customers",
                                database="analytics", key="customer_id", value="account_id",
                                ttl="1h", max_stale="1d", ttl_jitter=0)
    opts.update(kw)
    return Mapping(name, **opts)


def container(clocks: Clocks, tier: Any, origin: Any, **kw: Any) -> Cache:
    kw.setdefault("retry_interval", 5)
    kw.setdefault("check_interval", 30)
    return Cache(origin=origin, l2=tier if tier is not None else False, clock=clocks.mono,
                 wall_clock=clocks.wall, sleep=clocks.advance, **kw)


def memory_tier(clocks: Clocks) -> MemoryTier:
    return MemoryTier(clock=clocks.mono)


def version_of(view: Any) -> int:
    return int(next(iter(view.values()))[1:])
