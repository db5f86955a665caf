"""The tables a mapping reads: declared (``tables=[...]``), else found in its SQL with sqlglot.

Revalidation fingerprints these tables' metadata instead of re-running the query. sqlglot is
imported on first use (it costs ~100 ms): at a mapping's first refresh, never at import. When it
is not installed, or the SQL does not parse, the tables are unknown and the mapping falls back
to its TTL (one log line says why).
"""

from __future__ import annotations

import logging
import re
import threading

from ._events import emit

__all__ = ["TableRef", "parse_table", "tables_in_sql"]

# (database or None for the origin's default, table), lower-case as Glue stores them
TableRef = tuple[str | None, str]

_PART_RE = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
_cache: dict[str, tuple[TableRef, ...] | None] = {}
_lock = threading.Lock()


def parse_table(text: str, *, what: str) -> TableRef:
    """``db.table``, ``table`` or ``catalog.db.table`` (the catalog is dropped: Glue's only)
    -> (database or None, table); ValueError naming ``what`` when it is not a table name."""
    parts = text.strip().strip('"').split(".") if isinstance(text, str) else []
    parts = [p.strip().strip('"').strip("`") for p in parts]
    if not 1 <= len(parts) <= 3 or not all(_PART_RE.match(p) for p in parts):
        raise ValueError(
            f"{what}: {text!r} is not a table name; give 'database.table' or 'table' "
            "(letters, digits, '_' and '-')")
    if len(parts) == 1:
        return (None, parts[0].lower())
    return (parts[-2].lower(), parts[-1].lower())


def tables_in_sql(sql: str, *, mapping: str) -> tuple[TableRef, ...] | None:
    """The tables ``sql`` reads (CTE names excluded), or None when they cannot be known."""
    with _lock:
        if sql in _cache:
            return _cache[sql]
    try:
        import sqlglot
        from sqlglot import exp
    except ImportError:
        found = None
        why = "sqlglot is not installed (pip install sqlglot), and no tables= are declared"
    else:
        try:
            tree = sqlglot.parse_one(sql, read="athena")
            ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
            refs: set[TableRef] = set()
            for t in tree.find_all(exp.Table):
                if not t.name:
                    continue  # a table function (UNNEST, VALUES)
                if not t.db and t.name.lower() in ctes:
                    continue
                refs.add(((t.db or "").lower() or None, t.name.lower()))
            found = tuple(sorted(refs, key=lambda r: (r[0] or "", r[1]))) or None
            why = "its SQL reads no table" if found is None else ""
        except Exception as exc:  # sqlglot's errors vary by version: any of them means unknown
            found, why = None, f"sqlglot could not parse its SQL ({type(exc).__name__})"
    if found is None:
        emit(logging.INFO, "validate_unknown",
             "athena-warm: the tables %s reads are unknown (%s); it refreshes on its TTL. "
             "Declare tables=['database.table'] to revalidate it instead", mapping, why,
             extra={"mapping": mapping, "reason": why})
    with _lock:
        _cache[sql] = found
    return found
