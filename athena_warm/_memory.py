"""An in-memory shared tier with Redis's semantics, on an injected clock.

``MemoryTier`` stores what ``RedisL2`` stores (raw strings and bytes, so the same parsers read
them back and the same damage can be done to them), with the same fenced writes, epoch
generations and expiring leases, but in one process. It is the tier of the unit and model-based
tests and of ``ATHENA_WARM_REDIS_URL=memory://``; a Cache with no L2 uses one privately for its
in-process leases. ``available = False`` makes it behave as an unreachable server (fail open).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .exceptions import L2Error
from .l2 import (
    CLAIM_SUFFIX,
    MAX_CHUNKS,
    Generation,
    Lease,
    Pointer,
    WriteOutcome,
    new_epoch,
    parse_generation,
)

if TYPE_CHECKING:
    from ._declare import Mapping

_NEVER = float("inf")


class MemoryTier:
    """A SharedTier in this process's memory. Thread-safe."""

    name = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, grace: float = 60.0) -> None:
        self.clock = clock
        self.grace = grace
        self.available = True
        self._kv: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    # -- raw storage (for tests: damage, loss) ---------------------------------------------------

    def _get(self, key: str) -> Any:
        got = self._kv.get(key)
        if got is None:
            return None
        if self.clock() >= got[1]:
            del self._kv[key]
            return None
        return got[0]

    def _set(self, key: str, value: Any, ttl: float | None) -> None:
        self._kv[key] = (value, _NEVER if ttl is None else self.clock() + max(ttl, 0.001))

    def set_raw(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store anything under ``key`` (a test's damage)."""
        with self._lock:
            self._set(key, value, ttl)

    def stored_keys(self) -> list[str]:
        with self._lock:
            return [k for k in list(self._kv) if self._get(k) is not None]

    def flush(self) -> None:
        """Lose everything (a restart without persistence, FLUSHALL, eviction)."""
        with self._lock:
            self._kv.clear()

    @staticmethod
    def key(mapping: str, *parts: str) -> str:
        return ":".join(["{" + mapping + "}", *parts])

    def _up(self) -> bool:
        return self.available

    # -- generation --------------------------------------------------------------------------------

    def _generation_locked(self, mapping: str) -> tuple[Generation, str]:
        key = self.key(mapping, "gen")
        raw = self._get(key)
        if isinstance(raw, dict):
            got = parse_generation(raw.get("e"), raw.get("g"), raw.get("hard"))
            if got is not None:
                return got, "ok"
        how = "new" if raw is None else "repaired"
        fresh = Generation(new_epoch(), 0, 0)
        self._set(key, {"e": fresh.epoch, "g": "0", "hard": "0"}, None)
        return fresh, how

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        if not self._up():
            return None
        with self._lock:
            return self._generation_locked(mapping)

    def peek_generation(self, mapping: str) -> Generation | Literal[False] | None:
        """The counter as stored, without creating it: False when absent or malformed."""
        if not self._up():
            return None
        with self._lock:
            raw = self._get(self.key(mapping, "gen"))
            if not isinstance(raw, dict):
                return False
            return parse_generation(raw.get("e"), raw.get("g"), raw.get("hard")) or False

    def seed_generation(self, mapping: str, gen: Generation, *,
                        force: bool = False) -> Generation | None:
        """Set the counter to ``gen`` where it is absent or malformed (``force``: also where
        it is of another epoch or behind); what it holds after. None if unreachable."""
        if not self._up():
            return None
        with self._lock:
            raw = self._get(self.key(mapping, "gen"))
            have = parse_generation(raw.get("e"), raw.get("g"), raw.get("hard")) \
                if isinstance(raw, dict) else None
            if have is not None and (not force or (
                    have.epoch == gen.epoch and have.number >= gen.number
                    and have.floor >= gen.floor)):
                return have
            self._set(self.key(mapping, "gen"),
                      {"e": gen.epoch, "g": str(gen.number), "hard": str(gen.floor)}, None)
            return gen

    def reachable(self) -> bool:
        return self.available

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        if not self._up():
            raise L2Error(f"could not bump the generation of {mapping!r}: the memory tier is "
                          "down; warm containers were NOT told to reload. Run it again.")
        with self._lock:
            gen, _ = self._generation_locked(mapping)
            number = gen.number + 1
            floor = number if hard else gen.floor
            self._set(self.key(mapping, "gen"),
                      {"e": gen.epoch, "g": str(number), "hard": str(floor)}, None)
            return Generation(gen.epoch, number, floor)

    # -- copies ------------------------------------------------------------------------------------

    def _blob_locked(self, mapping: str, fingerprint: str, max_chunks: int) -> bytes | None:
        ptr = Pointer.decode(self._get(self.key(mapping, fingerprint, "ptr")))
        if ptr is None or ptr.chunks > max_chunks:
            return None
        parts = [self._get(self.key(mapping, fingerprint, ptr.version, str(i)))
                 for i in range(ptr.chunks)]
        if not all(isinstance(p, bytes) for p in parts):
            return None
        return b"".join(parts)

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        if not self._up():
            return None
        with self._lock:
            return self._blob_locked(mapping, fingerprint, max_chunks)

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        if not self._up():
            return None
        with self._lock:
            ptr = Pointer.decode(self._get(self.key(mapping, fingerprint, "ptr")))
            if ptr is None:
                return None
            first = self._get(self.key(mapping, fingerprint, ptr.version, "0"))
            return first[:size] if isinstance(first, bytes) and first else None

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        if not self._up():
            return None
        with self._lock:
            current, _ = self._generation_locked(mapping)
            if current.epoch != generation.epoch or generation.number < current.number:
                return "invalidated"
            ptr_key = self.key(mapping, fingerprint, "ptr")
            old = Pointer.decode(self._get(ptr_key))
            lease = self._lease_locked(mapping, fingerprint)
            holder = token is not None and lease is not None and lease.token == token
            created_ms = int(created_at * 1000)
            if not holder and old is not None and \
                    not old.older_than(generation.epoch, generation.number, created_ms):
                return "fenced"
            version = secrets.token_hex(6)
            self._set(self.key(mapping, fingerprint, version, "0"), blob, ttl)
            self._set(ptr_key, Pointer(version, 1, generation.epoch, generation.number,
                                       created_ms).encode(), ttl)
            if old is not None:
                for i in range(old.chunks):
                    k = self.key(mapping, fingerprint, old.version, str(i))
                    if self._get(k) is not None:
                        self._kv[k] = (self._kv[k][0], self.clock() + self.grace)
            return "written"

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        if not self._up():
            return None
        with self._lock:
            ptr_key = self.key(mapping, fingerprint, "ptr")
            ptr = Pointer.decode(self._get(ptr_key))
            if ptr is None or ptr.created_ms != created_ms:
                return False
            for k in [ptr_key] + [self.key(mapping, fingerprint, ptr.version, str(i))
                                  for i in range(ptr.chunks)]:
                value = self._get(k)
                if value is not None:
                    self._set(k, value, ttl)
            self._set(self.key(mapping, fingerprint, "note"), note, ttl)
            return True

    def note(self, mapping: str, fingerprint: str) -> str | None:
        if not self._up():
            return None
        with self._lock:
            raw = self._get(self.key(mapping, fingerprint, "note"))
            return raw if isinstance(raw, str) else None

    def delete(self, mapping: str, fingerprint: str) -> None:
        with self._lock:
            self._kv.pop(self.key(mapping, fingerprint, "ptr"), None)

    # -- leases --------------------------------------------------------------------------------

    def _lease_locked(self, mapping: str, fingerprint: str) -> Lease | None:
        key = self.key(mapping, fingerprint, "lease")
        raw = self._get(key)
        if raw is None:
            return None
        lease = Lease.decode(raw)
        if lease is None:
            del self._kv[key]  # malformed: nobody can hold it
        return lease

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        if not self._up():
            return None
        with self._lock:
            if self._lease_locked(mapping, fingerprint) is not None:
                return False
            fence_key = self.key(mapping, fingerprint, "fence")
            fence = int(self._get(fence_key) or 0) + 1
            self._set(fence_key, fence, None)
            lease = Lease(token=token, fence=fence, at=at)
            self._set(self.key(mapping, fingerprint, "lease"), lease.encode(), ttl)
            return lease

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        if not self._up():
            return None
        with self._lock:
            return self._lease_locked(mapping, fingerprint)

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        if not self._up():
            return False
        with self._lock:
            key = self.key(mapping, fingerprint, "lease")
            current = self._lease_locked(mapping, fingerprint)
            if current is None or current.token != lease.token:
                return False
            until = self._kv[key][1] if ttl is None else self.clock() + max(ttl, 0.001)
            self._kv[key] = (lease.encode(), until)
            return True

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        if not self._up():
            return False
        with self._lock:
            current = self._lease_locked(mapping, fingerprint)
            if current is None or current.token != token:
                return False
            del self._kv[self.key(mapping, fingerprint, "lease")]
            return True

    def lease_expires_in(self, mapping: str, fingerprint: str) -> float | None:
        """Seconds until the lease expires (None: no lease). For tests."""
        with self._lock:
            if self._lease_locked(mapping, fingerprint) is None:
                return None
            return self._kv[self.key(mapping, fingerprint, "lease")][1] - self.clock()


class LocalLeases:
    """The in-process leases (no L2, or L2 unreachable), on a private MemoryTier."""

    def __init__(self, tier: MemoryTier) -> None:
        self.tier = tier

    def acquire(self, decl: Mapping, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        return self.tier.acquire(decl.name, decl.fingerprint, token, ttl=ttl, at=at)

    def info(self, decl: Mapping) -> Lease | None:
        return self.tier.info(decl.name, decl.fingerprint)

    def update(self, decl: Mapping, lease: Lease, *, ttl: float | None = None) -> bool:
        return self.tier.update(decl.name, decl.fingerprint, lease, ttl=ttl)

    def release(self, decl: Mapping, token: str) -> bool:
        return self.tier.release(decl.name, decl.fingerprint, token)

    def claim(self, decl: Mapping, token: str, *, ttl: float, at: float,
              suffix: str = CLAIM_SUFFIX) -> Lease | Literal[False] | None:
        return self.tier.acquire(decl.name, decl.fingerprint + suffix, token, ttl=ttl, at=at)

    def unclaim(self, decl: Mapping, token: str) -> bool:
        return self.tier.release(decl.name, decl.fingerprint + CLAIM_SUFFIX, token)
