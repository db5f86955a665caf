"""The coordinator: ``get_mapping(name)`` -> L1 -> (when a copy is due) the refresher, which
uses the fleet's shared copies and the origin. ``Cache`` owns the clocks, the settings and the
invocation scope; the tiers and the refresh path are the modules below it:

    _l1.py         L1: the in-process copies, single-flight per process
    _refresher.py  leases, revalidation, origin query, hand-over, the one failure handler
    _shared.py     the shared copies: a SharedTier (l2.py) plus the codec (_codec.py)
    _rules.py      the pure freshness rules

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
from typing import TYPE_CHECKING, Any

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
from ._memory import LocalLeases, MemoryTier
from ._refresher import Refresher
from ._view import MappingMeta, MappingView
from .exceptions import ConfigurationError, L2Error, UnknownMappingError
from .l2 import SharedTier, open_l2
from .origin import Origin, open_origin

if TYPE_CHECKING:
    from ._shared import SharedCopies

log = logging.getLogger("athena_warm")


class Cache:
    """One process's cache: registry, L1, optional L2, origin, clocks.

    ``clock`` is monotonic seconds (TTL arithmetic); ``wall_clock`` is epoch seconds (only for
    data other processes read: when a copy was made). ``l2`` is a SharedTier, a
    ``redis://``/``rediss://``/``s3://`` URL, or ``False`` for none; unset,
    ``$ATHENA_WARM_REDIS_URL`` and/or ``$ATHENA_WARM_S3_URL`` (both: Redis over S3).
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
        self.l2: SharedTier | None = None
        if isinstance(l2, SharedTier):
            self.l2 = l2
        elif l2 is not False:
            self.l2 = _open_l2_or_none(l2 if isinstance(l2, str) else None)
        self.check_interval = resolve_seconds(check_interval, "CHECK_INTERVAL", 30.0)
        key = resolve(signing_key, "SIGNING_KEY", None)
        self.signing_key: bytes | None = key.encode() if isinstance(key, str) else key
        self.retry_interval = resolve_seconds(retry_interval, "RETRY_INTERVAL", 5.0)
        self.refresh_timeout = resolve_seconds(refresh_timeout, "REFRESH_TIMEOUT", 300.0)
        self.random = random
        self.sleep = sleep
        self.shared: SharedCopies | None = None if self.l2 is None else _shared(
        ).SharedCopies(
            self.l2, signing_key=self.signing_key, wall_clock=wall_clock,
            span=lambda name: self.span(name), max_bytes=self.l1.max_bytes)
        self.refresher = self._make_refresher()
        # name -> view, valid until the current invocation ends; see the module docstring.
        self.pinned: dict[str, MappingView] = {}
        self._scope_depth = 0
        self._deadline: float | None = None  # monotonic; set by invocation(remaining=)
        # name -> error, for optional mappings the middleware could not get this invocation
        self.problems: dict[str, BaseException] = {}
        self.disabled = resolve_flag(None, "DISABLED", False)  # the kill switch
        # Tracing hook: the middleware sets it to an X-Ray subsegment factory.
        self.span: Callable[[str], contextlib.AbstractContextManager[Any]] = _no_span

    def _make_refresher(self) -> Refresher:
        return Refresher(
            shared=self.shared, local=LocalLeases(MemoryTier(clock=self.clock)),
            origin=lambda: self.origin, clock=self.clock, wall_clock=self.wall_clock,
            sleep=lambda s: self.sleep(s), random=lambda: self.random(),
            retry_interval=self.retry_interval, refresh_timeout=self.refresh_timeout,
            check_interval=self.check_interval, span=lambda name: self.span(name))

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
        entry = self.l1.load(
            decl.l1_key, lambda cur: self.refresher.fill(decl, cur, deadline=deadline),
            force=force_fetch)
        return self._serve(name, entry)

    def _bypass(self, name: str) -> MappingView:
        """The kill switch (ATHENA_WARM_DISABLED): straight from the origin, nothing cached
        beyond this invocation."""
        decl = self.declaration(name)
        emit(logging.WARNING, "disabled",
            "athena-warm is disabled (ATHENA_WARM_DISABLED): querying the origin for %s",
                    name, extra={"mapping": name})
        view = self.refresher.query_now(decl, number=0, epoch="", validate=False).view
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
        self.refresher = self._make_refresher()  # in-process leases from before are void
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
        emit(logging.INFO, "restore",
             "athena-warm: restored from a snapshot; %d copies kept", len(self.l1),
                 extra={})

    def refresh(self, name: str, *, remaining: float | None = None) -> MappingView:
        """Query the origin now (as the lease holder), publish the new copy to L2, hold it in
        L1. A refresh already running elsewhere is waited for instead of started twice."""
        decl = self.declaration(name)
        deadline = self._deadline_for(remaining)
        entry = self.l1.load(
            decl.l1_key, lambda _: self.refresher.fill(decl, None, deadline=deadline, force=True),
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
        gen = self.shared.bump(name, hard=hard) if self.shared is not None else None
        self.pinned.pop(name, None)
        self.l1.discard(name)
        number = gen.number if gen is not None else None
        emit(logging.INFO, "invalidate", "athena-warm: invalidated %s (%s)", name,
             f"generation {number}" if gen is not None else "this process only: no L2",
             extra={"mapping": name, "generation": number})
        return number

    def switch(self, name: str, *, hard: bool = False) -> tuple[MappingView, int]:
        """``invalidate --refresh``: query the origin, publish the result to L2 as the next
        generation, then bump the generation. Warm containers find the new copy in L2 when
        they see the bump: none of them waits on the origin. Returns (copy, new generation)."""
        decl = self.declaration(name)
        if self.shared is None:
            raise L2Error(
                f"invalidate --refresh of {name!r} needs L2 (ATHENA_WARM_REDIS_URL or "
                "ATHENA_WARM_S3_URL): without it there is no fleet to switch, only this process"
            )
        current = self.shared.generation(name)
        if current is None:
            raise L2Error(f"L2 is unreachable: {name!r} was not switched; nothing changed")
        entry = self.refresher.query_now(decl, number=current.number + 1, epoch=current.epoch)
        if not self.refresher.publish(decl, entry, current):
            raise L2Error(
                f"could not publish the new copy of {name!r} to L2 (refused, unreachable, or "
                "invalidated meanwhile: the log says which): the generation was NOT bumped, "
                "containers keep the old copy; run it again"
            )
        gen = self.shared.bump(name, hard=hard)
        self.pinned.pop(name, None)
        self.l1.put(decl.l1_key, entry)
        emit(logging.INFO, "invalidate",
             "athena-warm: switched %s to generation %d (%d rows, published before the bump)",
             name, gen.number, entry.view.meta.rows,
             extra={"mapping": name, "generation": gen.number,
                    "refresh": True, "hard": hard})
        return entry.view, gen.number

    def up_to_date(self, name: str) -> bool:
        """Whether the fleet's copy in L2 was made from the current state of the tables it
        reads (its validator matches their metadata now): a change event it already reflects
        (EventBridge sends several per update) needs no new query. False when unknown."""
        decl = self.declaration(name)
        gen = self.shared.generation(name) if self.shared is not None else None
        if gen is None or self.shared is None:
            return False
        got = self.shared.read(decl, gen)
        if got is None or got.validator is None:
            return False
        return self.refresher.validator(decl) == got.validator

    def l2_status(self, name: str) -> dict[str, Any]:
        """What L2 holds for ``name``: the copy (checked end to end), the generation, the
        lease. For the operator's ``status``."""
        decl = self.declaration(name)
        out: dict[str, Any] = {"name": name, "fingerprint": decl.fingerprint,
                               "l2": self.shared is not None}
        if self.shared is not None:
            out.update(self.shared.status(decl))
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


def _shared() -> Any:
    """The shared-copies module (and the codec), imported only when L2 is configured."""
    from . import _shared as module

    return module


def _open_l2_or_none(url: str | None) -> SharedTier | None:
    """The configured L2, or None with one error log when it cannot be built: a URL it cannot
    use, or a codec that does not import (a layer built for another Python). L2 fails open
    when it is misconfigured just as when it is unreachable."""
    try:
        tier = open_l2(url)
        if tier is not None:
            import msgpack  # noqa: F401  (the codec: imported here so a broken install shows)
            import zstandard  # noqa: F401
    except (ConfigurationError, ImportError) as exc:
        emit(logging.ERROR, "l2_error",
             "athena-warm: L2 is off for this process: %s: %s. Reads use L1 and the origin; "
             "fix ATHENA_WARM_REDIS_URL / ATHENA_WARM_S3_URL, or install the redis extra for "
             "this Python (pip install 'athena-warm[redis]')", type(exc).__name__, exc,
             extra={"tier": "l2"})
        return None
    return tier


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
