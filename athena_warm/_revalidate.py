"""Revalidation (the Refresher's half that looks at the tables instead of querying them).

    _validator()     the tables' fingerprint from the origin's metadata (Glue, S3, files);
                     None when unknown or when the check failed: then the query runs
    _revalidate()    at a TTL, unchanged tables: the copy lives another TTL, here and in L2
                     (a signed note beside the fleet's copy), with no query
    _renewed()       another container revalidated the fleet's copy: this one lives on too
    _check_tables()  validate_interval: between TTLs, one look per fleet per interval

A mixin of Refresher: it uses the refresher's clocks, tiers and entry helpers.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _rules as rules
from ._events import emit
from ._l1 import Entry
from .l2 import VALIDATE_SUFFIX, Generation
from .origin import Origin, ValidatingOrigin, deadline_scope, time_left

if TYPE_CHECKING:
    from typing import TypeAlias

    from ._declare import Mapping
    from ._memory import LocalLeases
    from ._shared import SharedCopies

    Leases: TypeAlias = LocalLeases | SharedCopies


class Revalidation:
    shared: SharedCopies | None
    local: LocalLeases
    origin: Callable[[], Origin]
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    span: Callable[[str], Any]

    if TYPE_CHECKING:  # the Refresher's
        def entry(self, decl: Mapping, view: Any, *, age: float, number: int, epoch: str,
                  nbytes: int, load_seconds: float, validator: str | None = None,
                  validated_at: float | None = None) -> Entry: ...

        def next_look(self, now: float, expires_at: float) -> float: ...

        def _from_shared(self, decl: Mapping, gen: Generation, *,
                         newer_than: float | None) -> Entry | None: ...

    def validator(self, decl: Mapping) -> str | None:
        """The tables' fingerprint now (None: unknown or the check failed)."""
        with deadline_scope(None, self.clock):
            return self._validator(decl, self.origin())

    def _validator(self, decl: Mapping, origin: Origin) -> str | None:
        """The current fingerprint of the tables ``decl`` reads; None when unknown, or when the
        check failed (then the query runs: never served as unchanged on a failed check)."""
        if decl.validate is None or not isinstance(origin, ValidatingOrigin):
            return None
        left = time_left()
        if left is not None and left < rules.VALIDATE_MIN_LEFT:
            emit(logging.INFO, "validate_unknown",
                 "athena-warm: not checking the tables of %s: %.1f s left in this invocation "
                 "is kept for the query", decl.name, left,
                 extra={"mapping": decl.name, "reason": "too little time left"})
            return None
        try:
            tables = decl.read_tables()
            if not tables:
                return None
            with self.span("## athena-warm validate"):
                return origin.validator(tables, database=decl.database, catalog=decl.catalog,
                                        listing=decl.validate == "auto")
        except Exception as exc:
            emit(logging.WARNING, "validate_failed",
                 "athena-warm: could not check whether the tables of %s changed (%s: %s); "
                 "the query runs instead", decl.name, type(exc).__name__, exc,
                 extra={"mapping": decl.name, "error": type(exc).__name__})
            return None

    def _revalidate(self, decl: Mapping, stale: Entry, gen: Generation | None,
                    validator: str) -> Entry:
        """The tables did not change since ``stale`` was made: it lives another TTL, here and
        (a note beside the copy, longer expiries, no re-encoding) for the whole fleet."""
        at = self.wall_clock()
        renewed = False
        if self.shared is not None and gen is not None:
            renewed = self.shared.renew(decl, created_at=stale.created_at, validator=validator,
                                        at=at)
        emit(logging.INFO, "revalidated",
             "athena-warm: %s is unchanged (its tables' metadata matches the copy's): kept "
             "for another TTL with no query%s", decl.name, " (and in L2)" if renewed else "",
             extra={"mapping": decl.name, "generation": stale.generation, "l2": renewed})
        return self._extended(decl, stale, validator, at)

    def _extended(self, decl: Mapping, cur: Entry, validator: str, at: float) -> Entry:
        view = cur.view
        view.meta = dataclasses.replace(view.meta, validated_at=at)
        return self.entry(decl, view, age=self.wall_clock() - cur.created_at,
                          number=cur.generation, epoch=cur.epoch, nbytes=cur.nbytes,
                          load_seconds=cur.load_seconds, validator=validator, validated_at=at)

    def _renewed(self, decl: Mapping, cur: Entry) -> Entry | None:
        """``cur`` is past its TTL: if another container found its tables unchanged since (the
        note beside the fleet's copy of it), it lives on from then, with no download."""
        assert self.shared is not None
        note = self.shared.note(decl, cur.created_at)
        if note is None or note.validator != cur.validator or \
                note.at <= max(cur.validated_at, cur.created_at) or \
                self.wall_clock() - note.at >= decl.ttl:
            return None
        emit(logging.INFO, "renewed",
             "athena-warm: %s was revalidated by another container: this copy lives on",
             decl.name, extra={"mapping": decl.name})
        return self._extended(decl, cur, note.validator, note.at)

    def _check_tables(self, decl: Mapping, cur: Entry, gen: Generation | None, *,
                      deadline: float | None) -> tuple[Entry | None, Generation | None]:
        """``validate_interval``: between TTLs, one container per interval (a claim that
        expires, never released) looks at the tables. Unchanged, or the look failed: (the copy
        kept, _). Changed: the fleet's newer copy if it has one, else (None, the generation
        after a bump, which makes every warm container reload)."""
        now = self.clock()
        interval = decl.validate_interval or float("inf")
        kept = dataclasses.replace(cur, next_check=now + interval, fresh_until=min(
            self.next_look(now, cur.expires_at), now + interval))
        try:
            if not cur.validator:
                return kept, gen
            leases: Leases = self.shared if gen is not None and self.shared is not None \
                else self.local
            if leases.claim(decl, secrets.token_hex(8), ttl=interval, at=self.wall_clock(),
                            suffix=VALIDATE_SUFFIX) is False:
                return kept, gen  # another container looked within the interval
            until = None if deadline is None else deadline - rules.DEADLINE_MARGIN
            with deadline_scope(until, self.clock):
                validator = self._validator(decl, self.origin())
            if validator is None or validator == cur.validator:
                return kept, gen
            emit(logging.INFO, "table_changed",
                 "athena-warm: the tables of %s changed (seen by validate_interval); "
                 "refreshing it%s", decl.name, " fleet-wide" if gen is not None else "",
                 extra={"mapping": decl.name})
            if gen is None or self.shared is None:
                return None, gen
            newer = self._from_shared(decl, gen, newer_than=cur.created_at)
            if newer is not None and newer.validator == validator and \
                    self.clock() < newer.expires_at:
                return newer, gen  # another container already loaded the new data
            return None, self.shared.bump(decl.name)
        except Exception as exc:  # a look between TTLs never fails a read of a fresh copy
            emit(logging.WARNING, "validate_failed",
                 "athena-warm: the check of %s's tables failed (%s: %s); the copy is kept",
                 decl.name, type(exc).__name__, exc,
                 extra={"mapping": decl.name, "error": type(exc).__name__})
            return kept, gen
