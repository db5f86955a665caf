"""The refresher: what happens below L1 when a copy is due. One refresher per fleet per mapping.

    fill()      generation check (and, every validate_interval, a look at the tables)
                -> keep / extend (the fleet revalidated this copy) / take the fleet's copy /
                refresh
    _refresh()  take the lease (fenced) -> as holder: revalidate (the tables' metadata did not
                                           change: keep the copy, no query) or query, publish,
                                           release
                                        -> otherwise: follow the holder (collect its handed-over
                                           query, serve stale, or wait for its copy)
    _failed()   THE failure handler: every exception of a refresh, whatever its type, lands
                here: the lease becomes a failure marker for ``retry_interval``, the stale copy
                is served within max_stale (error log, RefreshFailures), else the real error.

It calls the shared copies (leases, copies, generation) and the origin; nothing calls back up.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _rules as rules
from ._build import build
from ._events import emit
from ._l1 import Entry
from ._memory import LocalLeases
from ._revalidate import Revalidation
from ._view import MappingMeta
from .exceptions import (
    AthenaWarmError,
    DeadlineError,
    OriginError,
    OriginTimeoutError,
    RefreshError,
    StaleLimitError,
)
from .l2 import Generation, Lease
from .origin import (
    AsyncOrigin,
    Origin,
    QueryResult,
    deadline_scope,
)

if TYPE_CHECKING:  # the shared copies (and the codec) load only when L2 is configured
    from typing import TypeAlias

    from ._declare import Mapping
    from ._shared import SharedCopies

    Leases: TypeAlias = LocalLeases | SharedCopies




@dataclass(frozen=True, slots=True)
class Deferred:
    """The holder did not produce a copy in this invocation: its query was handed over
    (``query_id``), or not started for lack of time."""

    query_id: str | None


class Refresher(Revalidation):
    def __init__(self, *, shared: SharedCopies | None, local: LocalLeases,
                 origin: Callable[[], Origin], clock: Callable[[], float],
                 wall_clock: Callable[[], float], sleep: Callable[[float], None],
                 random: Callable[[], float], retry_interval: float, refresh_timeout: float,
                 check_interval: float, span: Callable[[str], Any]) -> None:
        self.shared = shared
        self.local = local
        self.origin = origin
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.random = random
        self.retry_interval = retry_interval
        self.refresh_timeout = refresh_timeout
        self.check_interval = check_interval
        self.span = span

    # -- entries -----------------------------------------------------------------------------------

    def entry(self, decl: Mapping, view: Any, *, age: float, number: int, epoch: str,
              nbytes: int, load_seconds: float, validator: str | None = None,
              validated_at: float | None = None) -> Entry:
        """``age``: seconds since the copy's data was read. Its life (TTL, max_stale) counts
        from then, or from ``validated_at`` (epoch s) when its tables were found unchanged."""
        now = self.clock()
        life = age if validated_at is None else \
            max(0.0, min(age, self.wall_clock() - validated_at))
        expires_at = now - life + rules.jittered(decl.ttl, decl.ttl_jitter, self.random)
        next_check = now + decl.validate_interval if decl.validate_interval and validator \
            else float("inf")
        fresh_until = min(self.next_look(now, expires_at), next_check) if now < expires_at \
            else now + self.retry_interval
        return Entry(view=view, loaded_mono=now - age, expires_at=expires_at,
                     fresh_until=fresh_until, nbytes=nbytes,
                     stale_until=now - life + decl.ttl + decl.max_stale,
                     created_at=view.meta.loaded_at, load_seconds=load_seconds,
                     generation=number, epoch=epoch, validator=validator,
                     validated_at=validated_at or 0.0, next_check=next_check)

    def next_look(self, now: float, expires_at: float) -> float:
        return rules.next_look(now, expires_at, shared=self.shared is not None,
                               check_interval=self.check_interval)

    def _from_shared(self, decl: Mapping, gen: Generation, *,
                     newer_than: float | None) -> Entry | None:
        assert self.shared is not None
        got = self.shared.read(decl, gen, newer_than=newer_than)
        if got is None:
            return None
        h, x = got.header, got.extras
        got.view.meta = MappingMeta(
            name=decl.name, tier="l2", source="l2", generation=h.generation,
            loaded_at=h.created_at, rows=h.rows, fingerprint=decl.fingerprint,
            null_keys_skipped=int(x.get("null_keys_skipped") or 0), nbytes=got.nbytes,
            query_id=x.get("query_id"), validated_at=got.validated_at)
        return self.entry(decl, got.view, age=got.age, number=h.generation, epoch=h.epoch,
                          nbytes=got.view.meta.nbytes,
                          load_seconds=float(x.get("load_seconds") or 0.0),
                          validator=got.validator, validated_at=got.validated_at)

    def _from_result(self, decl: Mapping, result: QueryResult, *, number: int, epoch: str,
                     created_at: float, age: float, seconds: float,
                     validator: str | None = None) -> Entry:
        """An entry from a query's result. ``created_at`` (epoch seconds) is when the query
        started, ``age`` how long ago that was; ``seconds`` the work it took."""
        built = build(decl, result)
        view = built.data
        view.meta = MappingMeta(
            name=decl.name, tier="origin", source="origin", generation=number,
            loaded_at=created_at, rows=len(view), fingerprint=decl.fingerprint,
            null_keys_skipped=built.null_keys_skipped, nbytes=built.nbytes,
            query_id=result.query_id, reused_previous_result=result.reused_previous_result)
        emit(logging.INFO, "load", "athena-warm: loaded %s from %s: %d rows in %.0f ms%s",
             decl.name, self.origin().name, len(view), seconds * 1000,
             " (Athena reused a stored result)" if result.reused_previous_result else "",
             extra={"mapping": decl.name, "tier": "origin", "rows": len(view),
                    "nbytes": built.nbytes, "ms": round(seconds * 1000, 1),
                    "query_id": result.query_id, "generation": number,
                    "null_keys_skipped": built.null_keys_skipped,
                    "bytes_scanned": result.bytes_scanned,
                    "reused_previous_result": result.reused_previous_result})
        return self.entry(decl, view, age=max(0.0, age), number=number, epoch=epoch,
                          nbytes=built.nbytes, load_seconds=seconds, validator=validator)

    # -- the read path below L1 --------------------------------------------------------------------

    def fill(self, decl: Mapping, cur: Entry | None, *, deadline: float | None,
             force: bool = False) -> Entry:
        """``cur`` (this container's copy, if any) is due for a look: keep it, take a newer copy
        from the fleet, or refresh (one refresher in the fleet; the others serve stale).
        ``force``: query the origin whatever the copies say."""
        now = self.clock()
        gen = self.shared.generation(decl.name) if self.shared is not None else None
        too_old = cur is not None and \
            rules.state(now, cur.expires_at, cur.stale_until) == "too_old"
        if too_old:
            cur = None  # past ttl + max_stale: never served again
        changed = False
        if cur is not None and not force and cur.next_check <= now < cur.expires_at and \
                (gen is None or rules.copy_matches(cur.epoch, cur.generation, gen)):
            kept, after = self._check_tables(decl, cur, gen, deadline=deadline)
            if kept is not None:
                return kept
            # The tables changed: this copy is stale from now on (served while one container
            # refreshes); with L2 the generation was bumped, so the whole fleet reloads.
            changed, gen = True, after
            cur = dataclasses.replace(cur, expires_at=now, next_check=float("inf"))
        current = cur is not None and (gen is None or
                                       rules.copy_matches(cur.epoch, cur.generation, gen))
        if cur is not None and not current:
            assert gen is not None
            hard = rules.below_floor(cur.epoch, cur.generation, gen)
            emit(logging.INFO, "invalidated",
                 "athena-warm: %s was invalidated%s (generation %d -> %d); refreshing",
                 decl.name, " hard" if hard else "", cur.generation, gen.number,
                 extra={"mapping": decl.name, "generation": gen.number, "hard": hard})
            # Stale from now on, served while one container refreshes; after a hard
            # invalidation, not served at all.
            cur = None if hard else dataclasses.replace(cur, expires_at=now)
        elif cur is not None and not force and now < cur.expires_at:
            # Only the generation check was due, and the copy is current: keep it.
            return dataclasses.replace(
                cur, fresh_until=min(self.next_look(now, cur.expires_at), cur.next_check))
        elif cur is not None and not force and not changed and cur.validator and \
                gen is not None and self.shared is not None:
            renewed = self._renewed(decl, cur)  # the fleet found its tables unchanged?
            if renewed is not None:
                return renewed
        stale = cur
        if not force and gen is not None:
            got = self._from_shared(decl, gen,
                                    newer_than=cur.created_at if cur and current else None)
            if got is not None:
                if now < got.expires_at:
                    return got
                if stale is None or got.created_at > stale.created_at:
                    stale = got  # a stale copy from the fleet beats none (a cold container)
        return self._refresh(decl, gen, stale, deadline=deadline, too_old=too_old, force=force)

    def _refresh(self, decl: Mapping, gen: Generation | None, stale: Entry | None, *,
                 deadline: float | None, too_old: bool, force: bool, tries: int = 0) -> Entry:
        leases: Leases = self.shared if gen is not None and self.shared is not None \
            else self.local
        lease: Lease | None = None
        deferred: Deferred | None = None
        try:
            origin = self.origin()
            ttl = rules.lease_ttl(
                deadline_left=None if deadline is None else deadline - self.clock(),
                async_timeout=_async_timeout(origin, self.refresh_timeout),
                refresh_timeout=self.refresh_timeout)
            token = secrets.token_hex(8)
            got = leases.acquire(decl, token, ttl=ttl, at=self.wall_clock())
            if got is None:  # L2 unreachable since the generation check: this process only
                leases, gen = self.local, None
                got = leases.acquire(decl, token, ttl=ttl, at=self.wall_clock())
            if got:
                lease = got
                done = self._as_holder(decl, origin, gen, stale, leases, got,
                                       deadline=deadline, force=force)
                if isinstance(done, Entry):
                    return done
                deferred = done
        except Exception as exc:
            return self._failed(decl, leases, lease, stale, exc, too_old=too_old)
        except BaseException:  # Ctrl-C, SystemExit: let the fleet take over at once
            if lease is not None:
                leases.release(decl, lease.token)
            raise
        if deferred is not None:  # handed over or deferred: not a failure
            return self._stale_or_deadline(decl, stale, deadline, deferred.query_id)
        return self._follow(decl, gen, leases, stale, deadline=deadline, too_old=too_old,
                            tries=tries)

    def _as_holder(self, decl: Mapping, origin: Origin, gen: Generation | None,
                   stale: Entry | None, leases: Leases, lease: Lease, *,
                   deadline: float | None, force: bool) -> Entry | Deferred:
        if not force and gen is not None:
            # Someone may have published between our look and the lease (dogpile does not
            # re-check here, and queries twice).
            fresh = self._from_shared(decl, gen,
                                      newer_than=stale.created_at if stale else None)
            if fresh is not None and self.clock() < fresh.expires_at:
                leases.release(decl, lease.token)
                return fresh
        number = gen.number if gen is not None else (stale.generation if stale else 0)
        epoch = gen.epoch if gen is not None else ""
        until = None if deadline is None else deadline - rules.DEADLINE_MARGIN
        with deadline_scope(until, self.clock):
            validator = self._validator(decl, origin)  # before the query: never newer data
        if not force and stale is not None and validator is not None and \
                stale.validator == validator and \
                (gen is None or rules.copy_matches(stale.epoch, stale.generation, gen)):
            entry = self._revalidate(decl, stale, gen, validator)
            leases.release(decl, lease.token)
            return entry
        start, budget = self.clock(), None if deadline is None else deadline - self.clock()
        created_at = self.wall_clock()  # when the data was read: orders copies fleet-wide
        with self.span("## athena-warm origin query"), deadline_scope(until, self.clock):
            if isinstance(origin, AsyncOrigin):
                query_id = origin.start(decl.sql, decl.params, database=decl.database,
                                        workgroup=decl.workgroup, catalog=decl.catalog,
                                        **_start_options(origin, decl))
                lease = dataclasses.replace(lease, query_id=query_id, at=created_at,
                                            validator=validator)
                leases.update(decl, lease)
                max_wait = None if until is None else max(0.0, until - self.clock())
                try:
                    execution = origin.wait(query_id, max_wait=max_wait)
                except OriginError as exc:
                    if not _still_running(exc, query_id):
                        raise
                    # Throttled or cut off while polling: the query runs on, and its id stays
                    # with the lease, for a later invocation to collect (never orphaned).
                    emit(logging.WARNING, "handover",
                         "athena-warm: refresh of %s handed over: could not poll query %s "
                         "(%s); a later invocation collects it", decl.name, query_id,
                         exc.reason, extra={"mapping": decl.name, "query_id": query_id})
                    return Deferred(query_id)
                if execution is None:
                    emit(logging.WARNING, "handover",
                         "athena-warm: refresh of %s handed over: query %s still runs at this "
                         "invocation's deadline; a later invocation collects it", decl.name,
                         query_id, extra={"mapping": decl.name, "query_id": query_id})
                    return Deferred(query_id)
                result = origin.fetch(query_id, execution)
            else:
                expected = stale.load_seconds if stale is not None else 0.0
                left = None if deadline is None else \
                    deadline - self.clock() - rules.DEADLINE_MARGIN
                if rules.should_defer(left, expected):
                    emit(logging.INFO, "refresh_deferred",
                         "athena-warm: not refreshing %s now: the last load took %.1f s, more "
                         "than this invocation has left", decl.name, expected,
                         extra={"mapping": decl.name})
                    leases.release(decl, lease.token)
                    return Deferred(None)
                result = origin.query(decl.sql, decl.params, database=decl.database,
                                      workgroup=decl.workgroup, catalog=decl.catalog)
        elapsed = self.clock() - start
        entry = self._from_result(decl, result, number=number, epoch=epoch,
                                  created_at=created_at, age=elapsed,
                                  seconds=rules.work_seconds(elapsed, budget=budget),
                                  validator=validator)
        entry = self._publish(decl, entry, gen, token=lease.token)
        leases.release(decl, lease.token)
        return entry

    def _publish(self, decl: Mapping, entry: Entry, gen: Generation | None, *,
                 token: str | None) -> Entry:
        """Publish ``entry``; the entry to serve. A late holder's copy is refused by the tier
        when the fleet already has a newer one: then the newer one is served, not ours."""
        if self.shared is None or gen is None:
            return entry
        outcome = self.shared.publish(decl, entry.view, gen=gen, created_at=entry.created_at,
                                      load_seconds=entry.load_seconds, token=token,
                                      validator=entry.validator)
        if outcome == "fenced":
            newer = self._from_shared(decl, gen, newer_than=entry.created_at)
            if newer is not None:
                return newer
        return entry

    def _follow(self, decl: Mapping, gen: Generation | None, leases: Leases,
                stale: Entry | None, *, deadline: float | None, too_old: bool,
                tries: int = 0) -> Entry:
        """Someone else holds the lease: use its failure, collect its handed-over query, serve
        the stale copy, or wait for the holder's copy (looking every 20-50 ms)."""
        held = leases.info(decl)
        interval: float | None = None
        limit = deadline - rules.DEADLINE_MARGIN if deadline is not None else \
            self.clock() + self.refresh_timeout
        while True:
            if held is not None and held.failed:
                return self._after_failure(decl, held, stale)
            if held is not None and held.query_id and isinstance(self.origin(), AsyncOrigin):
                entry = self._collect(decl, gen, leases, held, stale, too_old=too_old)
                if entry is not None:
                    return entry
            if stale is not None:
                return self._serve_stale(decl, stale, "another container is refreshing it")
            if held is None:  # the holder finished without publishing, or died: our turn
                # (a tier that keeps refusing the lease yet shows none: this process's lease)
                return self._refresh(decl, gen if tries < 3 else None, None, deadline=deadline,
                                     too_old=too_old, force=False, tries=tries + 1)
            now = self.clock()
            if now >= limit:
                raise DeadlineError(
                    f"mapping {decl.name!r}: no usable copy in this container or L2, and "
                    f"another container's refresh did not finish within this invocation's "
                    f"time; the next invocation will find it (query "
                    f"{held.query_id or 'running'})", mapping=decl.name,
                    query_id=held.query_id)
            interval = rules.poll_interval(interval)
            self.sleep(min(interval, limit - now))
            if gen is not None:
                got = self._from_shared(decl, gen, newer_than=-1.0)
                if got is not None and self.clock() < got.expires_at:
                    return got
            held = leases.info(decl)

    def _collect(self, decl: Mapping, gen: Generation | None, leases: Leases, held: Lease,
                 stale: Entry | None, *, too_old: bool) -> Entry | None:
        """Collect the result of a query another invocation started and handed over."""
        origin = self.origin()
        assert isinstance(origin, AsyncOrigin) and held.query_id is not None
        query_id = held.query_id
        start = self.clock()
        claim: str | None = None
        try:
            with self.span("## athena-warm origin collect"):
                try:
                    execution = origin.wait(query_id, max_wait=0)  # one look
                except OriginError as exc:
                    if not _still_running(exc, query_id):
                        raise
                    execution = None  # could not look (throttled): it still has the lease
                if execution is None:
                    self._stop_if_overdue(decl, origin, held)
                    return None  # still running
                # Finished: one container downloads it, the others wait for its copy.
                claim = secrets.token_hex(8)
                if leases.claim(decl, claim, ttl=rules.COLLECT_CLAIM_TTL,
                                at=self.wall_clock()) is False:
                    claim = None
                    return None
                result = origin.fetch(query_id, execution)
            number = gen.number if gen is not None else (stale.generation if stale else 0)
            entry = self._from_result(decl, result, number=number,
                                      epoch=gen.epoch if gen else "", created_at=held.at,
                                      age=self.wall_clock() - held.at,
                                      seconds=self.clock() - start, validator=held.validator)
            emit(logging.INFO, "collect", "athena-warm: collected %s from handed-over query %s",
                 decl.name, held.query_id, extra={"mapping": decl.name, "query_id": held.query_id})
            entry = self._publish(decl, entry, gen, token=held.token)
        except Exception as exc:
            return self._failed(decl, leases, held, stale, exc, too_old=too_old)
        finally:
            if claim is not None:
                leases.unclaim(decl, claim)
        leases.release(decl, held.token)
        return entry

    def _stop_if_overdue(self, decl: Mapping, origin: AsyncOrigin, held: Lease) -> None:
        """A handed-over query still running past the origin's query timeout is stopped, and
        the refresh fails (OriginTimeoutError, through the one failure handler): its lease
        never expires with the query running, so no second query starts beside it."""
        timeout = getattr(origin, "query_timeout", None)
        if timeout is None or self.wall_clock() - held.at <= float(timeout):
            return
        stop = getattr(origin, "stop", None)
        if stop is not None:
            stop(held.query_id)
        raise OriginTimeoutError(
            f"Athena query {held.query_id} of {decl.name!r}, handed over, still runs after the "
            f"query timeout of {float(timeout):g} s" + ("; it was stopped" if stop else "")
            + ". Raise ATHENA_WARM_QUERY_TIMEOUT or make the query cheaper.",
            origin=getattr(origin, "name", "origin"), state="TIMEOUT",
            query_id=held.query_id, reason=f"timeout after {float(timeout):g}s, handed over")

    # -- failure, stale, deadline ------------------------------------------------------------------

    def _failed(self, decl: Mapping, leases: Leases, lease: Lease | None, stale: Entry | None,
                exc: Exception, *, too_old: bool) -> Entry:
        """Every failure of a refresh. The lease (if held) becomes a failure marker for
        ``retry_interval``; the stale copy is served within max_stale; else the real error."""
        if isinstance(exc, AthenaWarmError) and hasattr(exc, "with_mapping"):
            exc = exc.with_mapping(decl.name)
        what = f"{type(exc).__name__}: {exc}"
        if lease is not None:  # retry_interval 0: no pause before the retry, no marker
            marker = dataclasses.replace(lease, failed=what[:1000],
                                         failed_type=type(exc).__name__)
            if self.retry_interval <= 0 or \
                    not leases.update(decl, marker, ttl=self.retry_interval):
                leases.release(decl, lease.token)
        emit(logging.ERROR, "refresh_failed",
             "athena-warm: refreshing %s failed: %s", decl.name, what,
             extra={"mapping": decl.name, "error": type(exc).__name__,
                    "query_id": getattr(exc, "query_id", None)})
        if stale is not None and rules.may_serve_stale(self.clock(), stale.stale_until):
            return self._serve_stale(decl, stale, "refresh failed", error=exc)
        if too_old:
            raise StaleLimitError(
                f"mapping {decl.name!r}: the refresh failed ({what}) and the only copy is "
                f"older than ttl + max_stale ({decl.ttl + decl.max_stale:g} s), so it is not "
                "served. Fix the cause, or raise max_stale if older data is acceptable.",
                mapping=decl.name, age=decl.ttl + decl.max_stale) from exc
        if isinstance(exc, AthenaWarmError):
            raise exc
        raise RefreshError(
            f"mapping {decl.name!r}: the refresh failed with {what}. It is retried after "
            f"{self.retry_interval:g} s; fix the cause (see the chained exception).",
            mapping=decl.name, cause_type=type(exc).__name__) from exc

    def _after_failure(self, decl: Mapping, marker: Lease, stale: Entry | None) -> Entry:
        """Another refresher failed moments ago: nobody retries before its marker expires."""
        ago = max(0.0, self.wall_clock() - marker.at)
        if stale is not None and rules.may_serve_stale(self.clock(), stale.stale_until):
            return self._serve_stale(decl, stale, f"the latest refresh failed: {marker.failed}",
                                     error=RuntimeError(marker.failed))
        raise RefreshError(
            f"mapping {decl.name!r}: no usable copy, and the latest refresh (started {ago:.0f} "
            f"s ago) failed with {marker.failed}. It is retried after {self.retry_interval:g} s.",
            mapping=decl.name, cause_type=marker.failed_type or "Exception")

    def _serve_stale(self, decl: Mapping, stale: Entry, why: str, *,
                     error: BaseException | None = None, decay: bool = False) -> Entry:
        now = self.clock()
        age = self.wall_clock() - stale.created_at
        emit(logging.ERROR if error is not None else logging.INFO, "stale_served",
             "athena-warm: serving a stale copy of %s (%.0f s old; ttl %g s, max_stale %g s): "
             "%s", decl.name, age, decl.ttl, decl.max_stale, why if error is None else error,
             extra={"mapping": decl.name, "age_s": round(age, 1),
                    "error": None if error is None else str(error)})
        return dataclasses.replace(
            stale, fresh_until=min(stale.stale_until, now + self.retry_interval),
            load_seconds=rules.after_deferral(stale.load_seconds) if decay
            else stale.load_seconds)

    def _stale_or_deadline(self, decl: Mapping, stale: Entry | None, deadline: float | None,
                           query_id: str | None) -> Entry:
        if stale is not None and rules.may_serve_stale(self.clock(), stale.stale_until):
            return self._serve_stale(decl, stale, "its refresh continues in a later invocation",
                                     decay=query_id is None)
        left = (deadline - self.clock()) if deadline is not None else 0.0
        raise DeadlineError(
            f"mapping {decl.name!r}: no usable copy, and {max(left, 0):.1f} s left in this "
            "invocation is not enough to load one"
            + (f"; query {query_id} was started and a later invocation collects it"
               if query_id else "; a later invocation with more time loads it"),
            mapping=decl.name, query_id=query_id)

    # -- without a lease (the kill switch, invalidate --refresh) -----------------------------------

    def query_now(self, decl: Mapping, *, number: int, epoch: str,
                  validate: bool = True) -> Entry:
        """Query the origin now, without a lease; no publish. ``validate=False`` (the kill
        switch): no metadata call either, the copy is never kept past this invocation."""
        origin = self.origin()
        validator = None
        if validate:
            with deadline_scope(None, self.clock):
                validator = self._validator(decl, origin)
        start, created_at = self.clock(), self.wall_clock()
        with self.span("## athena-warm origin query"), deadline_scope(None, self.clock):
            if isinstance(origin, AsyncOrigin):
                query_id = origin.start(decl.sql, decl.params, database=decl.database,
                                        workgroup=decl.workgroup, catalog=decl.catalog,
                                        **_start_options(origin, decl))
                execution = origin.wait(query_id)
                assert execution is not None
                result = origin.fetch(query_id, execution)
            else:
                result = origin.query(decl.sql, decl.params, database=decl.database,
                                      workgroup=decl.workgroup, catalog=decl.catalog)
        elapsed = self.clock() - start
        return self._from_result(decl, result, number=number, epoch=epoch,
                                 created_at=created_at, age=elapsed, seconds=elapsed,
                                 validator=validator)

    def publish(self, decl: Mapping, entry: Entry, gen: Generation) -> bool:
        """Publish without a lease (``invalidate --refresh``); whether it was stored."""
        if self.shared is None:
            return False
        return self.shared.publish(decl, entry.view, gen=gen, created_at=entry.created_at,
                                   load_seconds=entry.load_seconds, token=None,
                                   validator=entry.validator) == "written"


def _start_options(origin: Origin, decl: Mapping) -> dict[str, Any]:
    """Options of a start only some origins take: Athena's result reuse (``reuse=``)."""
    if decl.reuse and getattr(origin, "supports_reuse", False):
        return {"reuse": decl.reuse}
    return {}


def _still_running(exc: OriginError, query_id: str) -> bool:
    """Whether an error while polling ``query_id`` leaves the query running: the poll was
    throttled, cut off or failed in transit; not the query's own failure or timeout."""
    return exc.query_id == query_id and exc.state in ("THROTTLED", "DEADLINE", "ERROR")


def _async_timeout(origin: Origin, default: float) -> float | None:
    if not isinstance(origin, AsyncOrigin):
        return None
    return float(getattr(origin, "query_timeout", default))
