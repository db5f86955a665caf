"""Turning a query result into the declared key -> value dict, with its policies."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from ._declare import Mapping
from ._view import MappingView
from .exceptions import DuplicateKeyError, EmptyResultError, MissingColumnError, NullKeyError
from .origin import ColumnRows, QueryResult

_SHOW = 5  # how many offending keys an error names
_NESTED = frozenset({"array", "map", "row", "struct"})


@dataclass(frozen=True, slots=True)
class Built:
    data: MappingView  # built in place: no second copy of a large mapping
    null_keys_skipped: int
    nbytes: int


def _index(decl: Mapping, names: Sequence[str], cols: Sequence[str], what: str) -> list[int]:
    lowered = [n.lower() for n in names]
    out = []
    for c in cols:
        if c in names:
            out.append(names.index(c))
        elif c.lower() in lowered:  # Athena lower-cases column names
            out.append(lowered.index(c.lower()))
        else:
            raise MissingColumnError(
                f"{what} column {c!r} is not in the query result; the result has columns "
                f"{list(names)}. Fix the declaration's {what}= or the SELECT list.",
                mapping=decl.name,
                column=c,
                columns=list(names),
            )
    return out


def build(decl: Mapping, result: QueryResult) -> Built:
    names = [c.name for c in result.columns]
    if decl.types or any(c.type.split("(")[0].strip().lower() in _NESTED
                         for c in result.columns):
        from ._types import typed_result  # loaded only for results with nested columns

        used = (*decl.key_columns, *decl.value_columns) if decl.value_columns else names
        result = typed_result(decl, result, used)
    ki = _index(decl, names, decl.key_columns, "key")
    vi = _index(decl, names, decl.value_columns, "value") if decl.value_columns else []
    rows = result.rows
    if not rows and not decl.allow_empty:
        raise EmptyResultError(
            "the query returned no rows. An empty mapping is usually a wrong WHERE clause or an "
            "empty table; if it is valid, declare allow_empty=True.",
            mapping=decl.name,
        )

    if isinstance(rows, ColumnRows):  # columns as read: no tuple per row
        keys, values = _from_columns(rows, names, ki, vi)
    else:
        keys, values = _from_rows(rows, names, ki, vi)

    # Fast path: the common case (no NULL key, no duplicate) costs one dict() and a length check.
    if decl.on_duplicate == "first":
        data = MappingView(zip(reversed(keys), reversed(values), strict=True))
    else:
        data = MappingView(zip(keys, values, strict=True))
    has_null = None in data if len(ki) == 1 else any(None in k for k in data)
    nulls = sum(1 for k in keys if _is_null(k)) if has_null else 0
    if nulls:
        if decl.on_null_key == "error":
            raise NullKeyError(
                f"{nulls} row(s) have a NULL key in {list(decl.key_columns)}; filter them in the "
                "SQL (WHERE key IS NOT NULL) or declare on_null_key='skip'",
                mapping=decl.name,
                count=nulls,
            )
        for k in [k for k in data if _is_null(k)]:
            dict.__delitem__(data, k)  # the view is read-only to everyone else
    if decl.on_duplicate == "error" and len(data) != len(keys) - nulls:
        seen: set[Any] = set()
        dups: dict[Any, None] = {}
        for k in keys:
            if k in seen and not _is_null(k):
                dups[k] = None
            seen.add(k)
        shown = ", ".join(repr(k) for k in list(dups)[:_SHOW])
        more = f" and {len(dups) - _SHOW} more" if len(dups) > _SHOW else ""
        raise DuplicateKeyError(
            f"{len(dups)} key(s) appear in more than one row: {shown}{more}. Make the key "
            "unique in the SQL (GROUP BY, DISTINCT) or declare on_duplicate='first' or 'last'.",
            mapping=decl.name,
            keys=list(dups)[:_SHOW],
            count=len(dups),
        )
    return Built(data=data, null_keys_skipped=nulls, nbytes=estimate_bytes(data))


def _from_columns(rows: ColumnRows, names: Sequence[str], ki: list[int],
                  vi: list[int]) -> tuple[Sequence[Any], Sequence[Any]]:
    cols = rows.columns
    keys = cols[ki[0]] if len(ki) == 1 else list(zip(*(cols[i] for i in ki), strict=True))
    if not vi:
        return keys, [dict(zip(names, r, strict=True)) for r in rows]
    if len(vi) == 1:
        return keys, cols[vi[0]]
    return keys, list(zip(*(cols[i] for i in vi), strict=True))


def _from_rows(rows: Sequence[Sequence[Any]], names: Sequence[str], ki: list[int],
               vi: list[int]) -> tuple[Sequence[Any], Sequence[Any]]:
    if len(ki) == 1:
        k0 = ki[0]
        keys: list[Any] = [r[k0] for r in rows]
    else:
        keys = [tuple(r[i] for i in ki) for r in rows]
    if not vi:
        return keys, [dict(zip(names, r, strict=True)) for r in rows]
    if len(vi) == 1:
        v0 = vi[0]
        return keys, [r[v0] for r in rows]
    return keys, [tuple(r[i] for i in vi) for r in rows]


def _is_null(k: Any) -> bool:
    return k is None or (isinstance(k, tuple) and None in k)


def estimate_bytes(data: dict[Any, Any], *, sample: int = 512) -> int:
    """Estimate the memory of ``data``: the dict itself plus a sample of keys and values."""
    n = len(data)
    total = sys.getsizeof(data)
    if not n:
        return total
    step = max(1, n // sample)
    items = list(islice(data.items(), 0, None, step))
    per = 0
    for k, v in items:
        per += _size(k) + _size(v)
    return total + per * n // len(items)


def _size(o: Any) -> int:
    s = sys.getsizeof(o)
    if isinstance(o, tuple):
        s += sum(sys.getsizeof(x) for x in o)
    elif isinstance(o, dict):
        s += sum(sys.getsizeof(x) for x in o.values())
    return s
