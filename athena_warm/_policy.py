"""Freshness policy: when a copy is due, stale, or too old, and who refreshes it.

A copy of a mapping is
  fresh         younger than its TTL (shortened per container by a random jitter, so containers
                loaded together do not all come due together) and of the current generation;
  stale         older than that, or of an older generation, but younger than ttl + max_stale:
                served while exactly one refresher (the holder of the lease) reloads it, and
                served when the refresh fails (stale-if-error), loudly;
  too old       older than ttl + max_stale: never served; with no fresh copy, an error.

The lease is the fleet-wide single-flight: ``SET NX PX`` in L2 with a random token, released only
by its holder (or by whoever collects the holder's handed-over query). Without L2, or when L2 is
unreachable, ``LocalLeases`` gives the same semantics within one process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class Leases(Protocol):
    """Who refreshes a mapping. Values are dicts with at least a ``token``."""

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float) -> bool | None:
        """Take the lease for ``ttl`` seconds. False if someone holds it; None if unreachable."""
        ...

    def info(self, mapping: str, fingerprint: str) -> dict[str, Any] | None:
        """The lease's value, or None when nobody holds it (or unreachable)."""
        ...

    def update(self, mapping: str, fingerprint: str, token: str, value: dict[str, Any],
               *, ttl: float | None = None) -> bool:
        """Replace the value if ``token`` still holds the lease (``ttl``: also its life)."""
        ...

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        """Drop the lease if ``token`` holds it."""
        ...


def encode_lease(token: str, value: dict[str, Any]) -> str:
    """``"<token> <json>"``: the token first, so a script compares it without parsing JSON."""
    return f"{token} {json.dumps({**value, 'token': token}, separators=(',', ':'))}"


def decode_lease(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    _, _, body = text.partition(" ")
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class LocalLeases:
    """Leases within one process (no L2, or L2 unreachable)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._leases: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _live(self, key: tuple[str, str]) -> dict[str, Any] | None:
        got = self._leases.get(key)
        if got is None:
            return None
        if self.clock() >= got[0]:
            del self._leases[key]
            return None
        return got[1]

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float) -> bool:
        with self._lock:
            key = (mapping, fingerprint)
            if self._live(key) is not None:
                return False
            self._leases[key] = (self.clock() + ttl, {"token": token})
            return True

    def info(self, mapping: str, fingerprint: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._live((mapping, fingerprint))
            return dict(value) if value is not None else None

    def update(self, mapping: str, fingerprint: str, token: str, value: dict[str, Any],
               *, ttl: float | None = None) -> bool:
        with self._lock:
            key = (mapping, fingerprint)
            current = self._live(key)
            if current is None or current.get("token") != token:
                return False
            until = self.clock() + ttl if ttl is not None else self._leases[key][0]
            self._leases[key] = (until, {**value, "token": token})
            return True

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        with self._lock:
            key = (mapping, fingerprint)
            current = self._live(key)
            if current is None or current.get("token") != token:
                return False
            del self._leases[key]
            return True


def jittered(ttl: float, jitter: float, rand: Callable[[], float]) -> float:
    """The TTL this container uses: ``ttl`` shortened by up to ``jitter`` (a fraction)."""
    return ttl * (1.0 - jitter * rand())
