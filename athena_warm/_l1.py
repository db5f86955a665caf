"""L1: the in-process tier. A module-global store that survives Lambda's freeze/thaw.

Entries are keyed by (mapping name, fingerprint), so two declarations never share a copy. TTL
runs on an injected monotonic clock. A byte bound (estimated) evicts the least recently used
entries across mappings (a hit stamps the entry, without a lock). N threads that miss the same
key at once cause one load; the others wait for it (in-process single-flight). A load that an
invalidation (``discard``) or ``clear`` overtook is returned to its caller but not stored: data
read before an invalidation is never kept after it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._events import emit
from ._view import MappingView

log = logging.getLogger("athena_warm")

L1Key = tuple[str, str]  # (name, fingerprint)


@dataclass(slots=True)
class Entry:
    view: MappingView
    loaded_mono: float  # monotonic time the copy was made (earlier than its load if from L2)
    expires_at: float  # monotonic: the end of the TTL
    fresh_until: float  # monotonic: look again after this (the TTL, or the next generation check)
    nbytes: int
    stale_until: float = float("inf")  # monotonic: past ttl + max_stale it is never served
    created_at: float = 0.0  # epoch seconds the copy was made (any process)
    load_seconds: float = 0.0  # how long the origin took to produce it
    generation: int = 0
    epoch: str = ""  # the generation's epoch in L2 ("" when loaded without one)
    validator: str | None = None  # the tables' state when the copy was made (revalidation)
    validated_at: float = 0.0  # epoch seconds the tables were last found unchanged (0: never)
    next_check: float = float("inf")  # monotonic: the next validate_interval check
    served: bool = False  # served once already: later reads report tier "l1"
    last_used: int = 0  # tick of the latest hit, for LRU eviction


class _Flight:
    """One load in progress; waiters block on it and share its outcome."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Entry | None = None
        self.error: BaseException | None = None

    def wait(self) -> Entry:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class L1:
    """The in-process store. All methods are thread-safe."""

    def __init__(self, *, max_bytes: int, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: dict[L1Key, Entry] = {}
        self._flights: dict[L1Key, _Flight] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self._dropped: dict[str, int] = {}  # name -> how many times discard() dropped it
        self._cleared = 0
        self._ticks = itertools.count(1)  # next() is atomic under the GIL

    # -- reads ---------------------------------------------------------------------------------

    def get_fresh(self, key: L1Key) -> Entry | None:
        """The entry if it is still fresh (stamped as used), else None. Lock-free: the hot path."""
        entry = self._entries.get(key)
        if entry is not None and self.clock() < entry.fresh_until:
            entry.last_used = next(self._ticks)
            return entry
        return None

    def load(
        self, key: L1Key, load: Callable[[Entry | None], Entry], *, force: bool = False
    ) -> Entry:
        """The fresh entry, if another caller filled it meanwhile; else one caller runs
        ``load(current entry, or None)`` and concurrent callers for the same key wait for it,
        sharing its result or its error. ``force`` loads even over a fresh entry (and passes
        None)."""
        with self._lock:
            current = self._entries.get(key)
            if not force and current is not None and self.clock() < current.fresh_until:
                current.last_used = next(self._ticks)
                return current
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            started = (self._dropped.get(key[0], 0), self._cleared)
        if not leader:
            if current is not None and self.clock() < current.stale_until:
                return current  # stale while revalidate: the leader refreshes, we serve this
            return flight.wait()
        try:
            entry = load(None if force else current)
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.result = entry
            with self._lock:
                overtaken = started != (self._dropped.get(key[0], 0), self._cleared)
            if overtaken:
                emit(logging.INFO, "load_dropped",
                     "athena-warm: not keeping the copy of %s loaded across an "
                     "invalidation", key[0], extra={"mapping": key[0]})
            else:
                self.put(key, entry)
            return entry
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    # -- writes --------------------------------------------------------------------------------

    def put(self, key: L1Key, entry: Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            entry.last_used = next(self._ticks)
            self._entries[key] = entry
            self._bytes += entry.nbytes
            self._evict_locked(keep=key)

    def _evict_locked(self, *, keep: L1Key) -> None:
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            victim = min(
                (k for k in self._entries if k != keep), key=lambda k: self._entries[k].last_used
            )
            gone = self._entries.pop(victim)
            self._bytes -= gone.nbytes
            emit(logging.INFO, "l1_evict",
                 "athena-warm L1 evicted %s (%d bytes) to stay under %d bytes",
                victim[0], gone.nbytes, self.max_bytes,
                extra={"mapping": victim[0], "nbytes": gone.nbytes},
            )
        if self._bytes > self.max_bytes:
            emit(logging.WARNING, "l1_over_budget",
                "athena-warm L1: mapping %s alone (%d bytes) exceeds the L1 bound of %d bytes; "
                "kept anyway. Raise ATHENA_WARM_L1_MAX_BYTES or give the function more memory.",
                keep[0], self._bytes, self.max_bytes,
                extra={"mapping": keep[0]},
            )

    def discard(self, name: str) -> int:
        """Drop every copy of ``name``; return how many were dropped."""
        with self._lock:
            self._dropped[name] = self._dropped.get(name, 0) + 1
            keys = [k for k in self._entries if k[0] == name]
            for k in keys:
                self._bytes -= self._entries.pop(k).nbytes
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._cleared += 1

    # -- introspection -------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[L1Key, Entry]]:
        with self._lock:
            return iter(list(self._entries.items()))
