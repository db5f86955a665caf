"""L2 on Redis / Valkey / ElastiCache through redis-py (sync). Fails open.

Keys (one hash tag per mapping, so one mapping lives in one cluster slot)::

    {ns}:{<name>}:gen                        hash: g = generation (HINCRBY on invalidation),
                                             hard = the lowest generation still servable
    {ns}:{<name>}:<fingerprint>:ptr          "<version>:<chunks>", switched last
    {ns}:{<name>}:<fingerprint>:<version>:<i>  chunk i of that version

A write stores every chunk of a new version, then switches the pointer, then shortens the old
version's life to a grace period; a reader reads the pointer and then all chunks in one MGET, so
it never sees chunks of two versions. Every call has short timeouts and at most one retry (which
also reconnects a socket that died while the Lambda container was frozen). A failure opens a
circuit breaker: for ``reset_window`` seconds L2 is skipped without waiting, then one call tries
again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlparse, urlunparse

from .._config import parse_bytes, resolve, resolve_flag, resolve_seconds
from .._events import emit
from .._policy import decode_lease, encode_lease
from ..exceptions import ConfigurationError, L2Error

log = logging.getLogger("athena_warm")
T = TypeVar("T")

IAM_TOKEN_LIFETIME = 900.0  # seconds ElastiCache accepts a signed token
IAM_TOKEN_RENEW_AFTER = 600.0  # renew well before it expires


class CircuitBreaker:
    """Closed -> (a failure) -> open for ``reset_window`` -> one trial call -> closed or open."""

    def __init__(self, reset_window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.reset_window = reset_window
        self.clock = clock
        self._open_until = 0.0
        self._trial = False
        self._lock = threading.Lock()
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def allow(self) -> bool:
        if self._open_until == 0.0:
            return True
        with self._lock:
            if self.clock() < self._open_until or self._trial:
                return False
            self._trial = True  # half-open: exactly one caller tries
            return True

    def success(self) -> None:
        if self._open_until:
            with self._lock:
                self._open_until = 0.0
                self._trial = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self._open_until = self.clock() + self.reset_window
            self._trial = False


class ElastiCacheIAMProvider:
    """redis-py credential provider for ElastiCache IAM authentication.

    The password is a SigV4-presigned ``connect`` request for the cache, made with botocore's
    signer from the function's own credentials, valid 15 minutes; it is renewed after 10.
    """

    def __init__(
        self,
        *,
        user: str,
        cache_name: str,
        region: str | None = None,
        serverless: bool = False,
        session: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user = user
        self.cache_name = cache_name
        self.region = region
        self.serverless = serverless
        self._session = session
        self._clock = clock
        self._token: str | None = None
        self._made_at = 0.0
        self._lock = threading.Lock()

    def get_credentials(self) -> tuple[str, str]:
        with self._lock:
            if self._token is None or self._clock() - self._made_at >= IAM_TOKEN_RENEW_AFTER:
                self._token = self._sign()
                self._made_at = self._clock()
            return self.user, self._token

    async def get_credentials_async(self) -> tuple[str, str]:  # redis-py's interface
        return self.get_credentials()

    def _sign(self) -> str:
        import botocore.session
        from botocore.model import ServiceId
        from botocore.signers import RequestSigner

        session = self._session or botocore.session.get_session()
        region = self.region or session.get_config_variable("region")
        if not region:
            raise ConfigurationError(
                "ElastiCache IAM auth needs a region: set ATHENA_WARM_REGION or AWS_REGION"
            )
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigurationError(
                "ElastiCache IAM auth found no AWS credentials; give the function a role with "
                "elasticache:Connect on the cache and the user"
            )
        query = {"Action": "connect", "User": self.user}
        if self.serverless:
            query["ResourceType"] = "ServerlessCache"
        url = urlunparse(("https", self.cache_name, "/", "", urlencode(query), ""))
        signer = RequestSigner(ServiceId("elasticache"), region, "elasticache", "v4",
                               credentials, session.get_component("event_emitter"))
        signed: str = signer.generate_presigned_url(
            {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
            operation_name="connect", expires_in=int(IAM_TOKEN_LIFETIME), region_name=region,
        )
        return signed.removeprefix("https://")


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
            self.breaker.failure()
            emit(logging.WARNING,
                "athena-warm L2 %s of %s failed (%s: %s); serving from L1/origin, and skipping "
                "L2 for %.0f s", what, mapping, type(exc).__name__, exc, self.reset_window,
                extra={"mapping": mapping, "event": "l2_error", "tier": "l2"},
            )
            return default
        self.breaker.success()
        return result

    # -- the tier --------------------------------------------------------------------------------

    def generation(self, mapping: str) -> int | None:
        """One HMGET of the mapping's generation and hard floor (kept for ``floor()``)."""

        def op(c: Any) -> int | None:
            g, hard = c.hmget(self.key(mapping, "gen"), "g", "hard")
            self._floors[mapping] = int(hard) if hard is not None else 0
            return int(g) if g is not None else 0

        return self._run("generation check", mapping, op, None)

    def floor(self, mapping: str) -> int:
        """The lowest generation still servable, as of the latest generation(): copies below it
        were hard-invalidated and are not served even as stale."""
        return self._floors.get(mapping, 0)

    def read(self, mapping: str, fingerprint: str) -> bytes | None:
        ptr_key = self.key(mapping, fingerprint, "ptr")

        def op(c: Any) -> bytes | None:
            for _ in range(2):  # the pointer may switch between the two reads: try once more
                ptr = c.get(ptr_key)
                if ptr is None:
                    return None
                version, _, count = ptr.decode().partition(":")
                keys = [self.key(mapping, fingerprint, version, str(i)) for i in range(int(count))]
                chunks = c.mget(keys)
                if all(ch is not None for ch in chunks):
                    return b"".join(chunks)
            return None

        return self._run("read", mapping, op, None)

    def head(self, mapping: str, fingerprint: str, size: int = 88) -> bytes | None:
        """The first ``size`` bytes of the stored blob (its header), without the rest."""
        ptr_key = self.key(mapping, fingerprint, "ptr")

        def op(c: Any) -> bytes | None:
            ptr = c.get(ptr_key)
            if ptr is None:
                return None
            version = ptr.decode().partition(":")[0]
            got = c.getrange(self.key(mapping, fingerprint, version, "0"), 0, size - 1)
            return bytes(got) if got else None

        return self._run("read", mapping, op, None)

    def write(self, mapping: str, fingerprint: str, blob: bytes, *, ttl: float) -> bool:
        version = secrets.token_hex(6)
        size = self.chunk_bytes
        chunks = [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]
        ttl_ms = max(1000, int(ttl * 1000))
        ptr_key = self.key(mapping, fingerprint, "ptr")

        def op(c: Any) -> bool:
            pipe = c.pipeline(transaction=False)
            for i, chunk in enumerate(chunks):
                pipe.set(self.key(mapping, fingerprint, version, str(i)), chunk, px=ttl_ms)
            pipe.execute()
            old = c.set(ptr_key, f"{version}:{len(chunks)}", px=ttl_ms, get=True)
            if old:  # readers that took the old pointer have `grace` seconds to finish
                old_version, _, count = old.decode().partition(":")
                pipe = c.pipeline(transaction=False)
                for i in range(int(count)):
                    pipe.pexpire(self.key(mapping, fingerprint, old_version, str(i)),
                                 int(self.grace * 1000))
                pipe.execute()
            return True

        return self._run("write", mapping, op, False)

    def bump(self, mapping: str, *, hard: bool = False) -> int:
        key = self.key(mapping, "gen")
        try:
            if hard:  # the new generation is also the floor, in one step
                return int(self.client().eval(_HARD_BUMP, 1, key))
            return int(self.client().hincrby(key, "g", 1))
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            raise L2Error(
                f"could not bump the generation of {mapping!r} in L2 ({type(exc).__name__}: "
                f"{exc}); warm containers were NOT told to reload. Check ATHENA_WARM_REDIS_URL "
                "and that the cache is reachable from here, then run the invalidation again."
            ) from exc

    # -- leases (fleet-wide single-flight) --------------------------------------------------------

    def acquire(self, mapping: str, fingerprint: str, token: str, *, ttl: float) -> bool | None:
        key = self.key(mapping, fingerprint, "lease")
        value = encode_lease(token, {"at": time.time()})
        return self._run("lease", mapping,
                         lambda c: bool(c.set(key, value, nx=True, px=max(1, int(ttl * 1000)))),
                         None)

    def info(self, mapping: str, fingerprint: str) -> dict[str, Any] | None:
        key = self.key(mapping, fingerprint, "lease")
        return self._run("lease read", mapping, lambda c: decode_lease(c.get(key)), None)

    def update(self, mapping: str, fingerprint: str, token: str, value: dict[str, Any],
               *, ttl: float | None = None) -> bool:
        key = self.key(mapping, fingerprint, "lease")
        px = "" if ttl is None else str(max(1, int(ttl * 1000)))
        return bool(self._run("lease update", mapping, lambda c: c.eval(
            _LEASE_UPDATE, 1, key, token, encode_lease(token, value), px), 0))

    def release(self, mapping: str, fingerprint: str, token: str) -> bool:
        key = self.key(mapping, fingerprint, "lease")
        return bool(self._run("lease release", mapping,
                              lambda c: c.eval(_LEASE_RELEASE, 1, key, token), 0))

    def delete(self, mapping: str, fingerprint: str) -> None:
        """Remove the pointer (the chunks expire). For tests and operators."""
        self.client().delete(self.key(mapping, fingerprint, "ptr"))


# The lease value starts with "<token> ": compare it without parsing, then act.
_LEASE_HELD = "local v = redis.call('GET', KEYS[1]) " \
    "if not v or string.sub(v, 1, string.len(ARGV[1]) + 1) ~= ARGV[1] .. ' ' then return 0 end "
_LEASE_UPDATE = _LEASE_HELD + (
    "if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') "
    "else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return 1"
)
_LEASE_RELEASE = _LEASE_HELD + "return redis.call('DEL', KEYS[1])"
_HARD_BUMP = ("local g = redis.call('HINCRBY', KEYS[1], 'g', 1) "
              "redis.call('HSET', KEYS[1], 'hard', g) return g")


def _is_redis_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, (redis.RedisError, OSError, ConnectionError, TimeoutError))
