"""Column types: Athena type signatures, and nested values typed the same way by every origin.

Athena's result metadata names a nested column's kind only (``array``, ``map``, ``row``) and its
result file holds the value as text (``{a=1, b=2}``), so its inner types must be declared:
``Mapping(..., types={"attrs": "map(varchar, integer)"})``. DuckDB knows the full type; the
local origin checks that the declaration matches it, so a declaration that production needs is
found missing or wrong in development, with the exact signature to write.

Both origins then give the same Python values: an array is a ``list``, a map a ``dict`` of its
typed keys and values, a row a ``dict`` of field name to typed value (an anonymous row's fields
are ``field0``, ``field1``... as Athena names them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .exceptions import ColumnTypeError

if TYPE_CHECKING:
    from ._declare import Mapping as Declaration
    from .origin import QueryResult

__all__ = ["SqlType", "TypeSignatureError", "from_text", "parse_type", "typed_result"]

NESTED = frozenset({"array", "map", "row"})
MAX_DEPTH = 32  # a declared type nests at most this deep

_ALIASES = {
    "int": "integer", "string": "varchar", "float": "real", "struct": "row",
    "numeric": "decimal", "binary": "varbinary", "bool": "boolean",
}
_SCALARS = frozenset({
    "boolean", "tinyint", "smallint", "integer", "bigint", "real", "double", "decimal",
    "varchar", "char", "varbinary", "date", "time", "time with time zone", "timestamp",
    "timestamp with time zone", "json", "uuid",
})
# Types whose Python values are the same kind: a declaration may say either.
_FAMILY = {
    "tinyint": "int", "smallint": "int", "integer": "int", "bigint": "int",
    "real": "float", "double": "float", "varchar": "str", "char": "str",
}


class TypeSignatureError(ValueError):
    """A type signature that does not parse."""


@dataclass(frozen=True, slots=True)
class SqlType:
    """A parsed Athena type: ``name`` is the base name; ``args`` the element types (array: 1,
    map: key and value, row: one per field, named by ``fields``); ``params`` the numbers
    (``decimal(10,2)``)."""

    name: str
    args: tuple[SqlType, ...] = ()
    fields: tuple[str, ...] = ()
    params: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.name == "array":
            return f"array({self.args[0]})"
        if self.name == "map":
            return f"map({self.args[0]}, {self.args[1]})"
        if self.name == "row":
            return "row(" + ", ".join(
                f"{_quote_field(f)} {t}" for f, t in zip(self.fields, self.args, strict=True)
            ) + ")"
        if self.params:
            return f"{self.name}({','.join(str(p) for p in self.params)})"
        return self.name

    @property
    def nested(self) -> bool:
        return self.name in NESTED


def _quote_field(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


# --- signatures ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>\d+)'
                    r'|"(?P<quoted>(?:[^"]|"")*)"|(?P<punct>[(),<>:]))')


def parse_type(signature: str) -> SqlType:
    """Parse an Athena (Trino) or Hive type signature: ``array(row(x integer, y varchar))``,
    ``map<string,int>``, ``decimal(38,9)``, ``timestamp(3) with time zone``."""
    if not isinstance(signature, str) or not signature.strip():
        raise TypeSignatureError(f"a type signature must be a non-empty string, got {signature!r}")
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = signature.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TypeSignatureError(f"unexpected {text[pos:pos + 10]!r} at character {pos}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        tokens.append((kind, value.replace('""', '"') if kind == "quoted" else value))
        pos = m.end()
    parser = _Signature(tokens, signature)
    result = parser.type(0)
    if parser.i != len(tokens):
        raise TypeSignatureError(f"unexpected {tokens[parser.i][1]!r} after the type")
    return result


class _Signature:
    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.i = tokens, text, 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1].lower() if self.i < len(self.tokens) else None

    def take(self, *expected: str) -> str:
        if self.i >= len(self.tokens):
            raise TypeSignatureError("the signature ends early; expected "
                                     + (" or ".join(expected) or "a type"))
        kind, value = self.tokens[self.i]
        if expected and value.lower() not in expected:
            raise TypeSignatureError(f"expected {' or '.join(expected)}, found {value!r}")
        self.i += 1
        return value if kind == "quoted" else value.lower()

    def number(self) -> int:
        if self.i >= len(self.tokens) or self.tokens[self.i][0] != "num":
            raise TypeSignatureError("expected a number")
        self.i += 1
        return int(self.tokens[self.i - 1][1])

    def type(self, depth: int) -> SqlType:
        if depth > MAX_DEPTH:
            raise TypeSignatureError(f"the type nests deeper than {MAX_DEPTH} levels")
        if self.i < len(self.tokens) and self.tokens[self.i][0] != "word":
            raise TypeSignatureError(f"expected a type name, found {self.tokens[self.i][1]!r}")
        word = self.take()
        name = _ALIASES.get(word, word)
        if name in NESTED:
            close = ")" if self.take("(", "<") == "(" else ">"
            if name == "array":
                args: tuple[SqlType, ...] = (self.type(depth + 1),)
                fields: tuple[str, ...] = ()
            elif name == "map":
                key = self.type(depth + 1)
                self.take(",")
                args, fields = (key, self.type(depth + 1)), ()
            else:
                names, types = [], []
                while True:
                    kind = self.tokens[self.i][0] if self.i < len(self.tokens) else ""
                    if kind not in ("word", "quoted"):
                        raise TypeSignatureError("expected a row field name")
                    field = self.take()
                    if field in names:
                        raise TypeSignatureError(f"row field {field!r} appears twice")
                    if self.peek() == ":":
                        self.take(":")
                    names.append(field)
                    types.append(self.type(depth + 1))
                    if self.peek() != ",":
                        break
                    self.take(",")
                args, fields = tuple(types), tuple(names)
            self.take(close)
            return SqlType(name, args, fields)
        params: tuple[int, ...] = ()
        if name == "double" and self.peek() == "precision":
            self.take()
        if self.peek() == "(" and name in ("decimal", "varchar", "char", "timestamp", "time"):
            self.take("(")
            nums = [self.number()]
            while self.peek() == ",":
                self.take(",")
                nums.append(self.number())
            self.take(")")
            if name == "decimal":
                if len(nums) > 2 or not 1 <= nums[0] <= 38 or not 0 <= nums[-1] <= nums[0]:
                    raise TypeSignatureError(f"decimal{tuple(nums)} is not a valid precision, "
                                             "scale (1 to 38)")
                params = (nums[0], nums[1] if len(nums) == 2 else 0)
        if name in ("timestamp", "time") and self.peek() in ("with", "without"):
            zoned = self.take() == "with"
            self.take("time")
            self.take("zone")
            if zoned:
                name += " with time zone"
        if name not in _SCALARS:
            raise TypeSignatureError(
                f"unknown type {word!r}; use one of {sorted(_SCALARS | NESTED)}")
        return SqlType(name, params=params)


def same_shape(declared: SqlType, actual: SqlType) -> bool:
    """Whether values of ``actual`` come out as values of ``declared`` (sizes, precisions and
    integer or float widths aside)."""
    if declared.nested or actual.nested:
        if declared.name != actual.name or len(declared.args) != len(actual.args):
            return False
        if declared.name == "row" and [f.lower() for f in declared.fields] != \
                [f.lower() for f in actual.fields]:
            return False
        return all(same_shape(d, a) for d, a in zip(declared.args, actual.args, strict=True))
    return _FAMILY.get(declared.name, declared.name) == _FAMILY.get(actual.name, actual.name)


# --- Athena's text form --------------------------------------------------------------------------


def _timestamp(text: str) -> datetime:
    m = re.fullmatch(r"(\d{4,}-\d\d-\d\d)[ T](\d\d:\d\d(?::\d\d)?)(?:\.(\d{1,9}))?", text)
    if not m:
        raise ValueError(f"not a timestamp: {text!r}")
    day, clock, frac = m.groups()
    value = datetime.fromisoformat(f"{day} {clock}")
    if frac:
        value = value.replace(microsecond=int(frac[:6].ljust(6, "0")))
    return value


def _zone(name: str) -> tzinfo:
    if name in ("UTC", "Z"):
        return timezone.utc
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if m:
        offset = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return timezone(-offset if m.group(1) == "-" else offset)
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _timestamp_tz(text: str) -> datetime:
    stamp, _, zone = text.rpartition(" ")
    return _timestamp(stamp).replace(tzinfo=_zone(zone))


def _integer(text: str) -> int:
    if not re.fullmatch(r"[-+]?\d+", text):
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite():
        raise ValueError(f"not a decimal: {text!r}")
    return value


def _uuid(text: str) -> Any:
    from uuid import UUID

    return UUID(text)


def _boolean(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"not a boolean: {text!r}")
    return text == "true"


_LEAF: dict[str, Callable[[str], Any]] = {
    "boolean": _boolean, "tinyint": _integer, "smallint": _integer, "integer": _integer,
    "bigint": _integer, "real": float, "double": float, "decimal": _decimal,
    "varchar": str, "char": str, "varbinary": bytes.fromhex, "date": date.fromisoformat,
    "time": time.fromisoformat, "time with time zone": time.fromisoformat,
    "timestamp": _timestamp, "timestamp with time zone": _timestamp_tz, "json": json.loads,
    "uuid": _uuid,
}


class _TextError(ValueError):
    pass


class _Text:
    """A parser of one value in Athena's text form, directed by its declared type.

    The form does not quote strings, so a varchar inside an array, map or row ends at the next
    delimiter of its container (``, `` or the closing bracket; in a row, at ``, NEXTFIELD=``):
    values that contain those delimiters cannot be told apart, and need ``CAST(col AS JSON)``.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def fail(self, what: str) -> _TextError:
        return _TextError(f"{what} at character {self.i} of {self.s[:80]!r}"
                          + ("..." if len(self.s) > 80 else ""))

    def expect(self, token: str) -> None:
        if not self.s.startswith(token, self.i):
            raise self.fail(f"expected {token!r}")
        self.i += len(token)

    def end(self, *delimiters: str) -> int:
        found = [j for j in (self.s.find(d, self.i) for d in delimiters) if j >= 0]
        if not found:
            raise self.fail(f"no {' or '.join(repr(d) for d in delimiters)} after the value")
        return min(found)

    def value(self, t: SqlType, end: Callable[[], int]) -> Any:
        s, i = self.s, self.i
        if t.nested:
            if s.startswith("null", i) and (i + 4 == len(s) or s[i + 4] in ",]}="):
                self.i = i + 4
                return None
            if t.name == "array":
                return self.array(t)
            if t.name == "map":
                return self.map(t)
            return self.row(t)
        j = end()
        text = s[i:j]
        self.i = j
        if text == "null":
            return None
        try:
            return _LEAF[t.name](text)
        except (ValueError, InvalidOperation, ArithmeticError, KeyError) as exc:
            self.i = i
            raise self.fail(f"{text!r} is not of type {t}") from exc

    def array(self, t: SqlType) -> list[Any]:
        self.expect("[")
        out: list[Any] = []
        if self.s.startswith("]", self.i):
            self.i += 1
            return out
        element = t.args[0]
        until = lambda: self.end(", ", "]")  # noqa: E731
        while True:
            out.append(self.value(element, until))
            if self.s.startswith(", ", self.i):
                self.i += 2
                continue
            self.expect("]")
            return out

    def map(self, t: SqlType) -> dict[Any, Any]:
        self.expect("{")
        out: dict[Any, Any] = {}
        if self.s.startswith("}", self.i):
            self.i += 1
            return out
        kt, vt = t.args
        key_end = lambda: self.end("=")  # noqa: E731
        value_end = lambda: self.end(", ", "}")  # noqa: E731
        while True:
            key = self.value(kt, key_end)
            self.expect("=")
            out[key] = self.value(vt, value_end)
            if self.s.startswith(", ", self.i):
                self.i += 2
                continue
            self.expect("}")
            return out

    def row(self, t: SqlType) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        last = len(t.fields) - 1
        for n, (field, ft) in enumerate(zip(t.fields, t.args, strict=True)):
            if n:
                self.expect(", ")
            self.expect(field + "=")
            if n < last:
                marker = ", " + t.fields[n + 1] + "="
                out[field] = self.value(ft, lambda m=marker: self.end(m))  # type: ignore[misc]
            else:
                out[field] = self.value(ft, lambda: self.end("}"))
        self.expect("}")
        return out


def from_text(text: str, t: SqlType) -> Any:
    """A nested value from Athena's text form (``[1, 2]``, ``{a=1}``, ``{x=1, y=hi}``), typed
    by ``t``. Raises ValueError naming the position when the text does not fit the type."""
    parser = _Text(text)
    value = parser.value(t, lambda: len(text))
    if parser.i != len(text):
        raise parser.fail("unexpected text after the value")
    return value


# --- values an origin already typed (DuckDB) -----------------------------------------------------

_PYTHON: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (float, int), "decimal": (Decimal, int), "str": (str,),
    "boolean": (bool,), "varbinary": (bytes, bytearray), "date": (date,), "time": (time,),
    "time with time zone": (time,), "timestamp": (datetime,),
    "timestamp with time zone": (datetime,),
}


def conform(value: Any, t: SqlType, where: str) -> Any:
    """An already typed value in the declared shape: arrays as lists, rows as dicts keyed by the
    declared field names (an anonymous row, a tuple, by position)."""
    if value is None:
        return None
    if t.name == "array":
        if not isinstance(value, (list, tuple)):
            raise _TextError(f"{where} holds a {type(value).__name__}, not an array")
        return [conform(v, t.args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if t.name == "map":
        if not isinstance(value, dict):
            raise _TextError(f"{where} holds a {type(value).__name__}, not a map")
        kt, vt = t.args
        return {conform(k, kt, f"{where} key"): conform(v, vt, f"{where}[{k!r}]")
                for k, v in value.items()}
    if t.name == "row":
        if isinstance(value, dict):
            by_lower = {str(k).lower(): v for k, v in value.items()}
            if len(value) == len(t.fields) and all(f.lower() in by_lower for f in t.fields):
                items = [by_lower[f.lower()] for f in t.fields]
            elif list(value) == [f"_{i}" for i in range(len(t.fields))]:
                items = list(value.values())  # an anonymous row, named by position
            else:
                raise _TextError(f"{where} has fields {list(value)}, the declaration "
                                 f"{list(t.fields)}")
        elif isinstance(value, tuple) and len(value) == len(t.fields):
            items = list(value)
        else:
            raise _TextError(f"{where} holds a {type(value).__name__}, not a row of "
                             f"{len(t.fields)} fields")
        return {f: conform(v, ft, f"{where}.{f}")
                for f, ft, v in zip(t.fields, t.args, items, strict=True)}
    kinds = _PYTHON.get(_FAMILY.get(t.name, t.name))
    if kinds is not None and (not isinstance(value, kinds) or
                              (isinstance(value, bool) and bool not in kinds)):
        raise _TextError(f"{where} holds a {type(value).__name__} ({value!r:.40}), not a {t}")
    return value


# --- applying declared types to a query result ---------------------------------------------------


def _try_parse(signature: str) -> SqlType | None:
    try:
        return parse_type(signature)
    except TypeSignatureError:
        return None  # a type we do not model (interval, unknown...): nothing to check


def _declared(decl: Declaration, column: str) -> SqlType | None:
    types: Mapping[str, SqlType] = decl.parsed_types
    found = types.get(column)
    if found is None:
        lowered = {k.lower(): v for k, v in types.items()}
        found = lowered.get(column.lower())
    return found


def typed_result(decl: Declaration, result: QueryResult, used: Iterable[str]) -> QueryResult:
    """``result`` with its nested columns typed by the declaration's ``types``.

    A nested column the mapping uses must be declared; a declaration must match the type the
    origin reports (DuckDB reports it in full, Athena only scalars and the nested kind).
    """
    from dataclasses import replace

    used_lower = {u.lower() for u in used}
    names = {c.name.lower() for c in result.columns}
    for col in decl.parsed_types:
        if col.lower() not in names:
            raise ColumnTypeError(
                f"types= names column {col!r}, which the query does not return; it returns "
                f"{[c.name for c in result.columns]}. Fix the declaration's types=.",
                mapping=decl.name, column=col)
    work: list[tuple[int, SqlType, bool]] = []
    for idx, c in enumerate(result.columns):
        declared = _declared(decl, c.name)
        base = c.type.split("(")[0].split("<")[0].strip().lower()
        base = _ALIASES.get(base, base)
        bare = base in NESTED and "(" not in c.type and "<" not in c.type
        actual = None if bare else _try_parse(c.type)
        if declared is None:
            if base in NESTED and c.name.lower() in used_lower:
                raise ColumnTypeError(
                    f"column {c.name!r} is {'an' if base == 'array' else 'a'} {base} and its "
                    "inner types are not declared. Athena's result metadata names only the "
                    "kind of a nested column, so declare it: "
                    + (f"types={{{c.name!r}: {str(actual)!r}}}" if actual is not None else
                       f"types={{{c.name!r}: '{base}(...)'}} (DESCRIBE the table for its type)")
                    + f", or select CAST({c.name} AS JSON).",
                    mapping=decl.name, column=c.name)
            continue
        if actual is not None and not same_shape(declared, actual):
            raise ColumnTypeError(
                f"column {c.name!r} is declared {declared} but the query returns {actual}; "
                f"fix types={{{c.name!r}: {str(actual)!r}}} or the SELECT list.",
                mapping=decl.name, column=c.name)
        if bare and not declared.nested:
            raise ColumnTypeError(
                f"column {c.name!r} is declared {declared} but the query returns a {base}; "
                "fix the declaration's types=.", mapping=decl.name, column=c.name)
        if declared.nested:
            work.append((idx, declared, bare))
    if not work:
        return result
    rows = [list(r) for r in result.rows]
    for idx, t, from_athena_text in work:
        column = result.columns[idx].name
        for n, row in enumerate(rows):
            v = row[idx]
            if v is None:
                continue
            try:
                if isinstance(v, str) and from_athena_text:
                    row[idx] = from_text(v, t)
                else:
                    row[idx] = conform(v, t, column)
            except ValueError as exc:
                raise ColumnTypeError(
                    f"row {n + 1}, column {column!r} does not hold a {t}: {exc}. If its strings "
                    "contain ', ', '=' or brackets, Athena's text form cannot delimit them: "
                    f"select CAST({column} AS JSON) instead.",
                    mapping=decl.name, column=column) from None
    return replace(result, rows=[tuple(r) for r in rows])


def parse_types(name: str, types: Mapping[str, str] | None,
                error: Callable[[str], Exception]) -> dict[str, SqlType]:
    """The declaration's ``types`` option, parsed; ``error`` builds the exception to raise."""
    if types is None:
        return {}
    if not isinstance(types, Mapping):
        raise error(f"mapping {name!r}: types must be a dict of column name to Athena type, "
                    f"such as {{'attrs': 'map(varchar, integer)'}}; got {type(types).__name__}")
    out: dict[str, SqlType] = {}
    for col, sig in types.items():
        if not isinstance(col, str) or not col:
            raise error(f"mapping {name!r}: types has a key {col!r}; give column names")
        try:
            out[col] = parse_type(sig)
        except TypeSignatureError as exc:
            raise error(f"mapping {name!r}: types[{col!r}] = {sig!r} is not an Athena type: "
                        f"{exc}. Write it as Athena shows it, e.g. 'array(row(x integer, "
                        "y varchar))'") from None
    return out
