"""The read path: ``get_mapping(name)`` -> L1 -> origin, filling the tiers above.

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
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._build import build
from ._config import default_l1_max_bytes, parse_bytes, resolve
from ._declare import REGISTRY, Mapping, Registry, load_declarations
from ._l1 import L1, Entry
from ._view import MappingMeta, MappingView
from .exceptions import OriginError, UnknownMappingError
from .origin import Origin, open_origin

log = logging.getLogger("athena_warm")


class Cache:
    """One process's cache: registry, L1, origin, clocks.

    ``clock`` is monotonic seconds (TTL arithmetic); ``wall_clock`` is epoch seconds (only for
    ``loaded_at``, which other processes may read).
    """

    def __init__(
        self,
        *,
        origin: Origin | str | None = None,
        registry: Registry | None = None,
        l1_max_bytes: int | str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
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
        # name -> view, valid until the current invocation ends; see the module docstring.
        self.pinned: dict[str, MappingView] = {}
        self._scope_depth = 0

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

    def get(self, name: str, *, force_fetch: bool = False) -> MappingView:
        """The mapping called ``name``: from L1 if fresh, else loaded from the origin.

        ``force_fetch=True`` skips L1 and loads a new copy (as Powertools' get_parameter).
        """
        if not force_fetch:
            if self.pinned:
                view = self.pinned.get(name)
                if view is not None:
                    return view
            decl = self.registry.get(name)
            if decl is not None:  # an L1 hit: a dict lookup and a clock read, no lock
                entry = self.l1.get_fresh(decl.l1_key)
                if entry is not None:
                    return self._serve(name, entry, hit=True)
        decl = self.declaration(name)
        entry, hit = self.l1.load(decl.l1_key, lambda: self._load(decl), force=force_fetch)
        return self._serve(name, entry, hit=hit)

    def _serve(self, name: str, entry: Entry, *, hit: bool) -> MappingView:
        view = entry.view
        if hit and view.meta.tier != "l1":
            # Set once per copy; the first reader saw the tier it was loaded from.
            view.meta = _with_tier(view.meta, "l1")
        if self._scope_depth:
            self.pinned[name] = view
        return view

    def _load(self, decl: Mapping) -> Entry:
        start = time.perf_counter()
        try:
            result = self.origin.query(
                decl.sql,
                decl.params,
                database=decl.database,
                workgroup=decl.workgroup,
                catalog=decl.catalog,
            )
        except OriginError as exc:
            log.error(
                "athena-warm: loading %s from the origin failed: %s", decl.name, exc,
                extra={"mapping": decl.name, "event": "origin_error", "query_id": exc.query_id},
            )
            raise exc.with_mapping(decl.name) from exc.__cause__
        built = build(decl, result)
        view = built.data
        view.meta = MappingMeta(
            name=decl.name,
            tier="origin",
            source="origin",
            generation=0,
            loaded_at=self.wall_clock(),
            rows=len(built.data),
            fingerprint=decl.fingerprint,
            null_keys_skipped=built.null_keys_skipped,
            nbytes=built.nbytes,
            query_id=result.query_id,
        )
        now = self.clock()
        ms = (time.perf_counter() - start) * 1000
        log.info(
            "athena-warm: loaded %s from %s: %d rows in %.0f ms",
            decl.name, self.origin.name, len(view), ms,
            extra={
                "mapping": decl.name, "event": "load", "tier": "origin", "rows": len(view),
                "nbytes": built.nbytes, "ms": round(ms, 1), "query_id": result.query_id,
                "null_keys_skipped": built.null_keys_skipped,
            },
        )
        return Entry(view=view, loaded_mono=now, fresh_until=now + decl.ttl, nbytes=built.nbytes)

    # -- invocation scope ------------------------------------------------------------------------

    @contextlib.contextmanager
    def invocation(self) -> Iterator[None]:
        """Check each mapping's freshness once for the duration of one invocation."""
        self.pinned.clear()
        self._scope_depth += 1
        try:
            yield
        finally:
            self._scope_depth -= 1
            if not self._scope_depth:
                self.pinned.clear()

    # -- management ------------------------------------------------------------------------------

    def invalidate(self, name: str) -> int:
        """Drop this process's copies of ``name`` (local only until an L2 tier is configured)."""
        self.declaration(name)
        self.pinned.pop(name, None)
        return self.l1.discard(name)

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
                "expires_in_s": round(e.fresh_until - now, 3),
                "fresh": now < e.fresh_until,
            })
        return out


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


def invalidate(name: str) -> int:
    """Drop this process's copies of ``name`` so the next read reloads it."""
    return (_default or default_cache()).invalidate(name)
