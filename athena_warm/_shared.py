"""The fleet's shared copies: a SharedTier plus the codec. The whole L2 contract lives here.

``SharedCopies`` reads a copy (checked end to end: header, generation, age, payload), publishes
one (fenced on the server), reads the generation and passes the leases through. Everything it
gets from the tier is untrusted: any failure, of the tier or of what it returned, is a logged
miss (``l2_corrupt`` or ``l2_error``), never an exception to the caller. Only ``bump`` raises.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from . import _rules as rules
from ._build import estimate_bytes
from ._codec import (
    HEADER_SIZE,
    VALUE_ROW,
    VALUE_SCALAR,
    VALUE_TUPLE,
    CorruptPayloadError,
    Header,
    decode,
    encode,
    read_header,
)
from ._events import brief, emit, l2_corrupt, listeners
from ._view import MappingView
from .l2 import CLAIM_SUFFIX, Generation, Lease, SharedTier, WriteOutcome, chunks_for

if TYPE_CHECKING:
    from ._declare import Mapping

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SharedCopy:
    """A copy read from the shared tier and checked: its data, header, and the writer's notes."""

    view: MappingView
    header: Header
    extras: dict[str, Any]
    size: int
    age: float  # seconds since its data was read (wall clock)
    validated_at: float | None = None  # the fleet found its tables unchanged then (a note)

    @property
    def nbytes(self) -> int:
        """The memory the copy uses, as its writer measured it (else estimated here)."""
        return int(self.extras.get("nbytes") or 0) or estimate_bytes(self.view)

    @property
    def validator(self) -> str | None:
        v = self.extras.get("validator")
        return v if isinstance(v, str) else None


@dataclass(frozen=True, slots=True)
class Note:
    """A revalidation, stored beside the copy: the copy made at ``created_ms`` still matched
    ``validator`` at ``at`` (epoch seconds), so its life counts from then."""

    created_ms: int
    validator: str
    at: float

    def encode(self, key: bytes | None) -> str:
        body = json.dumps({"c": self.created_ms, "v": self.validator, "a": self.at},
                          separators=(",", ":"))
        return body if key is None else f"{body} {_mac(key, body)}"

    @classmethod
    def decode(cls, raw: str, key: bytes | None) -> Note | None:
        """The note in ``raw``; None when malformed, or unsigned/badly signed under a key."""
        body, _, mac = raw.partition(" ")
        if key is not None and not hmac.compare_digest(mac.encode(), _mac(key, body).encode()):
            return None
        try:
            v = json.loads(body)
        except ValueError:
            return None
        if not isinstance(v, dict):
            return None
        c, val, at = v.get("c"), v.get("v"), v.get("a")
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 2**53:
            return None
        if not isinstance(val, str) or not 0 < len(val) <= 128:
            return None
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            return None
        return cls(c, val, float(at))


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, b"note:" + body.encode(), hashlib.sha256).hexdigest()


class SharedCopies:
    def __init__(self, tier: SharedTier, *, signing_key: bytes | None,
                 wall_clock: Callable[[], float],
                 span: Callable[[str], contextlib.AbstractContextManager[Any]],
                 max_bytes: int) -> None:
        self.tier = tier
        self.max_bytes = max_bytes  # the L1 bound: no copy decodes past what we may hold
        self.signing_key = signing_key
        self.wall_clock = wall_clock
        self.span = span

    def _safe(self, what: str, mapping: str, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except Exception as exc:  # a tier's bug or a value it could not parse: a miss
            emit(logging.WARNING, "l2_error",
                 "athena-warm L2 %s of %s failed (%s); treating it as a miss", what,
                 mapping, brief(exc),
                 extra={"mapping": mapping, "tier": "l2"})
            return default

    # -- generation ------------------------------------------------------------------------------

    def generation(self, mapping: str) -> Generation | None:
        got = self._safe("generation check", mapping, lambda: self.tier.generation(mapping), None)
        if got is None:
            return None
        gen, how = got
        if how == "repaired":
            l2_corrupt(mapping, "the generation counter was malformed; it was reset with a new "
                              "epoch, so every container reloads")
        elif how == "new":
            emit(logging.INFO, "generation_new",
                 "athena-warm: started generation epoch %s for %s (first use, or "
                 "the counter was lost: older copies are not served as current)", gen.epoch,
                 mapping, extra={"mapping": mapping})
        return gen

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        return self.tier.bump(mapping, hard=hard)

    # -- copies ------------------------------------------------------------------------------------

    def read(self, decl: Mapping, gen: Generation, *,
             newer_than: float | None = None) -> SharedCopy | None:
        """The copy of the current generation, fresh or stale-but-servable; None if absent,
        damaged, of another generation, too old, or (``newer_than``: epoch seconds) not newer
        than the copy the caller holds (checked on the header alone, before downloading)."""
        name, fp = decl.name, decl.fingerprint
        start = time.perf_counter()
        with self.span("## athena-warm L2 read"):
            fetched = self._fetch(decl, gen, newer_than)
        if fetched is None:
            return None
        blob, note = fetched
        try:
            view, header, extras = decode(blob, fingerprint=fp, signing_key=self.signing_key,
                                          max_bytes=self.max_bytes)
        except CorruptPayloadError as exc:
            l2_corrupt(name, exc.reason)
            return None
        problem = _check_extras(extras)
        if problem is not None:
            l2_corrupt(name, problem)
            return None
        validated_at = note.at if note is not None and \
            note.validator == extras.get("validator") else None
        if not self._servable(header, gen, decl, validated_at):
            return None
        age = max(0.0, self.wall_clock() - header.created_at)
        ms = (time.perf_counter() - start) * 1000
        emit(logging.INFO, "load",
             "athena-warm: loaded %s from L2: %d rows, %d bytes, %.0f s old, in %.1f ms",
             name, header.rows, len(blob), age, ms,
             extra={"mapping": name, "tier": "l2", "rows": header.rows,
                    "bytes": len(blob), "ms": round(ms, 1), "age_s": round(age, 1),
                    "generation": header.generation})
        return SharedCopy(view, header, extras, len(blob), age, validated_at)

    def _fetch(self, decl: Mapping, gen: Generation,
               newer_than: float | None) -> tuple[bytes, Note | None] | None:
        """The header first (its claims bound what is read after it), then the revalidation
        note when the copy is past its TTL, then the whole copy."""
        name, fp = decl.name, decl.fingerprint
        head = self._safe("read", name, lambda: self.tier.head(name, fp, HEADER_SIZE), None)
        if head is None:
            return None
        try:
            h = read_header(head, partial=True, max_bytes=self.max_bytes)
        except CorruptPayloadError as exc:
            l2_corrupt(name, exc.reason)
            return None
        if newer_than is not None and h.created_at <= newer_than:
            return None
        note = None
        if decl.validate is not None and self.wall_clock() - h.created_at >= decl.ttl:
            note = self.note(decl, h.created_at)
        if not self._servable(h, gen, decl, None if note is None else note.at):
            return None
        blob = self._safe("read", name, lambda: self.tier.read(
            name, fp, max_chunks=chunks_for(h.total_size)), None)
        return None if blob is None else (blob, note)

    # -- revalidation ------------------------------------------------------------------------------

    def note(self, decl: Mapping, created_at: float) -> Note | None:
        """The fleet's latest revalidation of the copy made at ``created_at``, if any."""
        raw = self._safe("note read", decl.name,
                         lambda: self.tier.note(decl.name, decl.fingerprint), None)
        if raw is None:
            return None
        note = Note.decode(raw, self.signing_key)
        if note is None:
            l2_corrupt(decl.name, "the revalidation note is malformed or not signed")
            return None
        return note if note.created_ms == int(created_at * 1000) else None

    def renew(self, decl: Mapping, *, created_at: float, validator: str, at: float) -> bool:
        """Record that the copy made at ``created_at`` is still current at ``at``: the fleet
        serves it for another TTL, with no re-encoding (a note, and longer expiries)."""
        note = Note(int(created_at * 1000), validator, at).encode(self.signing_key)
        return bool(self._safe("renew", decl.name, lambda: self.tier.renew(
            decl.name, decl.fingerprint, note, created_ms=int(created_at * 1000),
            ttl=decl.ttl + decl.max_stale), None))

    def _servable(self, header: Header, gen: Generation, decl: Mapping,
                  validated_at: float | None = None) -> bool:
        if not rules.copy_matches(header.epoch, header.generation, gen):
            return False  # invalidated since it was stored, or the counter was lost
        if rules.below_floor(header.epoch, header.generation, gen):
            return False
        life_from = max(header.created_at, validated_at or 0.0)
        return self.wall_clock() - life_from < decl.ttl + decl.max_stale

    def publish(self, decl: Mapping, view: MappingView, *, gen: Generation, created_at: float,
                load_seconds: float, token: str | None,
                validator: str | None = None) -> WriteOutcome | None:
        """Publish ``view`` as generation ``gen``; what came of it (None: not stored). Fenced
        on the server: refused when the generation moved on, or when ``token`` no longer holds
        the lease and the stored copy is as new. Never raises: a copy that cannot be encoded or
        stored is logged."""
        name = decl.name
        meta = view.meta
        try:
            blob = encode(
                view, fingerprint=decl.fingerprint, generation=meta.generation,
                epoch=gen.epoch, created_at=created_at, key_arity=len(decl.key_columns),
                value_kind=(VALUE_ROW if not decl.value_columns else
                            VALUE_SCALAR if len(decl.value_columns) == 1 else VALUE_TUPLE),
                extras={"query_id": meta.query_id, "null_keys_skipped": meta.null_keys_skipped,
                        "nbytes": meta.nbytes, "load_seconds": round(load_seconds, 3),
                        **({"validator": validator} if validator else {})},
                signing_key=self.signing_key,
            )
        except Exception as exc:
            emit(logging.ERROR, "publish_failed",
                 "athena-warm: %s was loaded but cannot be stored in L2 (%s: %s); it is served "
                 "from this container's memory, and other containers load it themselves",
                 name, type(exc).__name__, exc,
                 extra={"mapping": name, "tier": "l2"})
            return None
        with self.span("## athena-warm L2 write"):
            outcome = self._safe("write", name, lambda: self.tier.write(
                name, decl.fingerprint, blob, ttl=decl.ttl + decl.max_stale,
                created_at=created_at, generation=Generation(gen.epoch, meta.generation,
                                                             gen.floor), token=token), None)
        if outcome == "written":
            emit(logging.INFO, "publish",
                 "athena-warm: published %s to L2: %d rows, %d bytes, generation "
                 "%d", name, meta.rows, len(blob), meta.generation,
                 extra={"mapping": name, "tier": "l2", "rows": meta.rows,
                        "bytes": len(blob), "generation": meta.generation})
        elif outcome == "fenced":
            emit(logging.WARNING, "publish_fenced",
                 "athena-warm: not publishing %s: this refresh lost its lease (frozen or slow) "
                 "and L2 already holds a copy as new; the late copy is dropped", name,
                 extra={"mapping": name})
        elif outcome == "invalidated":
            emit(logging.INFO, "publish_skipped",
                 "athena-warm: not publishing %s: invalidated during the load",
                 name, extra={"mapping": name})
        return outcome

    # -- leases ------------------------------------------------------------------------------------

    def acquire(self, decl: Mapping, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        return self._safe("lease", decl.name, lambda: self.tier.acquire(
            decl.name, decl.fingerprint, token, ttl=ttl, at=at), None)

    def info(self, decl: Mapping) -> Lease | None:
        return self._safe("lease read", decl.name,
                          lambda: self.tier.info(decl.name, decl.fingerprint), None)

    def update(self, decl: Mapping, lease: Lease, *, ttl: float | None = None) -> bool:
        return self._safe("lease update", decl.name, lambda: self.tier.update(
            decl.name, decl.fingerprint, lease, ttl=ttl), False)

    def release(self, decl: Mapping, token: str) -> bool:
        return self._safe("lease release", decl.name,
                          lambda: self.tier.release(decl.name, decl.fingerprint, token), False)

    def claim(self, decl: Mapping, token: str, *, ttl: float, at: float,
              suffix: str = CLAIM_SUFFIX) -> Lease | Literal[False] | None:
        """A second, short lease beside the refresh lease: who downloads a finished handed-over
        query, who checks the tables between TTLs (False: someone else; None: the tier cannot
        say, so go ahead)."""
        return self._safe("claim", decl.name, lambda: self.tier.acquire(
            decl.name, decl.fingerprint + suffix, token, ttl=ttl, at=at), None)

    def unclaim(self, decl: Mapping, token: str) -> bool:
        return self._safe("collect claim release", decl.name, lambda: self.tier.release(
            decl.name, decl.fingerprint + CLAIM_SUFFIX, token), False)

    # -- the operator's view -----------------------------------------------------------------------

    def status(self, decl: Mapping) -> dict[str, Any]:
        """What the tier holds for ``decl``: the copy (checked end to end), generation, lease."""
        name = decl.name
        gen = self.generation(name)
        out: dict[str, Any] = {"reachable": gen is not None,
                               "generation": gen.number if gen else None,
                               "epoch": gen.epoch if gen else None,
                               "floor": gen.floor if gen else None, "present": False,
                               "corrupt": None}
        if gen is None:
            return out
        seen: list[dict[str, Any]] = []
        listeners.append(seen.append)  # the reason a read was a miss, if it was damage
        try:
            blob = self._safe("read", name, lambda: self.tier.read(name, decl.fingerprint),
                              None)
        finally:
            listeners.remove(seen.append)
        lease = self.info(decl)
        now = self.wall_clock()
        out["lease"] = None if lease is None else {
            "query_id": lease.query_id, "failed": lease.failed, "fence": lease.fence,
            "since_s": round(now - lease.at, 1)}
        if blob is None:
            damage = [e for e in seen if e.get("event") == "l2_corrupt"
                      and e.get("mapping") == name]
            if damage:
                out.update(present=True, corrupt=damage[-1].get("reason"))
            return out
        out.update(present=True, bytes=len(blob))
        try:
            header = read_header(blob, max_bytes=self.max_bytes)
            out.update(copy_generation=header.generation, rows=header.rows,
                       created_at=header.created_at, signed=header.signed)
            _, _, extras = decode(blob, fingerprint=decl.fingerprint,
                                  signing_key=self.signing_key, max_bytes=self.max_bytes)
        except CorruptPayloadError as exc:
            out["corrupt"] = exc.reason
            return out
        note = self.note(decl, header.created_at)
        validated_at = note.at if note is not None and isinstance(extras, dict) and \
            note.validator == extras.get("validator") else None
        age = max(0.0, now - header.created_at)
        life = max(0.0, now - max(header.created_at, validated_at or 0.0))
        valid = rules.copy_matches(header.epoch, header.generation, gen)
        out.update(age_s=round(age, 1), expires_in_s=round(decl.ttl - life, 1),
                   validated_at=validated_at, stale=life >= decl.ttl or not valid,
                   servable=self._servable(header, gen, decl, validated_at))
        return out


def _check_extras(extras: Any) -> str | None:
    """Why the writer's notes are unusable, or None. They are untrusted like the rest."""
    if not isinstance(extras, dict):
        return "extras are not a map"
    for k in ("nbytes", "null_keys_skipped"):
        v = extras.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**62):
            return f"extras: {k} is not a count"
    v = extras.get("load_seconds")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                          or not 0 <= v < 1e7):
        return "extras: load_seconds is not a duration"
    q = extras.get("query_id")
    if q is not None and (not isinstance(q, str) or len(q) > 256):
        return "extras: query_id is not an id"
    v = extras.get("validator")
    if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 128):
        return "extras: validator is not a fingerprint"
    return None
