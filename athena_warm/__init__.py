"""athena-warm: serve Athena query results to AWS Lambda functions from warm memory.

Tiers: L1 (this process's memory) -> L2 (optional: Redis/Valkey/ElastiCache, shared by the
fleet) -> origin (Athena, or DuckDB locally). Nothing heavy (boto3, pyathena, redis, duckdb)
is imported until first use.
"""

from ._cache import Cache, clear_caches, configure, default_cache, get_mapping, invalidate
from ._declare import REGISTRY, Mapping, Registry, load_config, load_declarations, unregister
from ._memory import MemoryTier
from ._view import MappingMeta, MappingView
from .exceptions import (
    AthenaWarmError,
    ColumnTypeError,
    ConfigurationError,
    DeadlineError,
    DeclarationError,
    DuplicateKeyError,
    EmptyResultError,
    L2Error,
    MappingUnavailableError,
    MissingColumnError,
    NullKeyError,
    OriginError,
    OriginTimeoutError,
    ReadOnlyMappingError,
    RefreshError,
    ResultShapeError,
    StaleLimitError,
    UnknownMappingError,
)
from .l2 import Generation, Lease, SharedTier, open_l2
from .middleware import prewarm, register_snapstart, warm_mappings
from .origin import AsyncOrigin, Column, Origin, QueryResult, open_origin

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "AsyncOrigin",
    "AthenaWarmError",
    "Cache",
    "Column",
    "ColumnTypeError",
    "ConfigurationError",
    "DeadlineError",
    "DeclarationError",
    "DuplicateKeyError",
    "EmptyResultError",
    "Generation",
    "L2Error",
    "Lease",
    "Mapping",
    "MappingMeta",
    "MappingUnavailableError",
    "MappingView",
    "MemoryTier",
    "MissingColumnError",
    "NullKeyError",
    "Origin",
    "OriginError",
    "OriginTimeoutError",
    "QueryResult",
    "ReadOnlyMappingError",
    "RefreshError",
    "Registry",
    "ResultShapeError",
    "SharedTier",
    "StaleLimitError",
    "UnknownMappingError",
    "__version__",
    "clear_caches",
    "configure",
    "default_cache",
    "get_mapping",
    "invalidate",
    "load_config",
    "load_declarations",
    "open_l2",
    "open_origin",
    "prewarm",
    "register_snapstart",
    "unregister",
    "warm_mappings",
]
