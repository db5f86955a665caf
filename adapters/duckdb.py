"""The local origin: the same SQL, in Athena's dialect, run by DuckDB over local files.

``duckdb:PATH`` where PATH is either a ``.duckdb`` database file, or a folder laid out like an
S3 data lake::

    PATH/
      analytics/                    <- database
        customer_mapping/           <- table: every *.parquet (or *.csv) file inside
          part-0.parquet
        regions.csv                 <- table 'regions' from one file

SQL is transpiled from Athena (Trino) to DuckDB with sqlglot; ``?`` parameters are bound by
DuckDB, never formatted into the SQL text.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..exceptions import ConfigurationError, OriginError
from ..origin import Column, QueryResult

_DATA_SUFFIXES = {".parquet": "read_parquet", ".csv": "read_csv_auto"}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def athena_type(duck_type: str) -> str:
    """DuckDB's type name in Athena's words (``VARCHAR`` -> ``varchar``)."""
    t = duck_type.lower()
    return {
        "timestamp with time zone": "timestamp with time zone",
        "timestamp_ns": "timestamp",
        "timestamp_ms": "timestamp",
        "timestamp_s": "timestamp",
        "hugeint": "decimal(38,0)",
        "blob": "varbinary",
        "float": "real",
    }.get(t, t)


def _athena_signature(t: Any) -> str:
    """A DuckDB column type (a DuckDBPyType) as Athena writes it: ``INTEGER[]`` is
    ``array(integer)``, ``STRUCT(x INTEGER)`` is ``row(x integer)``, an anonymous row's fields
    are ``field0``, ``field1``... as in Athena."""
    kind = getattr(t, "id", None)
    text = str(t)
    if kind in ("list", "array"):
        return f"array({_athena_signature(t.children[0][1])})"
    if kind == "map":
        (_, key), (_, value) = t.children
        return f"map({_athena_signature(key)}, {_athena_signature(value)})"
    if kind in ("struct", "tuple"):
        children = [c if isinstance(c, tuple) else ("", c) for c in t.children]
        if kind == "tuple" or [n for n, _ in children] == [f"_{i}" for i in range(len(children))]:
            children = [(f"field{i}", c) for i, (_, c) in enumerate(children)]
        return "row(" + ", ".join(f"{_field(n)} {_athena_signature(c)}" for n, c in children) + ")"
    if text == "JSON":
        return "json"
    return athena_type(text)


def _field(name: str) -> str:
    return name.lower() if name.isidentifier() and name.isascii() else \
        '"' + name.replace('"', '""') + '"'


class DuckDBOrigin:
    """Runs Athena SQL locally. One in-memory DuckDB per process; a cursor per query."""

    name = "duckdb"

    def __init__(self, path: str | Path, *, read_dialect: str = "athena") -> None:
        self.path = Path(path).expanduser()
        self.read_dialect = read_dialect
        self._con: Any = None
        self._lock = threading.Lock()
        self.tables: dict[str, list[str]] = {}

    def _connect(self) -> Any:
        if self._con is not None:
            return self._con
        with self._lock:
            if self._con is not None:
                return self._con
            import duckdb

            if self.path.is_file() and self.path.suffix == ".duckdb":
                con = duckdb.connect(str(self.path), read_only=True)
            elif self.path.is_dir():
                con = duckdb.connect(":memory:")
                self._register_folder(con)
            else:
                raise ConfigurationError(
                    f"duckdb origin: {str(self.path)!r} is neither a folder of database/table/ "
                    "files nor a .duckdb file; check ATHENA_WARM_ORIGIN=duckdb:PATH"
                )
            self._con = con
            return con

    def _register_folder(self, con: Any) -> None:
        for db_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            tables: list[str] = []
            for entry in sorted(db_dir.iterdir()):
                files: list[Path]
                if entry.is_dir():
                    files = [f for f in sorted(entry.rglob("*")) if f.suffix in _DATA_SUFFIXES]
                    table = entry.name
                elif entry.suffix in _DATA_SUFFIXES:
                    files, table = [entry], entry.stem
                else:
                    continue
                kinds = {f.suffix for f in files}
                if not files:
                    continue
                if len(kinds) > 1:
                    raise ConfigurationError(
                        f"duckdb origin: table folder {str(entry)!r} mixes {sorted(kinds)} files; "
                        "keep one format per table"
                    )
                reader = _DATA_SUFFIXES[files[0].suffix]
                file_list = "[" + ", ".join(_literal(str(f)) for f in files) + "]"
                if not tables:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(db_dir.name)}")
                con.execute(
                    f"CREATE VIEW {_ident(db_dir.name)}.{_ident(table)} AS "
                    f"SELECT * FROM {reader}({file_list})"
                )
                tables.append(table)
            if tables:
                self.tables[db_dir.name] = tables

    def transpile(self, sql: str) -> str:
        import sqlglot
        from sqlglot.errors import ParseError

        try:
            statements = sqlglot.transpile(sql, read=self.read_dialect, write="duckdb")
        except ParseError as exc:
            raise OriginError(
                f"duckdb origin: the SQL does not parse as Athena SQL: {exc}",
                origin=self.name, state="FAILED", reason=str(exc),
            ) from None
        if len(statements) != 1:
            raise OriginError(
                f"duckdb origin: expected one SQL statement, got {len(statements)}",
                origin=self.name, state="FAILED", reason="multiple statements",
            )
        return str(statements[0])

    def query(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        database: str | None,
        workgroup: str | None = None,
        catalog: str | None = None,
    ) -> QueryResult:
        import duckdb

        con = self._connect()
        text = self.transpile(sql)
        cur = con.cursor()
        try:
            if database and not (database == "default" and database not in self.tables):
                if self.tables and database not in self.tables:
                    raise OriginError(
                        f"duckdb origin: database {database!r} not found under "
                        f"{str(self.path)!r}; it has {sorted(self.tables)}",
                        origin=self.name, state="FAILED", reason="database not found",
                    )
                cur.execute(f"USE {_ident(database)}")
            cur.execute(text, list(params))
            columns = tuple(Column(d[0], _athena_signature(d[1])) for d in cur.description)
            rows = cur.fetchall()
            json_columns = [i for i, c in enumerate(columns) if c.type == "json"]
            if json_columns:  # Athena's json values reach Python parsed: so do ours
                rows = [_parse_json(r, json_columns) for r in rows]
        except duckdb.Error as exc:
            raise OriginError(
                f"duckdb origin: query failed: {exc}",
                origin=self.name, state="FAILED", reason=str(exc),
            ) from exc
        finally:
            cur.close()
        return QueryResult(columns=columns, rows=rows)

    def validator(self, tables: Sequence[tuple[str | None, str]], *, database: str | None,
                  catalog: str | None = None, listing: bool = True) -> str | None:
        """A fingerprint of the tables' files (path, size, modification time), the local
        counterpart of Glue + S3; None when a table is not a folder or file here."""
        if self.path.is_file():
            st = self.path.stat()
            return f"file:{st.st_size}:{st.st_mtime_ns}"
        digest = hashlib.sha256()
        for db, table in sorted(tables, key=lambda t: (t[0] or "", t[1])):
            folder = self.path / (db or database or "default")
            entry = folder / table
            files = sorted(f for f in entry.rglob("*") if f.suffix in _DATA_SUFFIXES) \
                if entry.is_dir() else [f for f in (folder.glob(f"{table}.*")
                                                   if folder.is_dir() else ())
                                        if f.suffix in _DATA_SUFFIXES]
            if not files:
                return None
            for f in files:
                st = f.stat()
                digest.update(f"{f.relative_to(self.path)}\0{st.st_size}\0"
                              f"{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:32]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _parse_json(row: tuple[Any, ...], columns: list[int]) -> tuple[Any, ...]:
    import json

    out = list(row)
    for i in columns:
        if out[i] is not None:
            out[i] = json.loads(out[i])
    return tuple(out)
