"""L2 on Redis / Valkey / ElastiCache through redis-py (sync). Fails open.

Keys (one hash tag per mapping, so one mapping lives in one cluster slot)::

    {ns}:{<name>}:gen                        hash: e = epoch (random, new when the counter is
                                             created), g = generation (HINCRBY on
                                             invalidation), hard = the lowest servable one
    {ns}:{<name>}:<fingerprint>:ptr          "<version>:<chunks>:<epoch>:<generation>:
                                             <created_ms>", switched last
    {ns}:{<name>}:<fingerprint>:<version>:<i>  chunk i of that version
    {ns}:{<name>}:<fingerprint>:lease        "<token> <json>": the refresher (fenced)
    {ns}:{<name>}:<fingerprint>:fence        the fencing counter (INCR at each acquisition)

A write stores every chunk of a new version, then switches the pointer, then shortens the old
version's life to a grace period. The switch is one script that checks, on the server, that
the generation has not moved on and that the writer still holds the lease or has a newer copy
(so a holder that outlived its lease never overwrites newer data). A reader reads the pointer
and then all chunks in one MGET, so it never sees chunks of two versions. Every call has short
timeouts and at most one retry (which also reconnects a socket that died while the Lambda
container was frozen). A failure opens a circuit breaker: for ``reset_window`` seconds L2 is
skipped without waiting, then one call tries again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

from .._config import parse_bytes, resolve, resolve_flag, resolve_seconds
from .._events import brief, emit, l2_corrupt
from ..exceptions import ConfigurationError, L2Error
from ..l2 import (
    MAX_CHUNKS,
    MIN_CHUNK_BYTES,
    Generation,
    Lease,
    Pointer,
    WriteOutcome,
    new_epoch,
    parse_generation,
)
from ._breaker import CircuitBreaker
from ._elasticache_iam import ElastiCacheIAMProvider
from ._redis_scripts import (
    _ACQUIRE,
    _BUMP,
    _DELETE_IF,
    _GEN_PEEK,
    _GEN_SEED,
    _GENERATION,
    _LEASE_RELEASE,
    _LEASE_UPDATE,
    _SWITCH,
)

log = logging.getLogger("athena_warm")
T = TypeVar("T")

MAX_TTL_MS = 2**40  # about 35 years: longer expiries are clamped (Redis refuses huge ones)


class RedisL2:
    """The shared tier on Redis/Valkey. Options: argument > ``ATHENA_WARM_*`` > default."""

    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        namespace: str | None = None,
        cluster: bool | None = None,
        ca_file: str | None = None,
        iam_user: str | None = None,
        iam_cache_name: str | None = None,
        iam_serverless: bool | None = None,
        region: str | None = None,
        connect_timeout: str | float | None = None,
        socket_timeout: str | float | None = None,
        reset_window: str | float | None = None,
        chunk_bytes: str | int | None = None,
        grace: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url: str | None = resolve(url, "REDIS_URL", None)
        if client is None and not self.url:
            raise ConfigurationError(
                "L2 needs ATHENA_WARM_REDIS_URL (redis://host:6379 or rediss://host:6379 for "
                "TLS) or a redis client"
            )
        if self.url:
            try:
                urlparse(self.url).port  # noqa: B018  (raises on a port that is not a number)
            except ValueError as exc:
                raise ConfigurationError(f"ATHENA_WARM_REDIS_URL has a bad port: {exc}") from None
        if self.url and urlparse(self.url).scheme not in ("redis", "rediss"):
            raise ConfigurationError(
                f"ATHENA_WARM_REDIS_URL must start with redis:// or rediss:// (TLS), got "
                f"{urlparse(self.url).scheme}://"
            )
        self.namespace: str = resolve(namespace, "REDIS_NAMESPACE", "athena-warm")
        mode = resolve(None if cluster is None else str(cluster).lower(), "REDIS_CLUSTER", "auto")
        if mode not in ("auto", "true", "false"):
            raise ConfigurationError(f"ATHENA_WARM_REDIS_CLUSTER={mode!r}: use auto, true or false")
        self.cluster_mode = mode
        self.ca_file: str | None = resolve(ca_file, "REDIS_CA_FILE", None)
        self.iam_user: str | None = resolve(iam_user, "REDIS_IAM_USER", None)
        self.iam_cache_name: str | None = resolve(iam_cache_name, "REDIS_IAM_CACHE_NAME", None)
        self.iam_serverless = resolve_flag(iam_serverless, "REDIS_IAM_SERVERLESS", False)
        self.region = resolve(region, "REGION", None)
        if self.iam_user and not self.iam_cache_name:
            raise ConfigurationError(
                "ElastiCache IAM auth needs the cache name too: ATHENA_WARM_REDIS_IAM_CACHE_NAME"
            )
        self.connect_timeout = resolve_seconds(connect_timeout, "REDIS_CONNECT_TIMEOUT", 0.25)
        self.socket_timeout = resolve_seconds(socket_timeout, "REDIS_SOCKET_TIMEOUT", 0.25)
        self.reset_window = resolve_seconds(reset_window, "L2_RESET_WINDOW", 30.0)
        self.chunk_bytes = (parse_bytes(chunk_bytes) if chunk_bytes is not None else
                            resolve(None, "L2_CHUNK_BYTES", 1 << 20, parse_bytes))
        if self.chunk_bytes < MIN_CHUNK_BYTES:
            raise ConfigurationError(
                f"ATHENA_WARM_L2_CHUNK_BYTES={self.chunk_bytes}: chunks must be at least "
                f"{MIN_CHUNK_BYTES} bytes (readers bound the chunk count by it)")
        self.grace = grace
        self.breaker = CircuitBreaker(self.reset_window, clock)
        self._client = client
        self._client_lock = threading.Lock()
        self._floors: dict[str, int] = {}

    # -- connection ------------------------------------------------------------------------------

    def connection_options(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        opts: dict[str, Any] = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "retry": Retry(NoBackoff(), 1),  # one retry, which also reconnects a dead socket
            "health_check_interval": 30,
            "client_name": "athena-warm",
        }
        if self.url and self.url.startswith("rediss://"):
            opts.update(ssl_cert_reqs="required", ssl_check_hostname=True)
            if self.ca_file:
                opts["ssl_ca_certs"] = self.ca_file
        if self.iam_user:
            assert self.iam_cache_name is not None
            opts["credential_provider"] = ElastiCacheIAMProvider(
                user=self.iam_user, cache_name=self.iam_cache_name, region=self.region,
                serverless=bool(self.iam_serverless),
            )
        return opts

    def client(self) -> Any:
        """The redis-py client, made on first use (standalone or cluster)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        import redis
        from redis.cluster import RedisCluster

        assert self.url is not None
        opts = self.connection_options()
        cluster = self.cluster_mode == "true"
        if self.cluster_mode == "auto":
            probe = redis.Redis.from_url(self.url, **opts)
            try:
                cluster = bool(probe.info("cluster").get("cluster_enabled"))
            finally:
                probe.close()
        if cluster:
            opts.pop("health_check_interval", None)
            return RedisCluster.from_url(self.url, **opts)
        return redis.Redis.from_url(self.url, **opts)

    def close(self) -> None:
        """Close the connections (before a snapshot; they are re-made on next use)."""
        with self._client_lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None

    # -- keys ------------------------------------------------------------------------------------

    def key(self, mapping: str, *parts: str) -> str:
        return ":".join([self.namespace, "{" + mapping + "}", *parts])

    # -- fail-open plumbing ----------------------------------------------------------------------

    def _run(self, what: str, mapping: str, fn: Callable[[Any], T], default: T) -> T:
        if not self.breaker.allow():
            return default
        try:
            result = fn(self.client())
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            if "WRONGTYPE" in str(exc):  # a key of the wrong type: damage, not an outage
                l2_corrupt(mapping, f"{what}: a key holds the wrong Redis type")
                return default
            if _is_refusal(exc):  # the server answered: no outage, keep using it
                emit(logging.WARNING, "l2_error",
                     "athena-warm L2 %s of %s was refused (%s)", what, mapping, brief(exc),
                     extra={"mapping": mapping, "tier": "l2"})
                return default
            self.breaker.failure()
            emit(logging.WARNING, "l2_error",
                "athena-warm L2 %s of %s failed (%s); serving from L1/origin, and skipping "
                "L2 for %.0f s", what, mapping, brief(exc), self.reset_window,
                extra={"mapping": mapping, "tier": "l2"},
            )
            return default
        self.breaker.success()
        return result

    # -- the generation ----------------------------------------------------------------------------

    def generation(self, mapping: str) -> tuple[Generation, str] | None:
        """The generation (epoch, number, floor) in one script: a missing or malformed counter
        is (re)created with a new epoch, atomically."""

        def op(c: Any) -> tuple[Generation, str] | None:
            e, g, h, how = c.eval(_GENERATION, 1, self.key(mapping, "gen"), new_epoch())
            gen = parse_generation(e, g, h)
            return None if gen is None else (gen, _text(how))

        return self._run("generation check", mapping, op, None)

    def peek_generation(self, mapping: str) -> Generation | Literal[False] | None:
        """The counter as stored, without creating it: False when absent or malformed."""

        def op(c: Any) -> Generation | Literal[False]:
            got = c.eval(_GEN_PEEK, 1, self.key(mapping, "gen"))
            return (parse_generation(*got) if got else None) or False

        return self._run("generation check", mapping, op, None)

    def seed_generation(self, mapping: str, gen: Generation, *,
                        force: bool = False) -> Generation | None:
        """Set the counter to ``gen`` where it is absent or malformed (``force``: also where
        it is of another epoch or behind); what it holds after. None if unreachable."""

        def op(c: Any) -> Generation | None:
            got = c.eval(_GEN_SEED, 1, self.key(mapping, "gen"), gen.epoch, str(gen.number),
                         str(gen.floor), "1" if force else "0")
            return parse_generation(*got)

        return self._run("generation seed", mapping, op, None)

    def reachable(self) -> bool:
        """False while the circuit breaker is open (a call failed within reset_window)."""
        return not self.breaker.is_open

    def bump(self, mapping: str, *, hard: bool = False) -> Generation:
        key = self.key(mapping, "gen")
        try:
            e, g, h = self.client().eval(_BUMP, 1, key, new_epoch(), "1" if hard else "0")
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            raise L2Error(
                f"could not bump the generation of {mapping!r} in L2 ({type(exc).__name__}: "
                f"{exc}); warm containers were NOT told to reload. Check ATHENA_WARM_REDIS_URL "
                "and that the cache is reachable from here, then run the invalidation again."
            ) from exc
        gen = parse_generation(e, g, h)
        if gen is None:
            raise L2Error(f"the generation of {mapping!r} came back malformed after a bump "
                          f"({e!r}, {g!r}, {h!r}); run the invalidation again")
        return gen

    # -- copies ------------------------------------------------------------------------------------

    def _pointer(self, c: Any, mapping: str, fingerprint: str) -> Pointer | None:
        raw = c.get(self.key(mapping, fingerprint, "ptr"))
        if raw is None:
            return None
        ptr = Pointer.decode(raw)
        if ptr is None:
            l2_corrupt(mapping, f"malformed pointer {bytes(raw)[:40]!r}")
        return ptr

    def read(self, mapping: str, fingerprint: str, *,
             max_chunks: int = MAX_CHUNKS) -> bytes | None:
        def op(c: Any) -> bytes | None:
            missing = 0
            for _ in range(2):  # the pointer may switch between the two reads: try once more
                ptr = self._pointer(c, mapping, fingerprint)
                if ptr is None:
                    return None
                if ptr.chunks > max_chunks:
                    l2_corrupt(mapping, f"the pointer claims {ptr.chunks} chunks, more than a "
                                      f"copy of the declared size has ({max_chunks})")
                    return None
                keys = [self.key(mapping, fingerprint, ptr.version, str(i))
                        for i in range(ptr.chunks)]
                chunks = c.mget(keys)
                if all(isinstance(ch, bytes) for ch in chunks):
                    return b"".join(chunks)
                missing = sum(1 for ch in chunks if not isinstance(ch, bytes))
            l2_corrupt(mapping, f"{missing} of the copy's chunks are missing")
            return None

        return self._run("read", mapping, op, None)

    def head(self, mapping: str, fingerprint: str, size: int) -> bytes | None:
        """The first ``size`` bytes of the stored blob (its header), without the rest."""

        def op(c: Any) -> bytes | None:
            ptr = self._pointer(c, mapping, fingerprint)
            if ptr is None:
                return None
            got = c.getrange(self.key(mapping, fingerprint, ptr.version, "0"), 0, size - 1)
            if not got:
                l2_corrupt(mapping, "the copy's first chunk is missing (its version is gone)")
                return None
            return bytes(got)

        return self._run("read", mapping, op, None)

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float,
              created_at: float, generation: Generation, token: str | None) -> WriteOutcome | None:
        """Every chunk of a new version, then the pointer switch, fenced in one script."""
        version = secrets.token_hex(6)
        size = self.chunk_bytes
        chunks = [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]
        ttl_ms = min(max(1000, int(ttl * 1000)), MAX_TTL_MS)
        ptr = Pointer(version, len(chunks), generation.epoch, generation.number,
                      int(created_at * 1000))

        def op(c: Any) -> WriteOutcome:
            pipe = c.pipeline(transaction=False)
            for i, chunk in enumerate(chunks):
                pipe.set(self.key(mapping, fingerprint, version, str(i)), chunk, px=ttl_ms)
            pipe.execute()
            got = _text(c.eval(
                _SWITCH, 3, self.key(mapping, fingerprint, "ptr"),
                self.key(mapping, fingerprint, "lease"), self.key(mapping, "gen"),
                ptr.encode(), token or "", str(ptr.created_ms), str(ttl_ms), generation.epoch,
                str(generation.number)))
            outcome, _, old_raw = got.partition(":")
            if outcome != "written":
                pipe = c.pipeline(transaction=False)
                for i in range(len(chunks)):
                    pipe.delete(self.key(mapping, fingerprint, version, str(i)))
                pipe.execute()
                return "fenced" if outcome == "fenced" else "invalidated"
            old = Pointer.decode(old_raw)
            if old is not None:  # readers that took the old pointer have `grace` s to finish
                pipe = c.pipeline(transaction=False)
                for i in range(old.chunks):
                    pipe.pexpire(self.key(mapping, fingerprint, old.version, str(i)),
                                 int(self.grace * 1000))
                pipe.execute()
            return "written"

        return self._run("write", mapping, op, None)

    def renew(self, mapping: str, fingerprint: str, note: str, *, created_ms: int,
              ttl: float) -> bool | None:
        """Extend the copy made at ``created_ms`` (pointer and chunks) and store the note beside
        it. Two round trips, no script: a pointer switched in between only means an old
        version's chunks live longer (the note names its copy, so it never renews another)."""
        px = min(max(1000, int(ttl * 1000)), MAX_TTL_MS)

        def op(c: Any) -> bool:
            ptr = self._pointer(c, mapping, fingerprint)
            if ptr is None or ptr.created_ms != created_ms:
                return False
            pipe = c.pipeline(transaction=False)
            pipe.pexpire(self.key(mapping, fingerprint, "ptr"), px)
            for i in range(ptr.chunks):
                pipe.pexpire(self.key(mapping, fingerprint, ptr.version, str(i)), px)
            pipe.set(self.key(mapping, fingerprint, "note"), note, px=px)
            pipe.execute()
            return True

        return self._run("renew", mapping, op, None)

    def note(self, mapping: str, fingerprint: str) -> str | None:
        def op(c: Any) -> str | None:
            raw = c.get(self.key(mapping, fingerprint, "note"))
            if not isinstance(raw, bytes) or len(raw) > 2048:
                return None
            try:
                return raw.decode("ascii")
            except UnicodeDecodeError:
                return None

        return self._run("note read", mapping, op, None)

    def delete(self, mapping: str, fingerprint: str) -> None:
        """Remove the pointer (the chunks expire). For tests and operators."""
        self.client().delete(self.key(mapping, fingerprint, "ptr"))

    # -- leases (fleet-wide single-flight, fenced) ---------------------------------------------

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float,
                at: float) -> Lease | Literal[False] | None:
        value = Lease(token=token, fence=0, at=at).encode()

        def op(c: Any) -> Lease | Literal[False]:
            fence, removed = c.eval(_ACQUIRE, 2, self.key(mapping, fingerprint, "lease"),
                                    self.key(mapping, fingerprint, "fence"), value,
                                    str(min(max(1, int(ttl * 1000)), MAX_TTL_MS)))
            if removed:
                l2_corrupt(mapping, "a lease that was not a lease (another type, or no expiry); "
                                  "removed")
            if not fence:
                return False
            return Lease(token=token, fence=int(fence), at=at)

        return self._run("lease", mapping, op, None)

    def info(self, mapping: str, fingerprint: str) -> Lease | None:
        key = self.key(mapping, fingerprint, "lease")

        def op(c: Any) -> Lease | None:
            raw = c.get(key)
            if raw is None:
                return None
            lease = Lease.decode(raw)
            if lease is None:  # nobody can hold a malformed lease: remove exactly that value
                l2_corrupt(mapping, f"malformed lease {bytes(raw)[:40]!r}; removed")
                c.eval(_DELETE_IF, 1, key, raw)
            return lease

        return self._run("lease read", mapping, op, None)

    def update(self, mapping: str, fingerprint: str, lease: Lease, *,
               ttl: float | None = None) -> bool:
        key = self.key(mapping, fingerprint, "lease")
        px = "" if ttl is None else str(min(max(1, int(ttl * 1000)), MAX_TTL_MS))
        return bool(self._run("lease update", mapping, lambda c: c.eval(
            _LEASE_UPDATE, 1, key, lease.token, lease.encode(), px), 0))

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        key = self.key(mapping, fingerprint, "lease")
        return bool(self._run("lease release", mapping,
                              lambda c: c.eval(_LEASE_RELEASE, 1, key, token), 0))


def _text(raw: Any) -> str:
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


def _is_refusal(exc: BaseException) -> bool:
    """An error reply (a command refused), as opposed to a connection that failed."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, ResponseError) and not isinstance(
        exc, (RedisConnectionError, RedisTimeoutError))


def _is_redis_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, (redis.RedisError, OSError, ConnectionError, TimeoutError))
