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

import contextlib
import dataclasses
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._events import emit
from .exceptions import DeadlineError, OriginError, StaleLimitError
from .origin import AsyncOrigin

if TYPE_CHECKING:
    from ._declare import Mapping
    from ._l1 import Entry
    from .l2 import SharedTier
    from .origin import Origin, QueryResult

log = logging.getLogger("athena_warm")


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


DEADLINE_MARGIN = 0.5  # seconds kept back from an invocation's deadline to return in time


class RefreshPolicy:
    """The policy's decisions, run by Cache (which supplies the tiers, origin and clocks):
    revalidate, take a newer copy from L2, take the lease and refresh, collect a handed-over
    query, serve stale, or raise."""

    # Supplied by Cache:
    l2: SharedTier | None
    local_leases: LocalLeases
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    sleep: Callable[[float], None]
    retry_interval: float
    refresh_timeout: float
    span: Callable[[str], contextlib.AbstractContextManager[Any]]
    _origin: Origin | None
    _origin_arg: Any

    @property
    def origin(self) -> Origin:
        raise NotImplementedError

    def _next_look(self, now: float, expires_at: float) -> float:
        raise NotImplementedError

    def _from_l2(self, decl: Mapping, generation: int, *,
                 newer_than: Entry | None) -> Entry | None:
        raise NotImplementedError

    def _to_l2(self, decl: Mapping, entry: Entry) -> bool:
        raise NotImplementedError

    def _entry_from_result(self, decl: Mapping, result: QueryResult, generation: int,
                           seconds: float) -> Entry:
        raise NotImplementedError

    def _fill(self, decl: Mapping, cur: Entry | None, *, deadline: float | None,
              origin: bool = False) -> Entry:
        """Called when ``cur`` (this container's copy, if any) is due for a look: revalidate it,
        take a newer copy from L2, or refresh (one refresher in the fleet; others serve stale)."""
        now = self.clock()
        generation = self.l2.generation(decl.name) if self.l2 is not None else None
        too_old = cur is not None and now >= cur.stale_until
        if too_old:
            cur = None  # past ttl + max_stale: never served again
        if cur is not None and generation is not None and generation != cur.generation:
            assert self.l2 is not None
            hard = cur.generation < self.l2.floor(decl.name)
            emit(logging.INFO,
                "athena-warm: %s was invalidated%s (generation %d -> %d); refreshing",
                decl.name, " hard" if hard else "", cur.generation, generation,
                extra={"mapping": decl.name, "event": "invalidated", "generation": generation,
                       "hard": hard},
            )
            # Stale from now on, served while one container refreshes; after a hard
            # invalidation, not served at all.
            cur = None if hard else dataclasses.replace(cur, expires_at=now)
        elif cur is not None and not origin and now < cur.expires_at:
            # Only the generation check was due, and the copy is current: keep it.
            return dataclasses.replace(cur, fresh_until=self._next_look(now, cur.expires_at))
        stale = cur
        if not origin and generation is not None:
            got = self._from_l2(decl, generation, newer_than=cur)
            if got is not None:
                if now < got.expires_at:
                    return got
                if stale is None or got.created_at > stale.created_at:
                    stale = got  # a stale copy from L2 beats none (a cold container)
        return self._refresh(decl, generation, stale, deadline=deadline, too_old=too_old,
                             force=origin)

    def _refresh(self, decl: Mapping, generation: int | None, stale: Entry | None, *,
                 deadline: float | None, too_old: bool, force: bool) -> Entry:
        gen = generation if generation is not None else (stale.generation if stale else 0)
        token = secrets.token_hex(8)
        leases: Leases = self.local_leases
        won = None
        if self.l2 is not None and generation is not None:
            won = self.l2.acquire(decl.name, decl.fingerprint, token,
                                  ttl=self._lease_ttl(deadline))
            if won is not None:
                leases = self.l2
        if won is None:  # no L2, or unreachable: single-flight within this process
            won = self.local_leases.acquire(decl.name, decl.fingerprint, token,
                                            ttl=self._lease_ttl(deadline))
        if won:
            return self._refresh_as_holder(decl, gen, generation, stale, leases, token,
                                           deadline=deadline, too_old=too_old, force=force)
        info = leases.info(decl.name, decl.fingerprint) or {}
        if info.get("query_id") and isinstance(self.origin, AsyncOrigin):
            entry = self._collect(decl, gen, leases, info, stale, too_old=too_old)
            if entry is not None:
                return entry
        if stale is not None:
            return self._serve_stale(decl, stale, "another container is refreshing it")
        if info.get("failed"):
            raise OriginError(
                f"mapping {decl.name!r}: no usable copy, and the latest refresh failed "
                f"{self.wall_clock() - float(info.get('at', 0)):.0f} s ago: {info['failed']}. "
                f"It is retried after {self.retry_interval:g} s.",
                mapping=decl.name, state="FAILED", query_id=info.get("query_id"),
            )
        return self._wait_for_refresh(decl, generation, leases, deadline=deadline,
                                      too_old=too_old)

    def _refresh_as_holder(self, decl: Mapping, gen: int, generation: int | None,
                           stale: Entry | None, leases: Leases, token: str, *,
                           deadline: float | None, too_old: bool, force: bool) -> Entry:
        if not force and generation is not None:
            # Someone may have published between our look and the lease (dogpile does not
            # re-check here, and queries twice).
            fresh = self._from_l2(decl, generation, newer_than=stale)
            if fresh is not None and self.clock() < fresh.expires_at:
                leases.release(decl.name, decl.fingerprint, token)
                return fresh
        try:
            entry = self._query_origin(decl, gen, leases, token, stale, deadline=deadline)
        except OriginError as exc:
            # Keep the lease a little as a failure marker: the fleet does not retry at once.
            leases.update(decl.name, decl.fingerprint, token,
                          {"failed": str(exc)[:500], "at": self.wall_clock(),
                           "query_id": exc.query_id}, ttl=self.retry_interval)
            return self._stale_or_raise(decl, stale, exc, too_old=too_old)
        if entry is None:  # handed over (the lease keeps the query id), or not started
            query_id = (leases.info(decl.name, decl.fingerprint) or {}).get("query_id")
            if query_id is None:
                leases.release(decl.name, decl.fingerprint, token)
            return self._stale_or_raise(decl, stale, None, too_old=too_old, deadline=deadline,
                                        query_id=query_id)
        self._to_l2(decl, entry)
        leases.release(decl.name, decl.fingerprint, token)
        return entry

    def _lease_ttl(self, deadline: float | None) -> float:
        origin = self._origin or (self.origin if self._origin_arg is not None else None)
        if isinstance(origin, AsyncOrigin):  # a handed-over query must outlive the invocation
            return float(getattr(origin, "query_timeout", self.refresh_timeout)) + 60.0
        if deadline is not None:
            return max(1.0, deadline - self.clock()) + 5.0  # the holder cannot run past it
        return self.refresh_timeout

    def _query_origin(self, decl: Mapping, gen: int, leases: Leases, token: str,
                      stale: Entry | None, *, deadline: float | None) -> Entry | None:
        """Run the query as the lease holder. None: still running at the deadline (its id is
        kept with the lease for a later invocation), or not started for lack of time."""
        origin = self.origin
        start = self.clock()  # the injected clock: tests of slow loads are instant
        try:
            with self.span("## athena-warm origin query"):
                if isinstance(origin, AsyncOrigin):
                    query_id = origin.start(decl.sql, decl.params, database=decl.database,
                                            workgroup=decl.workgroup, catalog=decl.catalog)
                    leases.update(decl.name, decl.fingerprint, token,
                                  {"query_id": query_id, "at": self.wall_clock()})
                    max_wait = None
                    if deadline is not None:
                        max_wait = max(0.0, deadline - self.clock() - DEADLINE_MARGIN)
                    execution = origin.wait(query_id, max_wait=max_wait)
                    if execution is None:
                        emit(logging.WARNING,
                            "athena-warm: refresh of %s handed over: query %s still runs at "
                            "this invocation's deadline; a later invocation collects it",
                            decl.name, query_id,
                            extra={"mapping": decl.name, "event": "handover",
                                   "query_id": query_id},
                        )
                        return None
                    result = origin.fetch(query_id, execution)
                else:
                    expected = stale.load_seconds if stale is not None else 0.0
                    left = None if deadline is None else deadline - self.clock() - DEADLINE_MARGIN
                    if left is not None and left <= expected:
                        emit(logging.INFO,
                            "athena-warm: not refreshing %s now: the last load took %.1f s, "
                            "more than this invocation has left", decl.name, expected,
                            extra={"mapping": decl.name, "event": "refresh_deferred"},
                        )
                        return None
                    result = origin.query(decl.sql, decl.params, database=decl.database,
                                          workgroup=decl.workgroup, catalog=decl.catalog)
        except OriginError as exc:
            emit(logging.ERROR,
                "athena-warm: loading %s from the origin failed: %s", decl.name, exc,
                extra={"mapping": decl.name, "event": "origin_error", "query_id": exc.query_id},
            )
            raise exc.with_mapping(decl.name) from exc.__cause__
        return self._entry_from_result(decl, result, gen, self.clock() - start)

    def _collect(self, decl: Mapping, gen: int, leases: Leases, info: dict[str, Any],
                 stale: Entry | None, *, too_old: bool) -> Entry | None:
        """Collect the result of a query another invocation started and handed over."""
        origin = self.origin
        assert isinstance(origin, AsyncOrigin)
        query_id = str(info["query_id"])
        start = self.clock()
        try:
            with self.span("## athena-warm origin collect"):
                execution = origin.wait(query_id, max_wait=0)  # one look
                if execution is None:
                    return None  # still running
                result = origin.fetch(query_id, execution)
        except OriginError as exc:
            leases.release(decl.name, decl.fingerprint, str(info.get("token")))
            return self._stale_or_raise(decl, stale, exc.with_mapping(decl.name),
                                        too_old=too_old)
        entry = self._entry_from_result(decl, result, gen, self.clock() - start)
        emit(logging.INFO,
            "athena-warm: collected %s from handed-over query %s", decl.name, query_id,
                 extra={"mapping": decl.name, "event": "collect", "query_id": query_id})
        self._to_l2(decl, entry)
        leases.release(decl.name, decl.fingerprint, str(info.get("token")))
        return entry

    def _wait_for_refresh(self, decl: Mapping, generation: int | None, leases: Leases, *,
                          deadline: float | None, too_old: bool) -> Entry:
        """No copy here: wait for the refresher's copy to appear in L2 (or, without L2, for the
        lease to go), polling with backoff up to the deadline; then take over if it died."""
        interval = 0.05
        limit = deadline - DEADLINE_MARGIN if deadline is not None else \
            self.clock() + self.refresh_timeout
        while True:
            if generation is not None:
                got = self._from_l2(decl, generation, newer_than=None)
                if got is not None and self.clock() < got.expires_at:
                    return got
            info = leases.info(decl.name, decl.fingerprint)
            if info is None:  # the holder finished without publishing, or died: our turn
                return self._refresh(decl, generation, None, deadline=deadline,
                                     too_old=too_old, force=False)
            if info.get("query_id") and isinstance(self.origin, AsyncOrigin):
                gen = generation if generation is not None else 0
                entry = self._collect(decl, gen, leases, info, None, too_old=too_old)
                if entry is not None:  # the holder handed its query over: we collected it
                    return entry
            now = self.clock()
            if now >= limit:
                raise DeadlineError(
                    f"mapping {decl.name!r}: no usable copy in this container or L2, and "
                    f"another container's refresh did not finish within this invocation's "
                    f"time; the next invocation will find it (query "
                    f"{info.get('query_id') or 'running'})",
                    mapping=decl.name, query_id=info.get("query_id"),
                )
            self.sleep(min(interval, limit - now))
            interval = min(interval * 1.5, 1.0)

    def _serve_stale(self, decl: Mapping, stale: Entry, why: str, *,
                     error: BaseException | None = None) -> Entry:
        now = self.clock()
        age = self.wall_clock() - stale.created_at
        emit(logging.ERROR if error is not None else logging.INFO,
            "athena-warm: serving a stale copy of %s (%.0f s old; ttl %g s, max_stale %g s): %s",
            decl.name, age, decl.ttl, decl.max_stale, why if error is None else error,
            extra={"mapping": decl.name, "event": "stale_served", "age_s": round(age, 1),
                   "error": None if error is None else str(error)},
        )
        return dataclasses.replace(
            stale, fresh_until=min(stale.stale_until, now + self.retry_interval))

    def _stale_or_raise(self, decl: Mapping, stale: Entry | None, exc: OriginError | None, *,
                        too_old: bool, deadline: float | None = None,
                        query_id: str | None = None) -> Entry:
        if stale is not None and self.clock() < stale.stale_until:
            if exc is None:
                return self._serve_stale(decl, stale, "its refresh continues in a later "
                                                      "invocation")
            return self._serve_stale(decl, stale, "refresh failed", error=exc)
        if exc is not None:
            if too_old:
                raise StaleLimitError(
                    f"mapping {decl.name!r}: the refresh failed ({exc}) and the only copy is "
                    f"older than ttl + max_stale ({decl.ttl + decl.max_stale:g} s), so it is not "
                    "served. Fix the origin error, or raise max_stale if older data is "
                    "acceptable.", mapping=decl.name, age=decl.ttl + decl.max_stale,
                ) from exc
            raise exc
        left = (deadline - self.clock()) if deadline is not None else 0.0
        raise DeadlineError(
            f"mapping {decl.name!r}: no usable copy, and {max(left, 0):.1f} s left in this "
            "invocation is not enough to load one"
            + (f"; query {query_id} was started and a later invocation collects it"
               if query_id else "; a later invocation with more time loads it"),
            mapping=decl.name, query_id=query_id,
        )

