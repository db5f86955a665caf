"""Change validators for the Athena origin: a fingerprint of a table's state from metadata.

For each table a mapping reads:

- Glue ``GetTable``: ``VersionId`` and ``UpdateTime`` (``CreateTime`` until the first update),
  and for Iceberg tables the ``metadata_location`` parameter, which every commit changes;
- for plain (Hive-style Parquet/CSV/JSON) tables, with ``listing``: a digest of the keys, sizes
  and ETags under the table's S3 location, so that files replaced without a Glue update are
  seen too (``s3:ListBucket`` on the prefix; one request per 1,000 objects).

Views (Athena views are Glue tables of type ``VIRTUAL_VIEW``), tables Glue does not know, and
locations with more objects than ``max_keys`` give no fingerprint: such a mapping refreshes on
its TTL. A failing call raises (through the origin's retry loop), and the caller then runs the
query: data is never served as unchanged when the check itself failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

DEFAULT_MAX_KEYS = 10_000


class Unknown(Exception):
    """The state of a table cannot be fingerprinted (a view, too many objects)."""


def table_state(call: Callable[..., Any], glue: Any, s3: Any, database: str, table: str, *,
                catalog_id: str | None, listing: bool, max_keys: int) -> dict[str, Any]:
    """What identifies the current state of ``database.table``."""
    kwargs: dict[str, Any] = {"DatabaseName": database, "Name": table}
    if catalog_id:
        kwargs["CatalogId"] = catalog_id
    try:
        got = call(glue.get_table, None, **kwargs)["Table"]
    except Exception as exc:  # not in Glue (another catalog, a CTE we took for a table)
        cause = exc.__cause__
        code = getattr(cause, "response", {}).get("Error", {}).get("Code")
        if code == "EntityNotFoundException":
            raise Unknown(f"{database}.{table} is not in the Glue Data Catalog") from None
        raise
    if str(got.get("TableType", "")).upper() == "VIRTUAL_VIEW":
        raise Unknown(f"{database}.{table} is a view")
    params = got.get("Parameters") or {}
    state: dict[str, Any] = {
        "table": f"{database}.{table}",
        "version": got.get("VersionId"),
        "updated": _stamp(got.get("UpdateTime") or got.get("CreateTime")),
    }
    iceberg = str(params.get("table_type", "")).upper() == "ICEBERG" or \
        "metadata_location" in params
    if iceberg:
        state["metadata_location"] = params.get("metadata_location")
        return state  # every commit writes a new metadata file: no listing needed
    location = (got.get("StorageDescriptor") or {}).get("Location") or ""
    if listing and location.startswith(("s3://", "s3a://")):
        state["files"] = listing_digest(call, s3, location, max_keys=max_keys)
    return state


def listing_digest(call: Callable[..., Any], s3: Any, location: str, *, max_keys: int) -> str:
    """A digest of (key, size, ETag) of every object under ``location``."""
    url = urlparse(location)
    bucket, prefix = url.netloc, url.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    digest = hashlib.sha256()
    seen = 0
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
        if token:
            kwargs["ContinuationToken"] = token
        page = call(s3.list_objects_v2, None, **kwargs)
        for obj in page.get("Contents") or ():
            seen += 1
            if seen > max_keys:
                raise Unknown(f"more than {max_keys} objects under {location} "
                              "(ATHENA_WARM_VALIDATE_MAX_KEYS)")
            digest.update(f"{obj.get('Key')}\0{obj.get('Size')}\0{obj.get('ETag')}\n".encode())
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if not token:
            return f"{seen}:{digest.hexdigest()[:32]}"


def fingerprint(states: Sequence[dict[str, Any]]) -> str:
    """One short string for the states of all tables (order-independent)."""
    raw = json.dumps(sorted(states, key=lambda s: s["table"]), sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)
