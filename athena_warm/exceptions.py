"""Every error athena-warm raises. Each message says what happened and what to do about it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AthenaWarmError",
    "ConfigurationError",
    "DeadlineError",
    "DeclarationError",
    "DuplicateKeyError",
    "EmptyResultError",
    "L2Error",
    "MappingUnavailableError",
    "MissingColumnError",
    "NullKeyError",
    "OriginError",
    "OriginTimeoutError",
    "ReadOnlyMappingError",
    "RefreshError",
    "ResultShapeError",
    "StaleLimitError",
    "UnknownMappingError",
]


class AthenaWarmError(Exception):
    """Base class of every athena-warm error."""


class ConfigurationError(AthenaWarmError, ValueError):
    """A setting (argument or ATHENA_WARM_* variable) has a value we cannot use."""


class DeclarationError(AthenaWarmError, ValueError):
    """A mapping declaration is invalid or conflicts with another one."""


class UnknownMappingError(AthenaWarmError, KeyError):
    """get_mapping() was asked for a name nobody declared."""

    def __init__(self, name: str, known: Iterable[str], *, hint: str = "") -> None:
        self.name = name
        self.known = sorted(known)
        listed = ", ".join(repr(k) for k in self.known) if self.known else "none"
        msg = f"unknown mapping {name!r}; declared mappings: {listed}."
        msg += hint or (
            " Declare it with athena_warm.Mapping(...) in a module that is imported first, "
            "or point ATHENA_WARM_APP (a module) / ATHENA_WARM_CONFIG (a TOML file) at the "
            "declarations."
        )
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class L2Error(AthenaWarmError):
    """An operation that must reach L2 (an invalidation) could not. Reads never raise this:
    they fall back to L1 and the origin."""


class ReadOnlyMappingError(AthenaWarmError, TypeError):
    """Someone tried to change a cached mapping in place."""


class OriginError(AthenaWarmError):
    """The origin (Athena, DuckDB) could not produce the result.

    ``state`` is Athena's final state (FAILED, CANCELLED) or one of TIMEOUT, THROTTLED, ERROR;
    ``query_id`` is the QueryExecutionId when a query was started.
    """

    def __init__(
        self,
        message: str,
        *,
        mapping: str | None = None,
        origin: str = "",
        state: str = "ERROR",
        query_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.mapping = mapping
        self.origin = origin
        self.state = state
        self.query_id = query_id
        self.reason = reason
        super().__init__(message)

    def with_mapping(self, mapping: str) -> OriginError:
        """Name the mapping whose load failed (the origin does not know it)."""
        if self.mapping is None:
            self.mapping = mapping
            self.args = (f"mapping {mapping!r}: {self.args[0]}",)
        return self


class OriginTimeoutError(OriginError):
    """The query did not finish within the query timeout."""


class DeadlineError(AthenaWarmError):
    """No usable copy, and not enough time left in this invocation to load one."""

    def __init__(self, message: str, *, mapping: str, query_id: str | None = None) -> None:
        self.mapping = mapping
        self.query_id = query_id
        super().__init__(message)


class RefreshError(AthenaWarmError):
    """A refresh failed for a reason that is not an athena-warm error (a client that could not
    be built, a bug, an unexpected exception), and no copy young enough to serve remains; or
    another container's refresh failed moments ago. ``cause_type`` names the original
    exception's type; when it happened in this process it is also chained (``__cause__``)."""

    def __init__(self, message: str, *, mapping: str, cause_type: str) -> None:
        self.mapping = mapping
        self.cause_type = cause_type
        super().__init__(message)


class MappingUnavailableError(AthenaWarmError):
    """The middleware could not make a required mapping ready: the invocation fails."""

    def __init__(self, message: str, *, mapping: str) -> None:
        self.mapping = mapping
        super().__init__(message)


class StaleLimitError(AthenaWarmError):
    """The refresh failed and the only copy is older than ttl + max_stale: it is not served."""

    def __init__(self, message: str, *, mapping: str, age: float) -> None:
        self.mapping = mapping
        self.age = age
        super().__init__(message)


class ResultShapeError(AthenaWarmError, ValueError):
    """The query ran, but its result cannot become the declared mapping."""

    def __init__(self, message: str, *, mapping: str, **details: Any) -> None:
        self.mapping = mapping
        self.details = details
        super().__init__(f"mapping {mapping!r}: {message}")


class MissingColumnError(ResultShapeError):
    """A declared key or value column is not in the result."""


class ColumnTypeError(ResultShapeError):
    """A column's values do not fit the type the declaration gives it (``types=``), or a nested
    column the mapping uses has no declared type."""


class DuplicateKeyError(ResultShapeError):
    """Several rows share a key and the policy is on_duplicate='error'."""


class NullKeyError(ResultShapeError):
    """A row has a NULL key and the policy is on_null_key='error'."""


class EmptyResultError(ResultShapeError):
    """The query returned no rows and the declaration does not allow an empty mapping."""
