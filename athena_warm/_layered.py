"""Redis (fast) over S3 (durable): one shared tier that survives losing Redis.

Every copy is written to both; reads and leases go to Redis, and to S3 when Redis has nothing
or cannot be reached. The generation counter lives in both, S3's being the one that survives:
a counter missing from Redis (restarted empty, flushed, evicted) is seeded from S3's, never
created anew, so the S3 copies stay current and a Redis loss costs zero origin queries (cold
containers read S3 until the next refresh writes both again). An invalidation bumps S3 first,
then sets Redis to the same counter, and fails loudly if it could not do both.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from .exceptions import L2Error
from .l2 import MAX_CHUNKS, Generation, Lease, SharedTier, WriteOutcome

__all__ = ["LayeredTier"]


class Seedable(SharedTier, Protocol):
    """A fast tier whose counter can be read without creating it, and set from another's."""

    def peek_generation(self, mapping: str) -> Generation | Literal[False] | None: ...

    def seed_generation(self, mapping: str, gen: Generation, *,
                        force: bool = False) -> Generation | None: ...

    def reachable(self) -> bool: ...


class LayeredTier:
    """A SharedTier made of a fast one (Redis) above a durable one (S3)."""

    name = "layered"

    def __init__(self, fast: Seedable, durable: SharedTier) -> None:
        self.fast = fast
        self.durable = durable
        # Leases taken on S3 while Redis was down (their update/release go there too).
        self._durable_leases: dict[tuple[str, str, str], None] = {}

    def reachable(self) -> bool:
        reachable = getattr(self.durable, "reachable", None)
        return self.fast.reachable() or (not callable(reachable) or bool(reachable()))

    def close(self) -> None:
        for tier in (self.fast, self.durable):
            close = getattr(tier, "close", None)
            if callable(close):
                close()

    # -- the generation ----------------------------------------------------------------------------

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        have = self.fast.peek_generation(mapping)
        if isinstance(have, Generation):
            return have, "ok"
        if have is None:  # Redis unreachable: S3 decides
            return self.durable.generation(mapping)
        durable = self.durable.generation(mapping)
        if durable is None:  # S3 unreachable too: Redis starts its own epoch
            return self.fast.generation(mapping)
        seeded = self.fast.seed_generation(mapping, durable[0])
        if seeded is None:
            return durable
        return seeded, (durable[1] if seeded == durable[0] else "ok")

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        gen = self.durable.bump(mapping, hard=hard)  # raises when it cannot
        if self.fast.seed_generation(mapping, gen, force=True) is None:
            raise L2Error(
                f"the generation of {mapping!r} was bumped in S3 but Redis could not be "
                "reached: containers that read Redis were NOT told to reload. Run the "
                "invalidation again once Redis answers.")
        return gen

    # -- copies ------------------------------------------------------------------------------------

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        got = self.fast.read(mapping, fingerprint, max_chunks=max_chunks)
        return got if got is not None else \
            self.durable.read(mapping, fingerprint, max_chunks=max_chunks)

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        got = self.fast.head(mapping, fingerprint, size)
        return got if got is not None else self.durable.head(mapping, fingerprint, size)

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        kw: dict[str, Any] = dict(ttl=ttl, created_at=created_at, generation=generation,
                                  token=token)
        fast = self.fast.write(mapping, fingerprint, blob, **kw)
        durable = self.durable.write(mapping, fingerprint, blob, **kw)
        return fast if fast is not None else durable

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        fast = self.fast.renew(mapping, fingerprint, note, created_ms=created_ms, ttl=ttl)
        durable = self.durable.renew(mapping, fingerprint, note, created_ms=created_ms, ttl=ttl)
        return fast if fast is not None else durable

    def note(self, mapping: str, fingerprint: str) -> str | None:
        got = self.fast.note(mapping, fingerprint)
        return got if got is not None else self.durable.note(mapping, fingerprint)

    # -- leases: on Redis; on S3 while Redis cannot be reached ----------------------------------

    def _leases(self) -> SharedTier:
        return self.fast if self.fast.reachable() else self.durable

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        got = self.fast.acquire(mapping, fingerprint, token, ttl=ttl, at=at)
        if got is not None:
            return got
        got = self.durable.acquire(mapping, fingerprint, token, ttl=ttl, at=at)
        if isinstance(got, Lease):
            if len(self._durable_leases) >= 256:  # bounded: forget the oldest
                del self._durable_leases[next(iter(self._durable_leases))]
            self._durable_leases[(mapping, fingerprint, token)] = None
        return got

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        return self._leases().info(mapping, fingerprint)

    def _home(self, mapping: str, fingerprint: str, token: str) -> SharedTier:
        return self.durable if (mapping, fingerprint, token) in self._durable_leases \
            else self.fast

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        return self._home(mapping, fingerprint, lease.token).update(
            mapping, fingerprint, lease, ttl=ttl)

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        done = self._home(mapping, fingerprint, token).release(mapping, fingerprint, token)
        self._durable_leases.pop((mapping, fingerprint, token), None)
        return done
