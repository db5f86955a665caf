"""The read path: ``get_mapping(name)`` -> L1 -> L2 -> origin, filling the tiers above. What
happens when a copy is due (revalidate, refresh, serve stale) is the policy, in _policy.py.

``Cache`` holds one process's tiers and origin. A module-level default instance serves
``get_mapping()``; tests and advanced users build their own with injected clocks and origins.

Hot path. Inside an invocation scope (``cache.invocation()``, used by the middleware and the
demo), a mapping's freshness is checked once per invocation: the first ``get_mapping(name)``
checks the TTL and pins the copy, later calls in the same invocation are one dict lookup.
Outside a scope, every call checks the TTL (one monotonic clock read).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random as _random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._build import build, estimate_bytes
from ._codec import (
    VALUE_ROW,
    VALUE_SCALAR,
    VALUE_TUPLE,
    CorruptPayloadError,
    decode,
    encode,
    read_header,
)
from ._config import (
    default_l1_max_bytes,
    parse_bytes,
    resolve,
    resolve_flag,
    resolve_seconds,
)
from ._declare import REGISTRY, Mapping, Registry, load_declarations
from ._events import emit
from ._l1 import L1, Entry
from ._policy import LocalLeases, RefreshPolicy, jittered
from ._view import MappingMeta, MappingView
from .exceptions import L2Error, UnknownMappingError
from .l2 import SharedTier, open_l2
from .origin import Origin, QueryResult, open_origin

log = logging.getLogger("athena_warm")


class Cache(RefreshPolicy):
    """One process's cache: registry, L1, optional L2, origin, clocks.

    ``clock`` is monotonic seconds (TTL arithmetic); ``wall_clock`` is epoch seconds (only for
    data other processes read: when a copy was made). ``l2`` is a SharedTier, a
    ``redis://``/``rediss://`` URL, or ``False`` for none; unset, ``$ATHENA_WARM_REDIS_URL``.
    ``check_interval`` is how often a warm copy asks L2 whether its mapping was invalidated.
    ``retry_interval`` is how often a container serving a stale copy looks again for the
    refreshed one; ``refresh_timeout`` how long a refresh may run before another container
    takes it over (the lease's life when there is no invocation deadline). ``random`` (jitter)
    and ``sleep`` (waiting for another container's refresh) are injectable for tests.
    """

    def __init__(
        self,
        *,
        origin: Origin | str | None = None,
        l2: SharedTier | str | bool | None = None,
        registry: Registry | None = None,
        l1_max_bytes: int | str | None = None,
        check_interval: str | float | None = None,
        signing_key: str | bytes | None = None,
        retry_interval: str | float | None = None,
        refresh_timeout: str | float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry if registry is not None else REGISTRY
        max_bytes = resolve(l1_max_bytes, "L1_MAX_BYTES", None, parse_bytes)
        self.l1 = L1(
            max_bytes=default_l1_max_bytes() if max_bytes is None else parse_bytes(max_bytes),
            clock=clock,
        )
        self.clock = clock
        self.wall_clock = wall_clock
        self._origin_arg = origin
        self._origin: Origin | None = origin if isinstance(origin, Origin) else None
        self._origin_lock = threading.Lock()
        if l2 is False:
            self.l2: SharedTier | None = None
        elif isinstance(l2, SharedTier):
            self.l2 = l2
        else:
            self.l2 = open_l2(l2 if isinstance(l2, str) else None)
        self.check_interval = resolve_seconds(check_interval, "CHECK_INTERVAL", 30.0)
        key = resolve(signing_key, "SIGNING_KEY", None)
        self.signing_key: bytes | None = key.encode() if isinstance(key, str) else key
        self.retry_interval = resolve_seconds(retry_interval, "RETRY_INTERVAL", 5.0)
        self.refresh_timeout = resolve_seconds(refresh_timeout, "REFRESH_TIMEOUT", 300.0)
        self.random = random
        self.sleep = sleep
        self.local_leases = LocalLeases(clock)
        # name -> view, valid until the current invocation ends; see the module docstring.
        self.pinned: dict[str, MappingView] = {}
        self._scope_depth = 0
        self._deadline: float | None = None  # monotonic; set by invocation(remaining=)
        # name -> error, for optional mappings the middleware could not get this invocation
        self.problems: dict[str, BaseException] = {}
        self.disabled = resolve_flag(None, "DISABLED", False)  # the kill switch
        # Tracing hook: the middleware sets it to an X-Ray subsegment factory.
        self.span: Callable[[str], contextlib.AbstractContextManager[Any]] = _no_span

    # -- origin ----------------------------------------------------------------------------------

    @property
    def origin(self) -> Origin:
        """The origin, built on first use (one connection per container)."""
        if self._origin is None:
            with self._origin_lock:
                if self._origin is None:
                    spec = self._origin_arg if isinstance(self._origin_arg, str) else None
                    self._origin = open_origin(spec)
        return self._origin

    # -- reading ---------------------------------------------------------------------------------

    def declaration(self, name: str) -> Mapping:
        decl = self.registry.get(name)
        if decl is None:
            load_declarations()  # $ATHENA_WARM_APP / $ATHENA_WARM_CONFIG, once each
            decl = self.registry.get(name)
            if decl is None:
                raise UnknownMappingError(name, self.registry.names())
        return decl

    def get(self, name: str, *, force_fetch: bool = False,
            remaining: float | None = None) -> MappingView:
        """The mapping called ``name``: from L1 if fresh, else L2, else the origin.

        ``force_fetch=True`` skips L1 (as Powertools' get_parameter): the fleet's copy in L2 if
        it is fresh, else the origin. ``refresh(name)`` always queries the origin.
        ``remaining`` is how many seconds this invocation has left (default: the invocation
        scope's, else no limit): no blocking load starts that cannot finish in time.
        """
        if not force_fetch:
            if self.pinned:
                view = self.pinned.get(name)
                if view is not None:
                    return view
            if self.problems and name in self.problems:
                raise self.problems[name]  # an optional mapping the middleware could not get
            if self.disabled:
                return self._bypass(name)
            decl = self.registry.get(name)
            if decl is not None:  # an L1 hit: a dict lookup and a clock read, no lock
                entry = self.l1.get_fresh(decl.l1_key)
                if entry is not None:
                    return self._serve(name, entry)
        decl = self.declaration(name)
        deadline = self._deadline_for(remaining)
        entry = self.l1.load(decl.l1_key, lambda cur: self._fill(decl, cur, deadline=deadline),
                             force=force_fetch)
        return self._serve(name, entry)

    def _bypass(self, name: str) -> MappingView:
        """The kill switch (ATHENA_WARM_DISABLED): straight from the origin, nothing cached
        beyond this invocation."""
        decl = self.declaration(name)
        emit(logging.WARNING,
            "athena-warm is disabled (ATHENA_WARM_DISABLED): querying the origin for %s",
                    name, extra={"mapping": name, "event": "disabled"})
        entry = self._query_origin(decl, 0, self.local_leases, "", None, deadline=None)
        assert entry is not None
        view = entry.view
        if self._scope_depth:
            self.pinned[name] = view
        return view

    def due(self, name: str) -> None:
        """Make this container look at ``name`` again on its next read (a generation check at
        the start of an invocation; the middleware calls it)."""
        decl = self.registry.get(name)
        if decl is not None:
            entry = self.l1.get_fresh(decl.l1_key)
            if entry is not None:
                entry.fresh_until = self.clock()

    def before_snapshot(self) -> None:
        """SnapStart: close L2's connections before the snapshot (re-made on first use)."""
        close = getattr(self.l2, "close", None)
        if callable(close):
            close()

    def after_restore(self) -> None:
        """SnapStart: a snapshot may be restored days later, and the monotonic clock does not
        tell. Re-derive every copy's age from the wall clock; drop those too old to serve."""
        now, wall = self.clock(), self.wall_clock()
        self.pinned.clear()
        self.local_leases = LocalLeases(self.clock)
        for key, entry in self.l1.items():
            age = max(0.0, wall - entry.created_at)
            shift = (now - age) - entry.loaded_mono
            if now >= entry.stale_until + shift:
                self.l1.discard(key[0])
                continue
            entry.loaded_mono += shift
            entry.expires_at += shift
            entry.stale_until += shift
            entry.fresh_until = now  # look again (and check the generation) on first use
        emit(logging.INFO, "athena-warm: restored from a snapshot; %d copies kept", len(self.l1),
                 extra={"event": "restore"})

    def refresh(self, name: str, *, remaining: float | None = None) -> MappingView:
        """Query the origin now (as the lease holder), publish the new copy to L2, hold it in
        L1. A refresh already running elsewhere is waited for instead of started twice."""
        decl = self.declaration(name)
        deadline = self._deadline_for(remaining)
        entry = self.l1.load(
            decl.l1_key, lambda _: self._fill(decl, None, deadline=deadline, origin=True),
            force=True)
        return self._serve(name, entry)

    def _deadline_for(self, remaining: float | None) -> float | None:
        if remaining is not None:
            return self.clock() + remaining
        return self._deadline

    def _serve(self, name: str, entry: Entry) -> MappingView:
        view = entry.view
        if entry.served:
            if view.meta.tier != "l1":  # once per copy
                view.meta = _with_tier(view.meta, "l1")
        else:
            entry.served = True  # this first reader sees where the copy came from
        if self._scope_depth:
            self.pinned[name] = view
        return view

    def _next_look(self, now: float, expires_at: float) -> float:
        if self.l2 is None:
            return expires_at
        return min(expires_at, now + self.check_interval)

    def _from_l2(self, decl: Mapping, generation: int, *, newer_than: Entry | None) -> Entry | None:
        """The L2 copy of the current generation, fresh or stale-but-usable; None if absent,
        unusable, too old, or no newer than ``newer_than`` (not downloaded again)."""
        assert self.l2 is not None
        start = time.perf_counter()
        if newer_than is not None:
            head = self.l2.head(decl.name, decl.fingerprint)
            if head is None:
                return None
            try:
                header = read_header(head, partial=True)
            except CorruptPayloadError:
                header = None
            if header is not None and header.generation == generation and \
                    header.created_at <= newer_than.created_at:
                return None  # the copy we already hold
        with self.span("## athena-warm L2 read"):
            blob = self.l2.read(decl.name, decl.fingerprint)
        if blob is None:
            return None
        try:
            view, header, extras = decode(blob, fingerprint=decl.fingerprint,
                                          signing_key=self.signing_key)
        except CorruptPayloadError as exc:
            emit(logging.WARNING,
                "athena-warm: the L2 copy of %s is unusable (%s); treating it as a miss, the "
                "next load replaces it", decl.name, exc.reason,
                extra={"mapping": decl.name, "event": "l2_corrupt", "reason": exc.reason},
            )
            return None
        if not generation <= header.generation <= generation + 1:
            # Invalidated since it was stored, or the counter was lost. generation + 1 is a copy
            # published by `invalidate --refresh` just before its bump: newer data, take it.
            return None
        age = max(0.0, self.wall_clock() - header.created_at)
        if age >= decl.ttl + decl.max_stale:
            return None  # too old to serve
        nbytes = int(extras.get("nbytes") or 0) or estimate_bytes(view)  # the writer measured it
        view.meta = MappingMeta(
            name=decl.name, tier="l2", source="l2", generation=header.generation,
            loaded_at=header.created_at, rows=header.rows, fingerprint=decl.fingerprint,
            null_keys_skipped=int(extras.get("null_keys_skipped", 0)), nbytes=nbytes,
            query_id=extras.get("query_id"),
        )
        now = self.clock()
        ms = (time.perf_counter() - start) * 1000
        emit(logging.INFO,
            "athena-warm: loaded %s from L2: %d rows, %d bytes, %.0f s old, in %.1f ms",
            decl.name, header.rows, len(blob), age, ms,
            extra={"mapping": decl.name, "event": "load", "tier": "l2", "rows": header.rows,
                   "bytes": len(blob), "ms": round(ms, 1), "age_s": round(age, 1),
                   "generation": header.generation},
        )
        return self._entry(decl, view, now=now, age=age, generation=header.generation,
                           nbytes=nbytes, load_seconds=float(extras.get("load_seconds") or 0.0))

    def _entry(self, decl: Mapping, view: MappingView, *, now: float, age: float,
               generation: int, nbytes: int, load_seconds: float) -> Entry:
        expires_at = now - age + jittered(decl.ttl, decl.ttl_jitter, self.random)
        fresh_until = self._next_look(now, expires_at) if now < expires_at else \
            now + self.retry_interval
        return Entry(view=view, loaded_mono=now - age, expires_at=expires_at,
                     fresh_until=fresh_until, nbytes=nbytes,
                     stale_until=now - age + decl.ttl + decl.max_stale,
                     created_at=view.meta.loaded_at, load_seconds=load_seconds,
                     generation=generation)

    def _to_l2(self, decl: Mapping, entry: Entry) -> bool:
        """Publish ``entry`` to L2; whether it was."""
        if self.l2 is None:
            return False
        now_generation = self.l2.generation(decl.name)
        if now_generation is None:
            return False  # unreachable: do not spend the encoding
        if now_generation > entry.generation:
            # Invalidated while we queried: this data may predate the table update.
            emit(logging.INFO,
                "athena-warm: not publishing %s: invalidated during the load (generation %d -> "
                "%d)", decl.name, entry.generation, now_generation,
                extra={"mapping": decl.name, "event": "publish_skipped"},
            )
            return False
        meta = entry.view.meta
        blob = encode(
            entry.view, fingerprint=decl.fingerprint, generation=entry.generation,
            created_at=meta.loaded_at, key_arity=len(decl.key_columns),
            value_kind=(VALUE_ROW if not decl.value_columns else
                        VALUE_SCALAR if len(decl.value_columns) == 1 else VALUE_TUPLE),
            extras={"query_id": meta.query_id, "null_keys_skipped": meta.null_keys_skipped,
                    "nbytes": meta.nbytes, "load_seconds": round(entry.load_seconds, 3)},
            signing_key=self.signing_key,
        )
        with self.span("## athena-warm L2 write"):
            written = self.l2.write(decl.name, decl.fingerprint, blob,
                                    ttl=decl.ttl + decl.max_stale)
        if written:
            emit(logging.INFO, "athena-warm: published %s to L2: %d rows, %d bytes, generation %d",
                decl.name, meta.rows, len(blob), entry.generation,
                extra={"mapping": decl.name, "event": "publish", "tier": "l2",
                       "rows": meta.rows, "bytes": len(blob), "generation": entry.generation},
            )
        return bool(written)

    def _entry_from_result(self, decl: Mapping, result: QueryResult, generation: int,
                           seconds: float) -> Entry:
        built = build(decl, result)
        view = built.data
        view.meta = MappingMeta(
            name=decl.name,
            tier="origin",
            source="origin",
            generation=generation,
            loaded_at=self.wall_clock(),
            rows=len(built.data),
            fingerprint=decl.fingerprint,
            null_keys_skipped=built.null_keys_skipped,
            nbytes=built.nbytes,
            query_id=result.query_id,
        )
        emit(logging.INFO, "athena-warm: loaded %s from %s: %d rows in %.0f ms",
            decl.name, self.origin.name, len(view), seconds * 1000,
            extra={
                "mapping": decl.name, "event": "load", "tier": "origin", "rows": len(view),
                "nbytes": built.nbytes, "ms": round(seconds * 1000, 1),
                "query_id": result.query_id, "null_keys_skipped": built.null_keys_skipped,
                "generation": generation, "bytes_scanned": result.bytes_scanned,
            },
        )
        return self._entry(decl, view, now=self.clock(), age=0.0, generation=generation,
                           nbytes=built.nbytes, load_seconds=seconds)

    # -- invocation scope ------------------------------------------------------------------------

    @contextlib.contextmanager
    def invocation(self, *, remaining: float | None = None) -> Iterator[None]:
        """One invocation: each mapping's freshness is checked once; ``remaining`` seconds
        (Lambda's ``context.get_remaining_time_in_millis() / 1000``) bound every load."""
        self.pinned.clear()
        self._scope_depth += 1
        outer = self._deadline
        if remaining is not None:
            self._deadline = self.clock() + remaining
        try:
            yield
        finally:
            self._deadline = outer
            self._scope_depth -= 1
            if not self._scope_depth:
                self.pinned.clear()
                self.problems.clear()

    # -- management ------------------------------------------------------------------------------

    def invalidate(self, name: str, *, hard: bool = False) -> int | None:
        """Make every container reload ``name``: bump its generation in L2 and drop this
        process's copy. Returns the new generation; None without L2, where only this process
        is affected (other containers keep their copies until their TTL ends). ``hard``: older
        copies are not served even as stale while the new one loads."""
        self.declaration(name)
        generation = self.l2.bump(name, hard=hard) if self.l2 is not None else None
        self.pinned.pop(name, None)
        self.l1.discard(name)
        emit(logging.INFO, "athena-warm: invalidated %s (%s)", name,
            f"generation {generation}" if generation is not None else "this process only: no L2",
            extra={"mapping": name, "event": "invalidate", "generation": generation},
        )
        return generation

    def switch(self, name: str, *, hard: bool = False) -> tuple[MappingView, int]:
        """``invalidate --refresh``: query the origin, publish the result to L2 as the next
        generation, then bump the generation. Warm containers find the new copy in L2 when
        they see the bump: none of them waits on the origin. Returns (copy, new generation)."""
        decl = self.declaration(name)
        if self.l2 is None:
            raise L2Error(
                f"invalidate --refresh of {name!r} needs L2 (ATHENA_WARM_REDIS_URL): without it "
                "there is no fleet to switch, only this process"
            )
        current = self.l2.generation(name)
        if current is None:
            raise L2Error(f"L2 is unreachable: {name!r} was not switched; nothing changed")
        entry = self._query_origin(decl, current + 1, self.local_leases, "", None,
                                   deadline=None)
        assert entry is not None
        if not self._to_l2(decl, entry):
            raise L2Error(
                f"could not publish the new copy of {name!r} to L2 (unreachable, or invalidated "
                "meanwhile): the generation was NOT bumped, containers keep the old copy; run "
                "it again"
            )
        generation = self.l2.bump(name, hard=hard)
        self.pinned.pop(name, None)
        self.l1.put(decl.l1_key, entry)
        emit(logging.INFO,
            "athena-warm: switched %s to generation %d (%d rows, published before the "
                 "bump)", name, generation, entry.view.meta.rows,
                 extra={"mapping": name, "event": "invalidate", "generation": generation,
                        "refresh": True, "hard": hard})
        return entry.view, generation

    def l2_status(self, name: str) -> dict[str, Any]:
        """What L2 holds for ``name``: the copy (checked end to end), the generation, the
        lease. For the operator's ``status``."""
        decl = self.declaration(name)
        out: dict[str, Any] = {"name": name, "fingerprint": decl.fingerprint,
                               "l2": self.l2 is not None}
        if self.l2 is None:
            return out
        generation = self.l2.generation(name)
        out.update(reachable=generation is not None, generation=generation,
                   floor=self.l2.floor(name) if generation is not None else None,
                   present=False, corrupt=None)
        if generation is None:
            return out
        blob = self.l2.read(name, decl.fingerprint)
        lease = self.l2.info(name, decl.fingerprint)
        out["lease"] = None if lease is None else {
            "query_id": lease.get("query_id"), "failed": lease.get("failed"),
            "since_s": round(self.wall_clock() - float(lease.get("at", self.wall_clock())), 1)}
        if blob is None:
            return out
        out.update(present=True, bytes=len(blob))
        try:
            header = read_header(blob)
            out.update(copy_generation=header.generation, rows=header.rows,
                       created_at=header.created_at, signed=header.signed)
            decode(blob, fingerprint=decl.fingerprint, signing_key=self.signing_key)
        except CorruptPayloadError as exc:
            out["corrupt"] = exc.reason
            return out
        age = max(0.0, self.wall_clock() - header.created_at)
        valid = generation <= header.generation <= generation + 1
        out.update(age_s=round(age, 1), expires_in_s=round(decl.ttl - age, 1),
                   stale=age >= decl.ttl or not valid,
                   servable=valid and age < decl.ttl + decl.max_stale
                   and header.generation >= out["floor"])
        return out

    def clear(self) -> None:
        """Empty L1 (as Powertools' clear_caches)."""
        self.pinned.clear()
        self.l1.clear()

    def status(self) -> list[dict[str, Any]]:
        """What L1 holds: one dict per copy, with its age and time to expiry in seconds."""
        now = self.clock()
        out = []
        for _, e in self.l1.items():
            out.append({
                **e.view.meta.as_dict(),
                "age_s": round(now - e.loaded_mono, 3),
                "expires_in_s": round(e.expires_at - now, 3),
                "fresh": now < e.expires_at,
            })
        return out


def _no_span(name: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def _with_tier(meta: MappingMeta, tier: Any) -> MappingMeta:
    return dataclasses.replace(meta, tier=tier)


# --- the process-wide default ---------------------------------------------------------------------

_default: Cache | None = None
_default_lock = threading.Lock()
_pinned: dict[str, MappingView] = {}  # the default cache's pinned dict (same object)


def default_cache() -> Cache:
    global _default, _pinned
    if _default is None:
        with _default_lock:
            if _default is None:
                cache = Cache()
                _pinned = cache.pinned
                _default = cache
    return _default


def configure(**options: Any) -> Cache:
    """Replace the default cache, e.g. ``configure(origin="duckdb:./data")``. Takes the
    keyword options of ``Cache``. Copies held by the previous default are dropped."""
    global _default, _pinned
    cache = Cache(**options)
    with _default_lock:
        _default = cache
        _pinned = cache.pinned
    return cache


def get_mapping(name: str, *, force_fetch: bool = False) -> MappingView:
    """The read-only mapping declared as ``name``, from the first tier that holds a fresh copy.

    ``m.meta`` tells the tier it came from, its generation, when it was loaded and its rows.
    """
    if _pinned and not force_fetch:  # inside an invocation: the copy it already checked
        view = _pinned.get(name)
        if view is not None:
            return view
    return (_default or default_cache()).get(name, force_fetch=force_fetch)


def clear_caches() -> None:
    """Empty this process's L1 (as Powertools' ``clear_caches``)."""
    (_default or default_cache()).clear()


def invalidate(name: str) -> int | None:
    """Make containers reload ``name``: every warm one with L2 (returns the new generation),
    only this process without L2 (returns None)."""
    return (_default or default_cache()).invalidate(name)
