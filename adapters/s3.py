"""The shared tier on S3: no cluster, no VPC. Conditional writes make it safe. Fails open.

Objects under ``s3://bucket/prefix`` (``ATHENA_WARM_S3_URL``)::

    <prefix>/<name>/gen            {"e": epoch, "g": "<number>", "hard": "<floor>"}
    <prefix>/<name>/<fp>/copy      the encoded copy (the L2 format: checksummed, signed when a
                                   key is set); metadata ``aw-pointer`` says what it is
                                   ("<version>:1:<epoch>:<generation>:<created_ms>")
    <prefix>/<name>/<fp>/lease     {"fence": N, "until_ms": T, "lease": "<token> <json>" | null}
    <prefix>/<name>/<fp>/note      {"note": "..."}: the fleet's last revalidation of the copy

Every change is a compare-and-swap: ``If-None-Match: *`` creates an object only if it does not
exist, ``If-Match: <ETag>`` replaces it only if nobody changed it since it was read; a refused
write (412, or 409 when two land at once) is re-read and decided again. So two containers never
both take a lease, a bump is never lost, and a copy never replaces one it did not see. A lease
object is never deleted, so its fencing number only grows (and it starts from the clock in
milliseconds when the object was lost). Unlike Redis, the checks before a copy's write are not
one atomic step: a publisher that froze between its checks and its write can still land a copy
as old as the one it saw, never one that replaces a copy written after its check.

Objects do not expire: the core serves a copy only while its header says it may (its
generation, its age against ttl + max_stale, the revalidation note), so the tier needs no
TTL, and each refresh rewrites the same keys (a changed declaration leaves its old
fingerprint's objects behind: a few small objects, deletable by hand). Nothing is deleted, so
the function needs s3:GetObject and s3:PutObject on the prefix, and s3:ListBucket on it (S3
answers 403 instead of 404 for a missing object without it). Each call is one HTTP request
(tens of ms in a region); a warm container checks the generation at most once per
``check_interval``; a copy under ``whole_bytes`` is read in one request. boto3 is imported on
first use.
"""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from .._config import resolve, resolve_seconds
from .._events import brief, emit
from ..exceptions import ConfigurationError, L2Error
from ..l2 import (
    MAX_CHUNKS,
    MAX_LEASE_BYTES,
    MIN_CHUNK_BYTES,
    Generation,
    Lease,
    Pointer,
    WriteOutcome,
    new_epoch,
    parse_generation,
)
from ._breaker import CircuitBreaker

__all__ = ["S3Tier"]

T = TypeVar("T")
MAX_SMALL_BYTES = MAX_LEASE_BYTES + 256  # a counter, a lease or a note is never bigger
WHOLE_BYTES = 1 << 20  # head() downloads a copy this small whole (S3's latency is per request)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_PREFIX_RE = re.compile(r"[A-Za-z0-9!\-_.*'()/]{0,512}")
_ABSENT = ("NoSuchKey", "404", "NotFound", "InvalidRange", "416")
_CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class _Conflict(Exception):
    """A conditional write was refused: somebody changed the object first."""


class S3Tier:
    """A SharedTier on S3. Options: argument > ``ATHENA_WARM_*`` > default."""

    name = "s3"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        region: str | None = None,
        connect_timeout: str | float | None = None,
        read_timeout: str | float | None = None,
        reset_window: str | float | None = None,
        whole_bytes: int = WHOLE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url: str = resolve(url, "S3_URL", "") or ""
        self.whole_bytes = whole_bytes  # 0: head() reads the header only (the node tier)
        self.bucket, self.prefix = parse_s3_url(self.url)
        self.region = resolve(region, "REGION", None)
        self.connect_timeout = resolve_seconds(connect_timeout, "S3_CONNECT_TIMEOUT", 1.0)
        self.read_timeout = resolve_seconds(read_timeout, "S3_READ_TIMEOUT", 5.0)
        self.reset_window = resolve_seconds(reset_window, "L2_RESET_WINDOW", 30.0)
        self.clock = clock  # epoch seconds: lease expiries cross processes
        self.breaker = CircuitBreaker(self.reset_window)
        self._client = client
        self._client_lock = threading.Lock()
        self._local = threading.local()  # a copy head() downloaded whole, for read()

    # -- connection ------------------------------------------------------------------------------

    def client(self) -> Any:
        """The boto3 S3 client, made on first use (short timeouts, one retry)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    self._client = boto3.client("s3", region_name=self.region, config=Config(
                        connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                        retries={"max_attempts": 2, "mode": "standard"}))
        return self._client

    def key(self, mapping: str, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, mapping, *parts) if p)

    # -- fail-open plumbing ----------------------------------------------------------------------

    def _run(self, what: str, mapping: str, fn: Callable[[Any], T], default: T) -> T:
        if not self.breaker.allow():
            return default
        try:
            result = fn(self.client())
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            outage = _is_outage(exc)
            if outage:
                self.breaker.failure()
            emit(logging.WARNING, "l2_error",
                 "athena-warm L2 (S3) %s of %s failed (%s)%s", what, mapping, brief(exc),
                 f"; skipping S3 for {self.reset_window:.0f} s" if outage else
                 " (refused: check the function's s3:GetObject/PutObject on "
                 f"s3://{self.bucket}/{self.prefix})",
                 extra={"mapping": mapping, "tier": "l2"})
            return default
        self.breaker.success()
        return result

    def reachable(self) -> bool:
        """False while the circuit breaker is open (a call failed within reset_window)."""
        return not self.breaker.is_open

    def _get(self, c: Any, key: str, *, limit: int,
             byte_range: str | None = None) -> tuple[bytes, str, dict[str, str], str] | None:
        """(body, ETag, metadata, Content-Range) of ``key``; None when absent. A body over
        ``limit`` bytes is not downloaded: it reads as b"" (damage; the caller's parser refuses
        it)."""
        kw = {"Range": byte_range} if byte_range else {}
        try:
            got = c.get_object(Bucket=self.bucket, Key=key, **kw)
        except Exception as exc:
            if _code(exc) in _ABSENT:
                return None
            raise
        body = got["Body"]
        try:
            if int(got.get("ContentLength") or 0) > limit:
                return b"", str(got.get("ETag") or ""), {}, ""
            data = body.read(limit + 1)
        finally:
            body.close()
        meta = got.get("Metadata") or {}
        return (data if len(data) <= limit else b""), str(got.get("ETag") or ""), meta, \
            str(got.get("ContentRange") or "")

    def _put(self, c: Any, key: str, body: bytes, etag: str | None, *,
             metadata: dict[str, str] | None = None) -> None:
        """Write ``key`` only if it is still ``etag`` (None: only if it does not exist)."""
        kw: dict[str, Any] = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        if metadata:
            kw["Metadata"] = metadata
        try:
            c.put_object(Bucket=self.bucket, Key=key, Body=body, **kw)
        except Exception as exc:
            if _code(exc) in _CONFLICT:
                raise _Conflict from None
            raise

    # -- the generation ----------------------------------------------------------------------------

    def _generation(self, c: Any, mapping: str) -> tuple[Generation, str]:
        key = self.key(mapping, "gen")
        for _ in range(5):
            got = self._get(c, key, limit=MAX_SMALL_BYTES)
            gen = None if got is None else _parse_gen(got[0])
            if gen is not None:
                return gen, "ok"
            fresh = Generation(new_epoch(), 0, 0)
            try:
                self._put(c, key, _gen_body(fresh), None if got is None else got[1])
            except _Conflict:
                continue  # someone created or repaired it first: read theirs
            return fresh, "new" if got is None else "repaired"
        raise _Conflict

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        return self._run("generation check", mapping, lambda c: self._generation(c, mapping),
                         None)

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        key = self.key(mapping, "gen")
        try:
            c = self.client()
            for attempt in range(10):
                got = self._get(c, key, limit=MAX_SMALL_BYTES)
                gen = (None if got is None else _parse_gen(got[0])) or \
                    Generation(new_epoch(), 0, 0)
                number = gen.number + 1
                bumped = Generation(gen.epoch, number, number if hard else gen.floor)
                try:
                    self._put(c, key, _gen_body(bumped), None if got is None else got[1])
                except _Conflict:  # two invalidations at once: take turns
                    time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                    continue
                return bumped
            raise L2Error(f"could not bump the generation of {mapping!r} in S3: ten attempts "
                          "collided with other writers; warm containers were NOT told to "
                          "reload. Run the invalidation again.")
        except L2Error:
            raise
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            raise L2Error(
                f"could not bump the generation of {mapping!r} in s3://{self.bucket}/"
                f"{self.prefix} ({type(exc).__name__}: {exc}); warm containers were NOT told to "
                "reload. Check ATHENA_WARM_S3_URL, the credentials and s3:PutObject on the "
                "prefix, then run the invalidation again.") from exc

    # -- copies ------------------------------------------------------------------------------------

    def _copy(self, c: Any, mapping: str, fingerprint: str, *, limit: int,
              byte_range: str | None = None) -> tuple[bytes, Pointer] | None:
        got = self._get(c, self.key(mapping, fingerprint, "copy"), limit=limit,
                        byte_range=byte_range)
        if got is None:
            return None
        ptr = Pointer.decode(got[2].get("aw-pointer"))
        return None if ptr is None or not got[0] else (got[0], ptr)

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        limit = max(1, min(max_chunks, MAX_CHUNKS)) * MIN_CHUNK_BYTES
        held = self._held(mapping, fingerprint)
        if held is not None and len(held) <= limit:
            return held  # head() just downloaded it whole: no second request

        def op(c: Any) -> bytes | None:
            got = self._copy(c, mapping, fingerprint, limit=limit)
            return None if got is None else got[0]

        return self._run("read", mapping, op, None)

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        """The first ``size`` bytes. A copy of at most whole_bytes is downloaded whole and
        held for the ``read`` that follows in this thread (one request instead of two)."""
        self._local.held = None

        def op(c: Any) -> bytes | None:
            span = max(size, self.whole_bytes)
            got = self._get(c, self.key(mapping, fingerprint, "copy"), limit=span,
                            byte_range=f"bytes=0-{span - 1}")
            ptr = None if got is None else Pointer.decode(got[2].get("aw-pointer"))
            if got is None or ptr is None or not got[0]:
                return None
            total = _total(got[3])
            if total == len(got[0]) and total > size:
                self._local.held = (mapping, fingerprint, got[0])
            return got[0][:size]

        return self._run("read", mapping, op, None)

    def _held(self, mapping: str, fingerprint: str) -> bytes | None:
        held = getattr(self._local, "held", None)
        self._local.held = None  # used once
        return held[2] if held is not None and held[:2] == (mapping, fingerprint) else None

    def _stored(self, c: Any, mapping: str,
                fingerprint: str) -> tuple[Pointer | None, str | None]:
        """The stored copy's pointer (None: absent or malformed) and ETag (None: absent)."""
        try:
            got = c.head_object(Bucket=self.bucket, Key=self.key(mapping, fingerprint, "copy"))
        except Exception as exc:
            if _code(exc) in _ABSENT:
                return None, None
            raise
        return Pointer.decode((got.get("Metadata") or {}).get("aw-pointer")), \
            str(got.get("ETag") or "")

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        created_ms = int(created_at * 1000)

        def op(c: Any) -> WriteOutcome:
            for _ in range(3):
                current, _ = self._generation(c, mapping)
                if current.epoch != generation.epoch or generation.number < current.number:
                    return "invalidated"
                old, etag = self._stored(c, mapping, fingerprint)
                holder = False
                if token is not None:
                    lease = self._lease(c, mapping, fingerprint)[0]
                    holder = lease is not None and lease.token == token
                if not holder and old is not None and \
                        not old.older_than(generation.epoch, generation.number, created_ms):
                    return "fenced"
                ptr = Pointer(secrets.token_hex(6), 1, generation.epoch, generation.number,
                              created_ms)
                try:
                    self._put(c, self.key(mapping, fingerprint, "copy"), blob, etag,
                              metadata={"aw-pointer": ptr.encode()})
                except _Conflict:
                    continue  # another copy landed meanwhile: decide again against it
                return "written"
            return "fenced"

        return self._run("write", mapping, op, None)

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        """Store the note if the copy is still the one made at ``created_ms``. (S3 objects do
        not expire, so there is no life to extend: the note is what the core reads.)"""

        def op(c: Any) -> bool:
            ptr, _ = self._stored(c, mapping, fingerprint)
            if ptr is None or ptr.created_ms != created_ms:
                return False
            c.put_object(Bucket=self.bucket, Key=self.key(mapping, fingerprint, "note"),
                         Body=json.dumps({"note": note}).encode())
            return True

        return self._run("renew", mapping, op, None)

    def note(self, mapping: str, fingerprint: str) -> str | None:
        def op(c: Any) -> str | None:
            got = self._get(c, self.key(mapping, fingerprint, "note"), limit=MAX_SMALL_BYTES)
            value = None if got is None else _json(got[0])
            note = value.get("note") if isinstance(value, dict) else None
            return note if isinstance(note, str) else None

        return self._run("note read", mapping, op, None)

    # -- leases ----------------------------------------------------------------------------------

    def _lease(self, c: Any, mapping: str,
               fingerprint: str) -> tuple[Lease | None, int, int, str | None]:
        """(the live lease or None, its fencing number, its expiry in ms, the ETag or None)."""
        got = self._get(c, self.key(mapping, fingerprint, "lease"), limit=MAX_SMALL_BYTES)
        if got is None:
            return None, 0, 0, None
        body = _json(got[0])
        if not isinstance(body, dict):
            return None, 0, 0, got[1]  # malformed: nobody holds it
        fence, until = body.get("fence"), body.get("until_ms")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62
                   for v in (fence, until)):
            return None, 0, 0, got[1]
        assert isinstance(fence, int) and isinstance(until, int)
        raw = body.get("lease")
        lease = Lease.decode(raw) if isinstance(raw, str) else None
        if lease is None or until <= self._now_ms():
            return None, fence, until, got[1]
        return lease, fence, until, got[1]

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _put_lease(self, c: Any, mapping: str, fingerprint: str, lease: Lease | None,
                   fence: int, until_ms: int, etag: str | None) -> None:
        body = {"fence": fence, "until_ms": until_ms,
                "lease": None if lease is None else lease.encode()}
        self._put(c, self.key(mapping, fingerprint, "lease"),
                  json.dumps(body, separators=(",", ":")).encode(), etag)

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        def op(c: Any) -> Lease | Literal[False]:
            current, fence, _, etag = self._lease(c, mapping, fingerprint)
            if current is not None:
                return False
            # The fencing number grows; from the clock when the object was lost or damaged.
            lease = Lease(token=token, fence=max(fence + 1, self._now_ms()), at=at)
            try:
                self._put_lease(c, mapping, fingerprint, lease, lease.fence,
                                self._now_ms() + _ms(ttl), etag)
            except _Conflict:
                return False  # another container took it between our read and our write
            return lease

        return self._run("lease", mapping, op, None)

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        return self._run("lease read", mapping,
                         lambda c: self._lease(c, mapping, fingerprint)[0], None)

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        def op(c: Any) -> bool:
            current, fence, until, etag = self._lease(c, mapping, fingerprint)
            if current is None or current.token != lease.token:
                return False
            until = until if ttl is None else self._now_ms() + _ms(ttl)
            try:
                self._put_lease(c, mapping, fingerprint, lease, fence, until, etag)
            except _Conflict:
                return False
            return True

        return self._run("lease update", mapping, op, False)

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        def op(c: Any) -> bool:
            current, fence, _, etag = self._lease(c, mapping, fingerprint)
            if current is None or current.token != token:
                return False
            try:  # kept, empty, so that the fencing number goes on growing
                self._put_lease(c, mapping, fingerprint, None, fence, 0, etag)
            except _Conflict:
                return False
            return True

        return self._run("lease release", mapping, op, False)


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; ConfigurationError naming the fix."""
    if not url:
        raise ConfigurationError(
            "the S3 tier needs ATHENA_WARM_S3_URL=s3://bucket/prefix (a bucket this function "
            "may read and write; a prefix of its own)")
    if not url.startswith("s3://"):
        raise ConfigurationError(f"ATHENA_WARM_S3_URL must look like s3://bucket/prefix, got "
                                 f"{url[:80]!r}")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ConfigurationError(f"ATHENA_WARM_S3_URL names an invalid bucket {bucket[:70]!r}: "
                                 "3-63 lowercase letters, digits, dots and hyphens")
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(f"ATHENA_WARM_S3_URL has a prefix S3 keys should not hold "
                                 f"({prefix[:70]!r}): use letters, digits and / - _ .")
    return bucket, prefix


def _parse_gen(raw: bytes) -> Generation | None:
    value = _json(raw)
    if not isinstance(value, dict):
        return None
    return parse_generation(value.get("e"), value.get("g"), value.get("hard"))


def _gen_body(gen: Generation) -> bytes:
    return json.dumps({"e": gen.epoch, "g": str(gen.number), "hard": str(gen.floor)}).encode()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _total(content_range: str) -> int | None:
    """The object's whole size from ``bytes 0-99/1234``; None when it does not say."""
    _, _, total = content_range.rpartition("/")
    return int(total) if total.isdigit() else None


def _ms(seconds: float) -> int:
    return max(1, int(min(seconds, 2**40) * 1000))


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    err = response.get("Error") or {}
    code = str(err.get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code if (code and not code.isdigit()) or status is None else str(status)


def _is_aws_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore", "urllib3", "boto3")) or \
        isinstance(exc, (OSError, _Conflict))


def _is_outage(exc: BaseException) -> bool:
    """The service did not answer, or answered that it is struggling (5xx, throttling)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return not isinstance(exc, _Conflict)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    return int(status) >= 500 or _code(exc) in ("SlowDown", "Throttling", "RequestTimeout")
