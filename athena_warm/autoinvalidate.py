"""Automatic invalidation: a Lambda handler for EventBridge's Glue Data Catalog events.

Subscribed to ``Glue Data Catalog Table State Change`` (UpdateTable, partitions added or
removed) and ``Glue Data Catalog Database State Change`` (tables created or deleted), and
optionally to S3 ``Object Created``/``Object Deleted`` events for a table's location, it runs
the equivalent of ``athena-warm invalidate NAME --refresh`` for each declared mapping that reads
the changed table: the origin is queried, the new copy published to L2, then the generation is
bumped, so warm containers switch to it with no gap and none of them queries Athena.

A burst of events for one update (EventBridge sends one per API call) costs one query: a mapping
whose copy in L2 already matches the table's metadata (its validator) is skipped. A mapping that
fails to refresh does not stop the others; the handler raises at the end, so that Lambda retries
the event (the ones already done are then skipped as current).

Handler: ``athena_warm.autoinvalidate.handler``. Declarations: ``ATHENA_WARM_APP`` or
``ATHENA_WARM_CONFIG``; L2: ``ATHENA_WARM_REDIS_URL`` and/or ``ATHENA_WARM_S3_URL``
(required: the fleet is reached through it). IAM: what a function that loads the mappings
needs (Athena, Glue ``GetTable``, the results bucket, L2), nothing more. See
``deploy/template.yaml`` (``AutoInvalidate``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus

from ._cache import Cache, default_cache
from ._declare import load_declarations
from .exceptions import AthenaWarmError, ConfigurationError

__all__ = ["changed_tables", "handle", "handler"]

log = logging.getLogger("athena_warm")

TABLE_CHANGE = "Glue Data Catalog Table State Change"
DATABASE_CHANGE = "Glue Data Catalog Database State Change"
S3_CHANGES = ("Object Created", "Object Deleted")


def changed_tables(event: dict[str, Any], *, locations: dict[str, str] | None = None
                   ) -> list[str]:
    """The tables (``database.table``) an EventBridge event says changed. ``locations`` maps
    ``database.table`` to its ``s3://`` location, for S3 object events."""
    kind = event.get("detail-type")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return []
    if kind == TABLE_CHANGE:
        db, table = detail.get("databaseName"), detail.get("tableName")
        return [f"{db}.{table}".lower()] if isinstance(db, str) and isinstance(table, str) \
            else []
    if kind == DATABASE_CHANGE:
        db, tables = detail.get("databaseName"), detail.get("changedTables")
        if not isinstance(db, str) or not isinstance(tables, list):
            return []
        return sorted({f"{db}.{t}".lower() for t in tables if isinstance(t, str)})
    if kind in S3_CHANGES and locations:
        bucket = (detail.get("bucket") or {}).get("name")
        key = (detail.get("object") or {}).get("key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            return []
        url = f"s3://{bucket}/{unquote_plus(key)}"
        return sorted(t for t, loc in locations.items()
                      if url.startswith(loc.rstrip("/") + "/"))
    return []


def handle(event: dict[str, Any], *, cache: Cache | None = None,
           locations: dict[str, str] | None = None) -> dict[str, Any]:
    """Refresh, with no gap, every declared mapping that reads a table the event names.
    Returns what was done: ``{"tables", "refreshed", "current", "failed"}``."""
    import os

    cache = cache if cache is not None else default_cache()
    if cache.shared is None:
        raise ConfigurationError(
            "automatic invalidation needs L2 (ATHENA_WARM_REDIS_URL or ATHENA_WARM_S3_URL): the "
            "fleet's containers "
            "learn of a change only through it")
    tables = changed_tables(event, locations=locations)
    default_db = os.environ.get("ATHENA_WARM_DATABASE")
    readers = [m.name for m in cache.registry
               if any(m.reads(t, default_database=default_db) for t in tables)]
    out: dict[str, Any] = {"tables": tables, "refreshed": [], "current": [], "failed": []}
    for name in readers:
        try:
            if cache.up_to_date(name):
                out["current"].append(name)
                continue
            view, generation = cache.switch(name)
            out["refreshed"].append({"name": name, "generation": generation,
                                     "rows": view.meta.rows, "query_id": view.meta.query_id})
        except AthenaWarmError as exc:
            log.error("athena-warm: automatic refresh of %s failed: %s", name, exc,
                      extra={"mapping": name, "event": "refresh_failed"})
            out["failed"].append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
    log.info("athena-warm: change event for %s: refreshed %s, already current %s, failed %s",
             tables or "no declared table", [r["name"] for r in out["refreshed"]],
             out["current"], [f["name"] for f in out["failed"]])
    return out


def _locations(cache: Cache) -> dict[str, str]:
    """``database.table`` -> S3 location of every table a declared mapping reads (Glue)."""
    import os

    find = getattr(cache.origin, "table_location", None)
    out: dict[str, str] = {}
    if find is None:
        return out
    default_db = os.environ.get("ATHENA_WARM_DATABASE") or "default"
    for m in cache.registry:
        for db, table in m.read_tables() or ():
            name = f"{db or m.database or default_db}.{table}"
            if name not in out:
                loc = find(name.split(".")[0], table)
                if loc:
                    out[name] = loc
    return out


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``athena_warm.autoinvalidate.handler``)."""
    load_declarations()
    locations = _locations(default_cache()) if event.get("detail-type") in S3_CHANGES else None
    out = handle(event, locations=locations)
    if out["failed"]:
        raise RuntimeError(f"athena-warm: {len(out['failed'])} mapping(s) failed to refresh "
                           f"after a change of {out['tables']}: {out['failed']}; the event is "
                           "retried")
    return out
