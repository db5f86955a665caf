"""Shared by the tests: a counting origin and the usual declaration."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from athena_warm import Mapping
from athena_warm.origin import QueryResult


class CountingOrigin:
    """The tests' one origin wrapper: a real origin (DuckDB) that counts its queries
    (``calls``) and can be slowed down (``delay`` real seconds), broken (``fail``), or report
    each query elsewhere (``on_query``: advance a fake clock, count in another process).
    ``validator=True`` passes the inner origin's change validator through (and counts its
    checks in ``checks``); without it the copy has no validator (TTL only)."""

    def __init__(self, inner: Any, *, delay: float = 0.0, name: str = "counting",
                 on_query: Callable[[], Any] | None = None, validator: bool = False) -> None:
        self.inner = inner
        self.name = name
        self.delay = delay
        self.on_query = on_query
        self.calls = 0
        self.checks = 0
        self.fail: Exception | None = None
        self._lock = threading.Lock()
        if validator:
            self.validator = self._validator

    @property
    def queries(self) -> int:
        return self.calls

    def query(self, sql: str, params: Sequence[Any], **kw: Any) -> QueryResult:
        with self._lock:
            self.calls += 1
        if self.on_query is not None:
            self.on_query()
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        result: QueryResult = self.inner.query(sql, params, **kw)
        return result

    def _validator(self, *args: Any, **kw: Any) -> Any:
        with self._lock:
            self.checks += 1
        return self.inner.validator(*args, **kw)


def declare(name: str = "customers", **kw: Any) -> Mapping:
    """analytics.customers as customer_id -> account_id, TTL 1 h, max_stale 1 d, no jitter."""
    opts: dict[str, Any] = dict(
        sql="SELECT customer_id, account_id FROM customers", database="analytics",
        key="customer_id", value="account_id", ttl="1h", max_stale="1d", ttl_jitter=0)
    opts.update(kw)
    return Mapping(name, **opts)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells NaN from NaN, -0.0 from 0.0, types apart (1 is not 1.0), dict
    key order and time zones."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                      math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(k, k2) and same(a[k], b[k2])
                                        for k, k2 in zip(a, b, strict=True))
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)
