"""The shared tier's interface and vocabulary: what every tier (Redis, in-memory) stores.

A tier stores opaque blobs, a generation counter and leases; the core does the rest (codec,
checks, freshness). Everything a tier reads back is untrusted input: the pointer, the
generation and the lease are parsed here, by one set of functions every tier uses, and a value
that does not parse is a miss (or, for the generation counter, is reset to a new epoch).

A tier fails open: a read that cannot reach the store returns None, a write returns None. Only
``bump`` (an operator's invalidation) raises, because its caller must know it did not happen.
Production tiers: Redis / Valkey / ElastiCache (``athena_warm.adapters.redis``, configured by
``ATHENA_WARM_REDIS_URL``; redis-py is imported on first use), S3 (``athena_warm.adapters.s3``,
``ATHENA_WARM_S3_URL``, conditional writes; boto3 on first use), or both (``LayeredTier``:
Redis over S3, which survives losing Redis). ``MemoryTier`` (athena_warm._memory)
has the same semantics in one process, for tests and local runs.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ._config import resolve

__all__ = ["Generation", "Lease", "SharedTier", "WriteOutcome", "chunks_for", "open_l2"]


def __getattr__(name: str) -> Any:
    if name == "MemoryTier":  # also here (defined in _memory, which imports this module)
        from ._memory import MemoryTier

        return MemoryTier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def chunks_for(total_bytes: int) -> int:
    """The most chunks a copy of ``total_bytes`` can have been written in."""
    return max(1, -(-total_bytes // MIN_CHUNK_BYTES))

MAX_GENERATION = 2**53  # a counter beyond this (or negative, or not a number) is malformed
CLAIM_SUFFIX = "-collect"  # the collect claim: a lease keyed by the fingerprint and this
VALIDATE_SUFFIX = "-validate"  # who looks at the tables between TTLs (validate_interval)
MAX_CHUNKS = 4096  # a pointer that claims more chunks is malformed
MIN_CHUNK_BYTES = 64 * 1024  # writers' chunks are at least this big (but the last one)
MAX_LEASE_BYTES = 4096
_EPOCH_RE = re.compile(r"[0-9a-f]{16}")
_VERSION_RE = re.compile(r"[0-9a-f]{1,32}")
_TOKEN_RE = re.compile(r"[0-9a-f]{8,64}")
_DIGITS_RE = re.compile(r"[0-9]{1,15}")


def new_epoch() -> str:
    """A random 64-bit epoch: a recreated counter starts one that no old copy matches."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Generation:
    """A mapping's generation in the shared tier: ``epoch`` (random, new whenever the counter is
    created, so a lost counter never reads as an old one), ``number`` (bumped by each
    invalidation) and ``floor`` (the lowest number still servable: a hard invalidation)."""

    epoch: str
    number: int
    floor: int = 0


def parse_generation(epoch: object, number: object, floor: object) -> Generation | None:
    """A generation from the three stored strings, or None if any is malformed."""
    e, g, h = (_text(x) for x in (epoch, number, floor))
    if e is None or g is None or not _EPOCH_RE.fullmatch(e) or not _DIGITS_RE.fullmatch(g):
        return None
    if floor is not None and (h is None or not _DIGITS_RE.fullmatch(h)):
        return None
    n, f = int(g), int(h) if h is not None else 0
    if n >= MAX_GENERATION or f >= MAX_GENERATION:
        return None
    return Generation(e, n, f)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who refreshes a mapping, fleet-wide. ``fence`` is a number taken at acquisition, larger
    than every earlier holder's; ``at`` is when it was taken (epoch seconds). ``query_id`` is a
    handed-over Athena query. ``failed`` makes it a failure marker: the refresh failed with that
    error (``failed_type`` is the exception's type name), and nobody retries until it expires."""

    token: str
    fence: int = 0
    at: float = 0.0
    query_id: str | None = None
    failed: str | None = None
    failed_type: str | None = None
    validator: str | None = None  # the tables' state when a handed-over query started

    def encode(self) -> str:
        """``"<token> <json>"``: the token first, so a server script compares it without JSON."""
        body = {"fence": self.fence, "at": self.at, "query_id": self.query_id,
                "failed": self.failed, "failed_type": self.failed_type}
        if self.validator is not None:
            body["validator"] = self.validator
        return f"{self.token} {json.dumps(body, separators=(',', ':'))}"

    @classmethod
    def decode(cls, raw: object) -> Lease | None:
        """The lease in ``raw``, or None when it is malformed (untrusted input)."""
        text = _text(raw)
        if text is None or len(text) > MAX_LEASE_BYTES:
            return None
        token, _, body = text.partition(" ")
        if not _TOKEN_RE.fullmatch(token):
            return None
        try:
            value = json.loads(body)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        fence, at = value.get("fence", 0), value.get("at", 0.0)
        query_id, failed, ftype, validator = (
            value.get(k) for k in ("query_id", "failed", "failed_type", "validator"))
        if isinstance(fence, bool) or not isinstance(fence, int) or not 0 <= fence < 2**63:
            return None
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            return None
        if not all(v is None or (isinstance(v, str) and len(v) <= 1024)
                   for v in (query_id, failed, ftype, validator)):
            return None
        return cls(token=token, fence=fence, at=float(at), query_id=query_id, failed=failed,
                   failed_type=ftype, validator=validator)


@dataclass(frozen=True, slots=True)
class Pointer:
    """Where the current copy's chunks are (``version``, ``chunks``), and what orders it against
    another copy: its generation (``epoch``, ``number``) and ``created_ms``, when its data was
    read. A copy is newer than the stored one if the stored one is of a dead epoch, or if its
    (number, created_ms) is greater."""

    version: str
    chunks: int
    epoch: str
    number: int
    created_ms: int

    def encode(self) -> str:
        return f"{self.version}:{self.chunks}:{self.epoch}:{self.number}:{self.created_ms}"

    @classmethod
    def decode(cls, raw: object) -> Pointer | None:
        text = _text(raw)
        if text is None or len(text) > 120:
            return None
        parts = text.split(":")
        if len(parts) != 5 or not _VERSION_RE.fullmatch(parts[0]) or \
                not _EPOCH_RE.fullmatch(parts[2]) or \
                not all(_DIGITS_RE.fullmatch(p) for p in (parts[1], parts[3], parts[4])):
            return None
        chunks = int(parts[1])
        if not 1 <= chunks <= MAX_CHUNKS:
            return None
        return cls(parts[0], chunks, parts[2], int(parts[3]), int(parts[4]))

    def older_than(self, epoch: str, number: int, created_ms: int) -> bool:
        """Whether a copy made at (epoch, number, created_ms) may replace this one without the
        lease: ``epoch`` is the live one (the caller checked), so a copy of another is dead."""
        return self.epoch != epoch or (self.number, self.created_ms) < (number, created_ms)


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            return bytes(raw).decode("ascii")
        except UnicodeDecodeError:
            return None
    return raw if isinstance(raw, str) else None


# What a publish came to: written; refused by fencing (a late holder, an older copy); refused
# because the generation moved on (invalidated during the load); None: unreachable.
WriteOutcome = Literal["written", "fenced", "invalidated"]


@runtime_checkable
class SharedTier(Protocol):
    """Blobs, a generation counter and the leases of the fleet. Fails open (None)."""

    name: str

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        """The mapping's generation and how it was found: ``ok``, ``new`` (the counter did not
        exist: first use, or lost) or ``repaired`` (it was malformed and was reset). A new or
        reset counter gets a new epoch. None if the store is unreachable."""
        ...

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        """Increase the generation; return it. ``hard``: the new number is also the floor.
        Raises L2Error when it cannot."""
        ...

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        """The stored blob, or None (absent, malformed pointer, a pointer that claims more than
        ``max_chunks`` chunks, missing chunks, unreachable). Never a mix of two versions."""
        ...

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        """The first ``size`` bytes of the stored blob (its header), or None."""
        ...

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        """Store a new version and switch readers to it atomically, on the server, only if the
        generation is still ``generation`` (same epoch, number not behind) and either ``token``
        still holds the lease or the copy is newer (``created_at``) than the stored one."""
        ...

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        """The stored copy was revalidated: if it is still the one made at ``created_ms``, store
        ``note`` beside it and extend its life (and the note's) to ``ttl`` seconds from now;
        False when another copy replaced it or there is none, None if unreachable."""
        ...

    def note(self, mapping: str, fingerprint: str) -> str | None:
        """The note ``renew`` stored beside the copy, or None (absent, unreachable)."""
        ...

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        """Take the lease for ``ttl`` seconds: the lease (with a new fencing number) if taken,
        False if someone holds it, None if unreachable."""
        ...

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        """The current lease; None when nobody holds it, it is malformed (then it is removed),
        or the store is unreachable."""
        ...

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        """Replace the lease's value if ``lease.token`` still holds it (``ttl``: its new life)."""
        ...

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        """Drop the lease if ``token`` holds it."""
        ...


def open_l2(url: str | None = None, *, s3_url: str | None = None,
            node: str | None = None) -> SharedTier | None:
    """The shared tier the configuration names; None when it names none (no L2).

    ``url`` or ``$ATHENA_WARM_REDIS_URL``: ``redis://`` or ``rediss://`` (TLS) for Redis /
    Valkey / ElastiCache, ``memory://`` for a tier private to this process; ``s3_url`` or
    ``$ATHENA_WARM_S3_URL``: ``s3://bucket/prefix``. Both: Redis over S3 (``LayeredTier``).
    ``url`` may itself be an ``s3://`` URL (S3 alone). ``node`` or ``$ATHENA_WARM_NODE_DIR``
    (on by default on Lambda Managed Instances): the machine's processes share copies through
    files there, in front of the others (``NodeTier``), or alone."""
    from ._node import node_dir

    if url is not None and url.startswith("s3://"):
        url, s3_url = None, url
    else:
        url = resolve(url, "REDIS_URL", None)
        s3_url = resolve(s3_url, "S3_URL", None)
    folder = node_dir(node)
    fleet: Any = None
    if url and url.startswith("memory://"):
        from ._memory import MemoryTier

        fleet = MemoryTier()
    elif url:
        from .adapters.redis import RedisL2

        fleet = RedisL2(url)
    if s3_url:
        from .adapters.s3 import WHOLE_BYTES, S3Tier

        durable = S3Tier(s3_url, whole_bytes=0 if folder else WHOLE_BYTES)
        if fleet is None:
            fleet = durable
        else:
            from ._layered import LayeredTier

            fleet = LayeredTier(fleet, durable)
    if not folder:
        return fleet  # type: ignore[no-any-return]
    from ._files import FileTier
    from ._node import NodeTier

    return FileTier(folder) if fleet is None else NodeTier(FileTier(folder), fleet)
