"""Declaring mappings: the ``Mapping`` dataclass, the registry, loading from a module or TOML."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Mapping as TypingMapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pathlib import Path

    from ._tables import TableRef
    from ._types import SqlType

from ._config import parse_duration
from .exceptions import ConfigurationError, DeclarationError, UnknownMappingError

log = logging.getLogger("athena_warm")

ParamValue = str | int | float | bool | Decimal | date | datetime | None
OnDuplicate = Literal["error", "first", "last"]
OnNullKey = Literal["skip", "error"]
Validate = Literal["auto", "glue"]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_COLUMN_RE = re.compile(r"^[^\x00-\x1f]{1,255}$")
# Quoted strings, quoted identifiers and comments, which may contain a literal '?'.
_NOT_PLACEHOLDER_RE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)


def _columns(value: str | Sequence[str] | None, what: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (str, Sequence)) or isinstance(value, bytes):
        raise DeclarationError(f"mapping {name!r}: {what} must be a column name or a list of "
                               f"column names, got {type(value).__name__} {value!r}")
    cols = (value,) if isinstance(value, str) else tuple(value)
    if not cols:
        raise DeclarationError(f"mapping {name!r}: {what} must name at least one column")
    for c in cols:
        if not isinstance(c, str) or not _COLUMN_RE.match(c):
            raise DeclarationError(f"mapping {name!r}: {what} column {c!r} is not a column name")
    if len(set(c.lower() for c in cols)) != len(cols):
        raise DeclarationError(f"mapping {name!r}: {what} names a column twice: {cols}")
    return cols


def _check_param(name: str, i: int, v: object) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise DeclarationError(
            f"mapping {name!r}: parameter {i} is {v!r}; Athena has no literal for it, "
            "pass a finite number"
        )
    if isinstance(v, datetime) and v.tzinfo is not None:
        raise DeclarationError(
            f"mapping {name!r}: parameter {i} is a timezone-aware datetime; Athena TIMESTAMP "
            "has no zone: convert it to UTC and drop tzinfo "
            "(v.astimezone(timezone.utc).replace(tzinfo=None))"
        )
    if v is not None and not isinstance(v, (str, int, float, Decimal, date, datetime)):
        raise DeclarationError(
            f"mapping {name!r}: parameter {i} has type {type(v).__name__}; use str, int, float, "
            "bool, Decimal, date, datetime or None"
        )


def count_placeholders(sql: str) -> int:
    """Number of ``?`` placeholders outside string literals, quoted identifiers and comments."""
    return _NOT_PLACEHOLDER_RE.sub("", sql).count("?")


def _canon(v: object) -> object:
    if isinstance(v, (Decimal, date, datetime)):
        return [type(v).__name__, str(v)]
    return v


@dataclass(frozen=True, slots=True, init=False)
class Mapping:
    """One cached query result, turned into a key -> value mapping.

    ``key`` names the key column (several columns make tuple keys); ``value`` names the value
    column (several columns make tuple values; ``None`` makes each value the whole row as a
    dict). ``params`` are bound to the ``?`` placeholders of ``sql`` in order, never formatted
    into it. Constructing a Mapping registers it, so ``get_mapping(name)`` can find it.
    """

    name: str
    sql: str
    key: str | tuple[str, ...]
    value: str | tuple[str, ...] | None = None
    params: tuple[ParamValue, ...] = ()
    database: str | None = None
    workgroup: str | None = None
    catalog: str | None = None
    ttl: float = 3600.0
    max_stale: float = 86400.0
    ttl_jitter: float = 0.1
    on_duplicate: OnDuplicate = "error"
    on_null_key: OnNullKey = "skip"
    allow_empty: bool = False
    types: dict[str, str] = field(default_factory=dict)
    reuse: float | None = None
    tables: tuple[str, ...] = ()
    validate: Validate | None = "auto"
    validate_interval: float | None = None
    parsed_types: dict[str, SqlType] = field(init=False, repr=False, compare=False)
    key_columns: tuple[str, ...] = field(init=False, repr=False, compare=False)
    value_columns: tuple[str, ...] = field(init=False, repr=False, compare=False)
    fingerprint: str = field(init=False, repr=False, compare=False)
    l1_key: tuple[str, str] = field(init=False, repr=False, compare=False)  # (name, fingerprint)

    def __init__(
        self,
        name: str,
        *,
        sql: str,
        key: str | Sequence[str],
        value: str | Sequence[str] | None = None,
        params: Sequence[ParamValue] = (),
        database: str | None = None,
        workgroup: str | None = None,
        catalog: str | None = None,
        ttl: str | float | timedelta = "1h",
        max_stale: str | float | timedelta = "1d",
        ttl_jitter: float = 0.1,
        on_duplicate: OnDuplicate = "error",
        on_null_key: OnNullKey = "skip",
        allow_empty: bool = False,
        types: TypingMapping[str, str] | None = None,
        reuse: str | float | timedelta | None = None,
        tables: Sequence[str] | None = None,
        validate: Validate | Literal[False] | None = "auto",
        validate_interval: str | float | timedelta | None = None,
        register: bool = True,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise DeclarationError(
                f"mapping name {name!r} is not valid: use 1-128 letters, digits, '_', '-' or '.', "
                "starting with a letter or '_'"
            )
        if not isinstance(sql, str) or not sql.strip():
            raise DeclarationError(f"mapping {name!r}: sql must be a non-empty SQL string")
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
            raise DeclarationError(
                f"mapping {name!r}: params must be a list or tuple of values bound to the '?' "
                f"placeholders in order, got {type(params).__name__}"
            )
        for i, p in enumerate(params):
            _check_param(name, i, p)
        n_ph = count_placeholders(sql)
        if n_ph != len(params):
            raise DeclarationError(
                f"mapping {name!r}: the SQL has {n_ph} '?' placeholder(s) but {len(params)} "
                "parameter(s) were given; pass one value per '?' (values are bound, never "
                "formatted into the SQL)"
            )
        kcols = _columns(key, "key", name)
        if not kcols:
            raise DeclarationError(f"mapping {name!r}: key must name the key column(s)")
        vcols = _columns(value, "value", name)
        if on_duplicate not in ("error", "first", "last"):
            raise DeclarationError(
                f"mapping {name!r}: on_duplicate={on_duplicate!r}; use 'error', 'first' or 'last'"
            )
        if on_null_key not in ("skip", "error"):
            raise DeclarationError(
                f"mapping {name!r}: on_null_key={on_null_key!r}; use 'skip' or 'error'"
            )
        if not isinstance(allow_empty, bool):
            raise DeclarationError(f"mapping {name!r}: allow_empty={allow_empty!r}; give True or "
                                   "False (a string such as 'no' would read as True)")
        for opt, v in (("database", database), ("workgroup", workgroup), ("catalog", catalog)):
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise DeclarationError(f"mapping {name!r}: {opt} must be a non-empty string")
        try:
            ttl_s = parse_duration(ttl, what=f"mapping {name!r}: ttl")
            stale_s = parse_duration(max_stale, what=f"mapping {name!r}: max_stale")
        except ConfigurationError as exc:
            raise DeclarationError(str(exc)) from None
        if ttl_s <= 0:
            raise DeclarationError(f"mapping {name!r}: ttl must be positive, got {ttl!r}")
        if isinstance(ttl_jitter, bool) or not isinstance(ttl_jitter, (int, float)) or \
                not 0 <= ttl_jitter < 1:
            raise DeclarationError(
                f"mapping {name!r}: ttl_jitter={ttl_jitter!r}; give a fraction in [0, 1): each "
                "container's TTL is shortened by up to that much, e.g. 0.1"
            )

        reuse_s: float | None = None
        if reuse is not None:
            try:
                reuse_s = parse_duration(reuse, what=f"mapping {name!r}: reuse")
            except ConfigurationError as exc:
                raise DeclarationError(str(exc)) from None
            if not 60 <= reuse_s <= min(ttl_s, 7 * 86400):
                raise DeclarationError(
                    f"mapping {name!r}: reuse={reuse!r}; Athena reuses a result for 1 minute to "
                    f"7 days, and never longer than the ttl ({ttl_s:g} s) here: give a duration "
                    "in that range, e.g. reuse='15m', or None to turn it off")
        declared_tables = _tables_option(name, tables)
        if validate is False:  # TOML has no None: validate = false
            validate = None
        if validate not in ("auto", "glue", None):
            raise DeclarationError(
                f"mapping {name!r}: validate={validate!r}; use 'auto' (Glue metadata, plus an S3 "
                "listing for plain tables), 'glue' (Glue metadata only) or None (TTL only)")
        interval_s: float | None = None
        if validate_interval is not None:
            try:
                interval_s = parse_duration(validate_interval,
                                            what=f"mapping {name!r}: validate_interval")
            except ConfigurationError as exc:
                raise DeclarationError(str(exc)) from None
            if validate is None or not 10 <= interval_s < ttl_s:
                raise DeclarationError(
                    f"mapping {name!r}: validate_interval={validate_interval!r}; it checks the "
                    f"tables between TTLs, so give a duration from 10 s to below the ttl "
                    f"({ttl_s:g} s), e.g. '5m', with validate='auto' or 'glue'")
        parsed: dict[str, SqlType] = {}
        if types is not None:  # the type parser loads only for declarations that use it
            from ._types import parse_types

            parsed = parse_types(name, types, DeclarationError)

        s = object.__setattr__
        s(self, "name", name)
        s(self, "sql", sql)
        s(self, "key", kcols[0] if len(kcols) == 1 else kcols)
        s(self, "value", None if not vcols else (vcols[0] if len(vcols) == 1 else vcols))
        s(self, "params", tuple(params))
        s(self, "database", database)
        s(self, "workgroup", workgroup)
        s(self, "catalog", catalog)
        s(self, "ttl", ttl_s)
        s(self, "max_stale", stale_s)
        s(self, "ttl_jitter", float(ttl_jitter))
        s(self, "on_duplicate", on_duplicate)
        s(self, "on_null_key", on_null_key)
        s(self, "allow_empty", bool(allow_empty))
        s(self, "types", {k: str(v) for k, v in sorted(parsed.items())})
        s(self, "parsed_types", parsed)
        s(self, "reuse", reuse_s)
        s(self, "tables", declared_tables)
        s(self, "validate", validate)
        s(self, "validate_interval", interval_s)
        s(self, "key_columns", kcols)
        s(self, "value_columns", vcols)
        s(self, "fingerprint", self._compute_fingerprint())
        s(self, "l1_key", (name, self.fingerprint))
        if register:
            REGISTRY.register(self)

    def _compute_fingerprint(self) -> str:
        ident: dict[str, object] = {
            "sql": self.sql,
            "params": [_canon(p) for p in self.params],
            "catalog": self.catalog,
            "database": self.database,
            "workgroup": self.workgroup,
            "key": list(self.key_columns),
            "value": list(self.value_columns),
            "on_duplicate": self.on_duplicate,
            "on_null_key": self.on_null_key,
        }
        if self.types:  # absent when empty: older declarations keep their fingerprints
            ident["types"] = self.types
        raw = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def read_tables(self) -> tuple[TableRef, ...] | None:
        """The tables this mapping reads, as (database or None, table): the declared
        ``tables``, else those found in its SQL (sqlglot); None when unknown."""
        from ._tables import parse_table, tables_in_sql

        if self.tables:
            return tuple(parse_table(t, what=self.name) for t in self.tables)
        return tables_in_sql(self.sql, mapping=self.name)

    def reads(self, table: str, *, default_database: str | None = None) -> bool:
        """Whether this mapping reads ``table`` (``database.table``; a bare name matches any
        database)."""
        from ._tables import parse_table

        db, name = parse_table(table, what="table")
        for d, t in self.read_tables() or ():
            if t == name and (db is None or (d or self.database or default_database or
                                             "default").lower() == db):
                return True
        return False


def _tables_option(name: str, tables: Sequence[str] | None) -> tuple[str, ...]:
    if tables is None:
        return ()
    if isinstance(tables, str) or not isinstance(tables, Sequence):
        raise DeclarationError(
            f"mapping {name!r}: tables must be a list of 'database.table' names, got "
            f"{type(tables).__name__}")
    from ._tables import parse_table

    out = []
    for t in tables:
        try:
            db, table = parse_table(t, what=f"mapping {name!r}: tables")
        except ValueError as exc:
            raise DeclarationError(str(exc)) from None
        out.append(f"{db}.{table}" if db else table)
    return tuple(out)


class Registry:
    """Name -> Mapping. Thread-safe; a name maps to one declaration at a time."""

    def __init__(self) -> None:
        self._by_name: dict[str, Mapping] = {}
        self._lock = threading.Lock()
        # The read path's lookup: the dict's own bound get, no Python frame.
        self.get: Callable[[str], Mapping | None] = self._by_name.get

    def register(self, mapping: Mapping) -> Mapping:
        with self._lock:
            old = self._by_name.get(mapping.name)
            if old is not None and old.fingerprint != mapping.fingerprint:
                raise DeclarationError(
                    f"mapping {mapping.name!r} is already declared with a different query "
                    f"(fingerprint {old.fingerprint} vs {mapping.fingerprint}); give each "
                    "declaration its own name, or call "
                    "athena_warm.declarations.unregister(name) first"
                )
            self._by_name[mapping.name] = mapping
            return mapping

    def unregister(self, name: str) -> None:
        with self._lock:
            self._by_name.pop(name, None)

    def clear(self) -> None:
        with self._lock:
            self._by_name.clear()

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[Mapping]:
        return iter(sorted(self._by_name.values(), key=lambda m: m.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def require(self, name: str) -> Mapping:
        m = self._by_name.get(name)
        if m is None:
            raise UnknownMappingError(name, self._by_name)
        return m


REGISTRY = Registry()


def unregister(name: str) -> None:
    """Forget the declaration called ``name`` (its cached copies expire normally)."""
    REGISTRY.unregister(name)


# --- loading declarations ---------------------------------------------------------------------

_loaded_sources: set[str] = set()
_load_lock = threading.Lock()


def load_app(target: str) -> None:
    """Import the module that declares mappings: a dotted module name or a ``.py`` path."""
    with _load_lock:
        if f"app:{target}" in _loaded_sources:
            return
        import importlib.util
        from pathlib import Path

        path = Path(target)
        try:
            if target.endswith(".py") or path.is_file():
                if not path.is_file():
                    raise ConfigurationError(
                        f"app {target!r}: no such file; give a module name (my_app) or an "
                        "existing .py file"
                    )
                mod_name = "_athena_warm_app_" + hashlib.sha1(
                    str(path.resolve()).encode()
                ).hexdigest()[:8]
                spec = importlib.util.spec_from_file_location(mod_name, path)
                if spec is None or spec.loader is None:
                    raise ConfigurationError(f"app {target!r}: cannot import this file")
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                sys.path.insert(0, str(path.resolve().parent))
                try:
                    spec.loader.exec_module(module)
                finally:
                    sys.path.remove(str(path.resolve().parent))
            else:
                if "" not in sys.path and "." not in sys.path:
                    sys.path.insert(0, "")
                importlib.import_module(target)
        except ConfigurationError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name and target.split(".")[0] != exc.name.split(".")[0]:
                raise ConfigurationError(
                    f"app {target!r} was found but its own import failed ({exc}); install "
                    f"what it needs in this Python ({sys.executable})") from None
            raise ConfigurationError(
                f"app {target!r}: cannot import it ({exc}); give a module name on sys.path or a "
                "path to a .py file"
            ) from None
        except SyntaxError as exc:
            raise ConfigurationError(
                f"app {target!r} has a syntax error: {exc.msg} ({exc.filename}, line "
                f"{exc.lineno}); fix it, then run again") from None
        except Exception as exc:
            raise ConfigurationError(
                f"app {target!r} raised {type(exc).__name__} while being imported: {exc}; "
                "fix the module (the CLI imports it to read its declarations)") from None
        _loaded_sources.add(f"app:{target}")


_TOML_KEYS = {
    "sql", "key", "value", "params", "database", "workgroup", "catalog", "ttl", "max_stale",
    "ttl_jitter",
    "on_duplicate", "on_null_key", "allow_empty", "types", "reuse", "tables", "validate",
    "validate_interval",
}


def load_config(path: str | Path) -> list[Mapping]:
    """Declare the mappings of a TOML file::

        [defaults]            # optional, applies to every mapping
        database = "analytics"
        ttl = "24h"

        [mappings.customer_mapping]
        sql = "SELECT customer_id, account_id FROM customer_mapping WHERE region = ?"
        params = ["eu"]
        key = "customer_id"
        value = "account_id"
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    from pathlib import Path

    p = Path(path)
    with _load_lock:
        if f"config:{p.resolve()}" in _loaded_sources:
            return [REGISTRY.require(n) for n in _config_names.get(str(p.resolve()), [])]
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"config {str(p)!r}: no such file") from None
        except IsADirectoryError:
            raise ConfigurationError(f"config {str(p)!r} is a directory; give the path of a "
                                     ".toml file") from None
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"config {str(p)!r} is not UTF-8 text ({exc.reason} at "
                                     f"byte {exc.start}); save it as UTF-8") from None
        except OSError as exc:
            raise ConfigurationError(f"config {str(p)!r}: cannot read it ({exc.strerror})"
                                     ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config {str(p)!r}: not valid TOML: {exc}") from None
        unknown_top = set(doc) - {"defaults", "mappings"}
        if unknown_top:
            raise ConfigurationError(
                f"config {str(p)!r}: unknown table(s) {sorted(unknown_top)}; use [defaults] "
                "and [mappings.NAME]"
            )
        defaults = doc.get("defaults", {})
        mappings = doc.get("mappings", {})
        if not isinstance(defaults, dict):
            raise ConfigurationError(
                f"config {str(p)!r}: defaults must be a table ([defaults] with keys such as "
                f"ttl = \"24h\"), got {type(defaults).__name__} {defaults!r}")
        bad = [n for n, body in (mappings.items() if isinstance(mappings, dict) else ())
               if not isinstance(body, dict)]
        if bad:
            raise ConfigurationError(
                f"config {str(p)!r}: mappings.{bad[0]} must be a table ([mappings.{bad[0]}] "
                "with sql, key, value...), not a value")
        if not isinstance(mappings, dict) or not mappings:
            raise ConfigurationError(
                f"config {str(p)!r}: declares no mappings; add a [mappings.NAME] table"
            )
        out = []
        for name, body in mappings.items():
            spec = {**defaults, **body}
            unknown = set(spec) - _TOML_KEYS
            if unknown:
                raise ConfigurationError(
                    f"config {str(p)!r}: mapping {name!r} has unknown option(s) "
                    f"{sorted(unknown)}; known options: {sorted(_TOML_KEYS)}"
                )
            try:
                out.append(Mapping(name, **spec))
            except TypeError as exc:
                raise ConfigurationError(f"config {str(p)!r}: mapping {name!r}: {exc}") from None
            except DeclarationError as exc:
                raise ConfigurationError(f"config {str(p)!r}: {exc}") from None
        _loaded_sources.add(f"config:{p.resolve()}")
        _config_names[str(p.resolve())] = [m.name for m in out]
        return out


_config_names: dict[str, list[str]] = {}


def load_declarations(*, app: str | None = None, config: str | None = None) -> None:
    """Load declarations from ``app``/``config`` or $ATHENA_WARM_APP / $ATHENA_WARM_CONFIG."""
    from ._config import resolve

    app = resolve(app, "APP", None)
    config = resolve(config, "CONFIG", None)
    if app:
        load_app(app)
    if config:
        load_config(config)
