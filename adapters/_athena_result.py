"""Athena's result file, read fast and exactly: the CSV parsed by Python's C ``csv`` module, each
column converted once, column-wise, from its Athena type.

Athena quotes every value it writes and leaves NULL unquoted and empty: ``"a",,""`` is
``('a', None, '')``. The ``csv`` module tells the two apart itself from Python 3.13
(``QUOTE_NOTNULL``); before, a file with no empty value is read in one call, and a file with
one is read again, the records with an empty value from their raw lines.

The converters give the values PyAthena's ``DefaultTypeConverter`` gives (the tests compare them
type by type); arrays, maps and rows stay text for the core to type from the declaration.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from itertools import chain
from typing import Any

from ..origin import ColumnRows

__all__ = ["ResultFileError", "convert_columns", "converter_for", "paused_gc", "read_columns",
           "rows_to_columns"]

_NOTNULL = sys.version_info >= (3, 13)
_FIELD = re.compile(r'"((?:[^"]|"")*)"|')


class ResultFileError(ValueError):
    """The result file is not the CSV Athena writes."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while a result is read: a load makes one list per
    record, none of them in a cycle, and every 700 of them would start a collection that, as
    they pile up, walks the whole heap (measured: the CSV read of 190,000 records took 120 ms
    paused, 400-550 ms not, in a process holding 700,000 other objects)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- the CSV -------------------------------------------------------------------------------------


def _exact(raw: str, width: int) -> list[str | None]:
    """One record from its raw text: quoted values unquoted, unquoted empty fields None."""
    raw = raw[:-2] if raw.endswith("\r\n") else raw[:-1] if raw.endswith(("\n", "\r")) else raw
    out: list[str | None] = []
    i, n = 0, len(raw)
    while True:
        m = _FIELD.match(raw, i)
        assert m is not None  # the pattern also matches the empty string
        out.append(None if m.group(1) is None else m.group(1).replace('""', '"'))
        i = m.end()
        if i >= n:
            break
        if raw[i] != ",":
            raise ResultFileError(f"unexpected {raw[i]!r} after a value in {raw[:80]!r}")
        i += 1
        if i == n:
            out.append(None)
            break
    if len(out) != width:
        raise ResultFileError(f"a record has {len(out)} fields where {width} were expected")
    return out


def read_columns(data: bytes, width: int) -> list[list[str | None]]:
    """The columns of an Athena result file (the header row too): ``width`` lists of str, or
    None for NULL. Raises ResultFileError when the bytes are not such a file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"the result file is not UTF-8 ({exc})") from None
    columns = _split_quoted(text, width)
    if columns is not None:
        return columns
    return rows_to_columns(_read_records(text, width), width)


def _split_quoted(text: str, width: int) -> list[list[str | None]] | None:
    """The common file, read with one split and no object per record: every value quoted,
    none empty, none with a quote inside (no ``""`` anywhere), records ending in a newline.
    None when the file is not that simple (then the csv module reads it)."""
    if '""' in text or not text.startswith('"'):
        return None
    parts = text.split('"')
    separators = parts[0::2]  # '' before the first quote, then ',' or '\n' after each value
    records, extra = divmod(len(separators) - 1, width)
    # Every width-th separator ends a record ('\n'), every other one is ',': with exactly as
    # many of each as that needs, no other order is possible.
    if extra or separators[0] or separators[width::width].count("\n") != records \
            or separators.count("\n") != records \
            or separators.count(",") != records * (width - 1):
        return None
    values: list[str | None] = parts[1::2]  # type: ignore[assignment]
    return [values[i::width] for i in range(width)]


def _read_records(text: str, width: int) -> list[list[Any]]:
    try:
        if _NOTNULL:
            rows: list[list[Any]] = list(csv.reader(
                io.StringIO(text, newline=""), strict=True,
                quoting=csv.QUOTE_NOTNULL))  # type: ignore[attr-defined,unused-ignore]
        else:
            rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
            if "" in chain.from_iterable(rows):  # "" or NULL: only the raw text tells
                rows = _read_tracking_lines(text, width)
    except csv.Error as exc:
        if "NUL" not in str(exc):
            raise ResultFileError(f"the result file is not valid CSV: {exc}") from None
        rows = _read_exact(text)  # Python < 3.11's csv refuses NUL characters
    for i, row in enumerate(rows):
        if len(row) != width:
            if not row and width == 1:  # one NULL column: an empty line
                rows[i] = [None]
                continue
            raise ResultFileError(
                f"record {i + 1} of the result file has {len(row)} fields where the result "
                f"has {width} columns")
    return rows


_RECORD_FIELD = re.compile(r'(?:"((?:[^"]|"")*)")?(,|\r\n|\n|\r|$)')


def _read_exact(text: str) -> list[list[Any]]:
    """Every record by a regular expression: slower than the csv module, and exact on any file
    Athena writes (a NUL character too)."""
    rows: list[list[Any]] = []
    row: list[Any] = []
    i, n = 0, len(text)
    while i < n:
        m = _RECORD_FIELD.match(text, i)
        if m is None or (not m.group(2) and m.end() < n):
            raise ResultFileError(f"the result file is not valid CSV near character {i}")
        value = m.group(1)
        row.append(None if value is None else value.replace('""', '"'))
        i = m.end()
        if m.group(2) != ",":
            rows.append(row)
            row = []
    return rows


def _read_tracking_lines(text: str, width: int) -> list[list[Any]]:
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, strict=True)
    rows: list[list[Any]] = []
    append = rows.append
    first = 0
    for row in reader:
        last = reader.line_num
        if "" in row:  # "" or NULL: only the raw text tells
            append(_exact("".join(lines[first:last]), width))
        else:
            append(row)
        first = last
    return rows


# --- converters ----------------------------------------------------------------------------------


def _to_datetime(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # Python < 3.11, or more than 6 fractional digits
        m = re.fullmatch(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)\.(\d+)", text)
        if not m:
            raise
        return datetime.fromisoformat(m.group(1)).replace(
            microsecond=int(m.group(2)[:6].ljust(6, "0")))


def _to_time(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        m = re.fullmatch(r"(\d\d:\d\d:\d\d)\.(\d+)", text)
        if not m:
            raise
        return time.fromisoformat(m.group(1)).replace(
            microsecond=int(m.group(2)[:6].ljust(6, "0")))


def _offset(text: str) -> timezone | None:
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text)
    if not m:
        return None
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return timezone(-delta if m.group(1) == "-" else delta)


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    fixed = _offset(name)
    if fixed is not None:
        return fixed
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _to_datetime_tz(text: str) -> datetime | None:
    if not text:
        return None
    stamp, _, zone = text.rpartition(" ")
    tz = _zone(zone)
    value = _to_datetime(stamp).replace(tzinfo=tz)
    if not isinstance(tz, timezone) and value.utcoffset() != value.replace(fold=1).utcoffset():
        raise ValueError(f"{text!r} is ambiguous or does not exist in {zone}: convert it to "
                         "UTC in SQL (AT TIME ZONE 'UTC')")
    return value


def _to_time_tz(text: str) -> time | None:
    if not text:
        return None
    i = max(text.rfind("+"), text.rfind("-"))
    return _to_time(text[:i]).replace(tzinfo=_offset(text[i:]))


def _to_decimal(text: str) -> Decimal | None:
    return Decimal(text) if text else None


_TRUE = {"y", "yes", "t", "true", "on", "1"}
_FALSE = {"n", "no", "f", "false", "off", "0"}


def _to_boolean(text: str) -> bool | None:
    if not text:
        return None
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"invalid truth value {text!r}")


def _to_binary(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _to_json(text: str) -> Any:
    return json.loads(text) if text else None


def _to_time_or_none(text: str) -> time | None:
    return _to_time(text) if text else None


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "boolean": _to_boolean,
    "tinyint": int, "smallint": int, "integer": int, "bigint": int,
    "float": float, "real": float, "double": float,
    "decimal": _to_decimal,
    "timestamp": _to_datetime,
    "timestamp with time zone": _to_datetime_tz,
    "date": date.fromisoformat,
    "time": _to_time_or_none,
    "time with time zone": _to_time_tz,
    "varbinary": _to_binary,
    "json": _to_json,
}


def converter_for(athena_type: str) -> Callable[[str], Any] | None:
    """The converter of a column of ``athena_type`` (ColumnInfo's Type), None for text kept as
    it is (varchar, char, and arrays, maps and rows, typed later by the core)."""
    return _CONVERTERS.get(athena_type.lower())


def convert_columns(columns: list[list[str | None]],
                    converters: Sequence[Callable[[str], Any] | None]) -> ColumnRows:
    """Each column converted to Python values in one pass, as ColumnRows."""
    out: list[Sequence[Any]] = []
    for column, convert in zip(columns, converters, strict=True):
        if convert is None:
            out.append(column)
            continue
        try:
            out.append(list(map(convert, column)))  # type: ignore[arg-type]  # no NULL: C speed
        except TypeError:
            out.append([None if v is None else convert(v) for v in column])
    return ColumnRows(out)


def rows_to_columns(rows: Sequence[Sequence[str | None]], width: int) -> list[list[str | None]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]
