"""athena-warm: serve Athena query results to AWS Lambda functions from warm memory.

Tiers: L1 (this process's memory) -> L2 (optional, shared by the fleet: Redis/Valkey/
ElastiCache, S3, or both; and on Lambda Managed Instances the machine's /tmp) -> origin
(Athena, or DuckDB locally). Nothing heavy (boto3, pyathena, redis, duckdb) is imported until
first use.

What a function author needs is here::

    Mapping            declare a mapping (module level)
    warm_mappings      the Powertools middleware: mappings ready before the handler runs
    prewarm            fill them during init
    get_mapping        read one (a read-only dict with .meta)
    invalidate         make every container reload one (after a table update)
    clear_caches       drop this process's copies
    configure, Cache   options: origin, L2, check interval, signing key, clocks

The rest lives in its module: every error in ``athena_warm.exceptions``; the origin interface
(``Origin``, ``QueryResult``, ``Column``, ``open_origin``) in ``athena_warm.origin``; the
shared tiers (``SharedTier``, ``MemoryTier``, ``open_l2``) in ``athena_warm.l2``; the registry
and loaders in ``athena_warm.declarations``; ``register_snapstart`` in
``athena_warm.middleware``. Their old top-level names still work, with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from . import declarations, exceptions, l2, origin  # noqa: F401  (athena_warm.l2 etc.)
from ._cache import Cache, clear_caches, configure, get_mapping, invalidate
from ._declare import Mapping
from ._view import MappingMeta, MappingView
from .exceptions import AthenaWarmError, MappingUnavailableError, UnknownMappingError
from .middleware import prewarm, warm_mappings

__version__ = "0.1.0"

__all__ = [
    "AthenaWarmError",
    "Cache",
    "Mapping",
    "MappingMeta",
    "MappingUnavailableError",
    "MappingView",
    "UnknownMappingError",
    "__version__",
    "clear_caches",
    "configure",
    "get_mapping",
    "invalidate",
    "prewarm",
    "warm_mappings",
]

# name -> the module it lives in now (the names the top level exported before 0.1.0)
_MOVED = {
    **dict.fromkeys(
        ["ColumnTypeError", "ConfigurationError", "DeadlineError", "DeclarationError",
         "DuplicateKeyError", "EmptyResultError", "L2Error", "MissingColumnError",
         "NullKeyError", "OriginError", "OriginTimeoutError", "ReadOnlyMappingError",
         "RefreshError", "ResultShapeError", "StaleLimitError"], "exceptions"),
    **dict.fromkeys(["AsyncOrigin", "Column", "Origin", "QueryResult", "open_origin"],
                    "origin"),
    **dict.fromkeys(["Generation", "Lease", "MemoryTier", "SharedTier", "open_l2"], "l2"),
    **dict.fromkeys(["REGISTRY", "Registry", "load_config", "load_declarations", "unregister"],
                    "declarations"),
    "register_snapstart": "middleware",
    "default_cache": "_cache",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'athena_warm' has no attribute {name!r}")
    where = f"athena_warm.{module}"
    if not module.startswith("_"):
        warnings.warn(f"athena_warm.{name} moved: import it from {where}", DeprecationWarning,
                      stacklevel=2)
    return getattr(importlib.import_module(where), name)
