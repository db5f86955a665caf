"""The L2 interface: a store of opaque blobs shared by the fleet, plus a generation counter.

The core does the rest (codec, checks, freshness); a tier implements these few methods and must
fail open: a read that cannot reach the store returns None, a write returns False. Only
``bump`` (an operator's invalidation) raises, because its caller must know it did not happen.
Production tier: Redis / Valkey / ElastiCache (``athena_warm.adapters.redis``), configured by
``ATHENA_WARM_REDIS_URL``; redis-py is imported on first use.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._config import resolve
from ._policy import Leases

__all__ = ["SharedTier", "open_l2"]


@runtime_checkable
class SharedTier(Leases, Protocol):
    """Blobs, a generation counter, and the leases (see _policy.Leases) of the fleet."""

    name: str

    def generation(self, mapping: str) -> int | None:
        """The mapping's generation (0 if never bumped); None if the store is unreachable."""
        ...

    def read(self, mapping: str, fingerprint: str) -> bytes | None:
        """The stored blob, or None (absent or unreachable). Never a mix of two versions."""
        ...

    def head(self, mapping: str, fingerprint: str, size: int = 88) -> bytes | None:
        """The first ``size`` bytes of the stored blob (its header), or None."""
        ...

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float) -> bool:
        """Store a new version, replacing the old one atomically for readers; keep it ``ttl``
        seconds. False if the store is unreachable."""
        ...

    def floor(self, mapping: str) -> int:
        """The lowest servable generation, as read by the latest ``generation()`` call."""
        ...

    def bump(self, mapping: str, *, hard: bool = False) -> int:
        """Increase the generation; return the new one. ``hard``: copies of older generations
        are not served even as stale. Raises L2Error when it cannot."""
        ...


def open_l2(url: str | None = None) -> SharedTier | None:
    """The tier named by ``url`` or ``$ATHENA_WARM_REDIS_URL`` (``redis://`` or ``rediss://``
    for TLS); None when neither is set (no L2)."""
    url = resolve(url, "REDIS_URL", None)
    if not url:
        return None
    from .adapters.redis import RedisL2

    return RedisL2(url)
