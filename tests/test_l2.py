"""L2 against real server processes (valkey-server and redis-server): sharing, invalidation,
chunked versions, damaged payloads, fail-open under kill and hang, TLS, ACL, cluster, and
several processes."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from athena_warm.adapters.redis import ElastiCacheIAMProvider, RedisL2

import athena_warm
from athena_warm import Cache
from athena_warm.exceptions import ConfigurationError, L2Error
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin, declare
from tests.servers import Server, start_cluster

ROOT = Path(__file__).resolve().parent.parent




class Fleet:
    """Several 'containers' in one process: each its own Cache (L1), origin counter, clocks."""

    def __init__(self, duck: Any, url: str, **kw: Any) -> None:
        self.duck, self.url, self.kw = duck, url, kw
        self.clock = FakeClock()
        self.wall = FakeClock(1.7e9)

    def container(self, **kw: Any) -> tuple[Cache, CountingOrigin]:
        origin = CountingOrigin(self.duck)
        opts = {**self.kw, **kw}
        l2 = opts.pop("l2", None) or RedisL2(self.url, clock=self.clock)
        return Cache(origin=origin, l2=l2, clock=self.clock, wall_clock=self.wall, **opts), origin


@pytest.fixture
def fleet(duck: Any, redis_url: str) -> Fleet:
    return Fleet(duck, redis_url)


def test_a_second_container_reads_l2_not_the_origin(fleet: Fleet) -> None:
    declare()
    a, oa = fleet.container()
    b, ob = fleet.container()
    m = a.get("customers")
    assert m.meta.tier == "origin" and oa.calls == 1
    n = b.get("customers")
    assert n.meta.tier == "l2" and n.meta.source == "l2" and ob.calls == 0
    assert dict(n) == dict(m) and n.meta.loaded_at == m.meta.loaded_at == 1.7e9
    assert n.meta.rows == 1000 and n.meta.generation == 0
    assert b.get("customers").meta.tier == "l1"


def test_an_l2_copy_keeps_its_age(fleet: Fleet) -> None:
    declare()
    a, _ = fleet.container()
    a.get("customers")
    fleet.wall.advance(3000)  # 50 minutes later another container starts
    b, ob = fleet.container()
    assert b.get("customers").meta.tier == "l2"
    (status,) = b.status()
    assert status["age_s"] == 3000 and status["expires_in_s"] == 600
    fleet.clock.advance(600)
    fleet.wall.advance(600)  # the copy is an hour old: stale everywhere
    assert b.get("customers").meta.tier == "origin" and ob.calls == 1


def test_invalidation_reaches_warm_containers_within_check_interval(fleet: Fleet) -> None:
    declare()
    a, oa = fleet.container(check_interval=30)
    b, ob = fleet.container(check_interval=30)
    a.get("customers")
    old = b.get("customers")
    assert a.invalidate("customers") == 1
    fleet.clock.advance(29)
    assert b.get("customers") is old  # not looked at yet
    fleet.clock.advance(1)
    new = b.get("customers")
    assert new is not old and new.meta.tier == "origin" and new.meta.generation == 1
    assert ob.calls == 1
    again = a.get("customers")  # a dropped its copy; b already published generation 1
    assert again.meta.tier == "l2" and again.meta.generation == 1 and oa.calls == 1


def test_the_generation_is_checked_at_most_once_per_interval(fleet: Fleet) -> None:
    declare()
    calls: list[str] = []

    class Counting(RedisL2):
        def generation(self, mapping: str) -> int | None:
            calls.append(mapping)
            return super().generation(mapping)

    a, _ = fleet.container(l2=Counting(fleet.url), check_interval=10)
    a.get("customers")
    calls.clear()
    for _ in range(100):
        a.get("customers")
    assert calls == []
    fleet.clock.advance(10)
    for _ in range(100):
        a.get("customers")
    assert calls == ["customers"]


def test_without_l2_invalidation_is_local(duck: Any, clock: FakeClock) -> None:
    declare()
    cache = Cache(origin=CountingOrigin(duck), l2=False, clock=clock)
    cache.get("customers")
    assert cache.invalidate("customers") is None


def test_values_are_chunked_and_versions_never_mix(redis_url: str, redis_server: Server) -> None:
    tier = RedisL2(redis_url, chunk_bytes=65536, grace=30)
    blob_a, blob_b = bytes(range(256)) * 2600, b"B" * 500_000
    gen = tier.generation("m")[0]  # type: ignore[index]
    made = itertools.count(1)  # each copy newer than the last: no fencing in the way

    def write(blob: bytes) -> Any:
        return tier.write("m", "f" * 16, blob, ttl=3600, created_at=next(made), generation=gen,
                          token=None)

    assert write(blob_a) == "written"
    admin = redis_server.client()
    chunks = sorted(k.decode() for k in admin.keys("athena-warm:{m}:ffff*:*:*"))
    assert len(chunks) == 11  # 665,600 bytes in 64 KiB chunks
    from redis.crc import key_slot

    slots = {key_slot(k.encode()) for k in
             [*chunks, "athena-warm:{m}:gen", "athena-warm:{m}:" + "f" * 16 + ":ptr"]}
    assert len(slots) == 1  # one hash tag: one cluster slot per mapping
    assert tier.read("m", "f" * 16) == blob_a
    assert write(blob_b) == "written"
    assert tier.read("m", "f" * 16) == blob_b
    assert all(0 < admin.pttl(k) <= 30_000 for k in chunks)  # the old version expires soon

    seen: set[int] = set()
    errors: list[str] = []
    stop = time.monotonic() + 1.0

    def writer() -> None:
        while time.monotonic() < stop:
            write(blob_a)
            write(blob_b)

    def reader() -> None:
        while time.monotonic() < stop:
            got = tier.read("m", "f" * 16)
            if got not in (blob_a, blob_b):
                errors.append(f"mixed or missing read of {len(got or b'')} bytes")
            else:
                seen.add(len(got))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and seen == {len(blob_a), len(blob_b)}


def _damage(kind: str, admin: Any) -> None:
    (key,) = [k for k in admin.keys("athena-warm:{customers}:*:*:0")]
    value = admin.get(key)
    if kind == "flipped":
        value = value[:-5] + bytes([value[-5] ^ 0x55]) + value[-4:]
    elif kind == "truncated":
        value = value[: len(value) // 2]
    else:
        value = b"\x80\x04\x95 this is not our format, nor anything else" * 4
    admin.set(key, value)


@pytest.mark.parametrize("kind, reason", [("flipped", "checksum mismatch"),
                                          ("truncated", "truncated"),
                                          ("garbage", "not an athena-warm payload")])
def test_a_damaged_payload_is_a_logged_miss_and_is_replaced(
    fleet: Fleet, redis_server: Server, caplog: pytest.LogCaptureFixture, kind: str, reason: str
) -> None:
    declare()
    a, _ = fleet.container()
    a.get("customers")
    _damage(kind, redis_server.client())
    b, ob = fleet.container()
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        m = b.get("customers")
    assert m.meta.tier == "origin" and ob.calls == 1 and len(m) == 1000
    assert f"the L2 copy of customers is unusable ({reason}" in caplog.text
    c, oc = fleet.container()
    assert c.get("customers").meta.tier == "l2" and oc.calls == 0  # b replaced it


def test_signed_payloads(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    declare()
    a, _ = fleet.container(signing_key="key-one")
    a.get("customers")
    b, ob = fleet.container(signing_key="key-two")
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        assert b.get("customers").meta.tier == "origin" and ob.calls == 1
    assert "signature does not match (another key, or tampered)" in caplog.text
    c, oc = fleet.container(signing_key="key-two")
    assert c.get("customers").meta.tier == "l2" and oc.calls == 0
    d, _ = fleet.container()  # no key: refuses signed data rather than trusting it
    assert d.get("customers").meta.tier == "origin"


def test_signing_key_from_environment(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("ATHENA_WARM_SIGNING_KEY", "s3cret")
    monkeypatch.setenv("ATHENA_WARM_REDIS_URL", redis_url)
    monkeypatch.setenv("ATHENA_WARM_CHECK_INTERVAL", "5s")
    cache = Cache(origin="duckdb:/nowhere")
    assert cache.signing_key == b"s3cret" and cache.check_interval == 5
    assert isinstance(cache.l2, RedisL2) and cache.l2.url == redis_url


# -- fail open ---------------------------------------------------------------------------------


def test_a_dead_server_costs_one_timeout_per_reset_window(
    duck: Any, own_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    declare()
    breaker_clock = FakeClock()
    tier = RedisL2(own_server.url, reset_window=30, clock=breaker_clock)
    origin = CountingOrigin(duck)
    cache = Cache(origin=origin, l2=tier)
    assert cache.get("customers").meta.tier == "origin"
    own_server.kill()
    cache.clear()
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        m = cache.get("customers")  # L2 down: origin, no exception
    assert m.meta.tier == "origin" and len(m) == 1000
    assert "L2 generation check of customers failed" in caplog.text
    assert tier.breaker.is_open and tier.breaker.failures == 1
    for _ in range(5):
        cache.clear()
        cache.get("customers")
    assert tier.breaker.failures == 1  # skipped while open: no more timeouts
    own_server.start()  # back, but empty (no persistence)
    breaker_clock.advance(30)
    cache.clear()
    assert cache.get("customers").meta.tier == "origin"  # one trial call closed the breaker ...
    assert not tier.breaker.is_open
    other = Cache(origin=CountingOrigin(duck), l2=RedisL2(own_server.url))
    assert other.get("customers").meta.tier == "l2"  # ... and the reload was published again


def test_a_hung_server_adds_bounded_latency(duck: Any, own_server: Server) -> None:
    declare()
    tier = RedisL2(own_server.url)
    cache = Cache(origin=CountingOrigin(duck), l2=tier)
    cache.get("customers")
    cache.clear()
    own_server.pause()  # SIGSTOP: connections accept nothing, answer nothing
    try:
        start = time.perf_counter()
        m = cache.get("customers")
        hung = time.perf_counter() - start
        start = time.perf_counter()
        cache.clear()
        cache.get("customers")
        after = time.perf_counter() - start
    finally:
        own_server.resume()
    assert m.meta.tier == "origin" and tier.breaker.is_open
    # Socket timeout 0.25 s and one retry: about half a second, paid once per reset window.
    assert hung < 2.0, f"a hung L2 cost {hung:.2f} s"
    print(f"hung L2 added {hung:.2f} s once, then {after * 1000:.1f} ms")
    assert tier.breaker.failures == 1, f"the second read waited too ({after:.2f} s)"


def test_a_socket_killed_while_frozen_reconnects(redis_server: Server, redis_url: str) -> None:
    tier = RedisL2(redis_url)
    assert tier.generation("m")[0].number == 0  # type: ignore[index]  # a connection is idle
    admin = redis_server.client()
    killed = admin.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    assert tier.bump("m").number == 1  # the retry reconnected: no error, no open breaker
    assert tier.generation("m")[0].number == 1  # type: ignore[index]
    assert tier.breaker.failures == 0


def test_bump_without_server_raises(own_server: Server) -> None:
    tier = RedisL2(own_server.url)
    own_server.kill()
    with pytest.raises(L2Error, match="warm containers were NOT told to reload"):
        tier.bump("m")


# -- authentication and TLS --------------------------------------------------------------------


def test_acl_user(own_server: Server, duck: Any, caplog: pytest.LogCaptureFixture) -> None:
    admin = own_server.client()
    admin.execute_command("ACL", "SETUSER", "warm", "on", ">s3cret", "~athena-warm:*",
                          "resetchannels", "-@all", "+@connection", "+get", "+set", "+mget",
                          "+getrange", "+hmget", "+hincrby", "+hset", "+pexpire", "+del", "+eval",
                          "+evalsha", "+info", "+type", "+pttl", "+incr")
    url = f"redis://warm:s3cret@127.0.0.1:{own_server.port}/0"
    declare()
    a = Cache(origin=CountingOrigin(duck), l2=RedisL2(url))
    a.get("customers")
    b_origin = CountingOrigin(duck)
    b = Cache(origin=b_origin, l2=RedisL2(url))
    assert b.get("customers").meta.tier == "l2" and b_origin.calls == 0
    assert a.invalidate("customers") == 1
    assert a.invalidate("customers", hard=True) == 2
    # Every command athena-warm sends is in the documented ACL: nothing failed open.
    assert a.l2.breaker.failures == 0 and b.l2.breaker.failures == 0  # type: ignore[union-attr]
    bad = RedisL2(f"redis://warm:wrong@127.0.0.1:{own_server.port}/0")
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        assert bad.generation("customers") is None  # refused: a miss, logged
    assert "failed" in caplog.text and bad.breaker.is_open


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture
def tls_server(redis_server: Server, tls_files: dict[str, str],
               tmp_path: Path) -> Iterator[Server]:
    try:
        server = Server(redis_server.binary, tmp_path / "tls", "--tls-cert-file",
                        tls_files["cert"], "--tls-key-file", tls_files["key"],
                        "--tls-ca-cert-file", tls_files["ca"], "--tls-auth-clients", "no",
                        tls=True)
    except RuntimeError:
        pytest.skip(f"{Path(redis_server.binary).name} was built without TLS; the redis-server "
                    "run covers TLS (apt-get install redis-server)")
    yield server
    server.stop()


def test_tls_with_verification(tls_server: Server, tls_files: dict[str, str], duck: Any,
                               caplog: pytest.LogCaptureFixture) -> None:
    declare()
    good = RedisL2(tls_server.url, ca_file=tls_files["ca"])
    a = Cache(origin=CountingOrigin(duck), l2=good)
    a.get("customers")
    b_origin = CountingOrigin(duck)
    b = Cache(origin=b_origin, l2=RedisL2(tls_server.url, ca_file=tls_files["ca"]))
    assert b.get("customers").meta.tier == "l2" and b_origin.calls == 0
    # Without our CA the server's certificate is not trusted: verification is on by default.
    untrusting = RedisL2(tls_server.url)
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        assert untrusting.read("customers", a.declaration("customers").fingerprint) is None
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text or "certificate" in caplog.text.lower()


# -- cluster -----------------------------------------------------------------------------------


def test_a_three_node_cluster(redis_server: Server, tmp_path: Path, duck: Any) -> None:
    nodes = start_cluster(redis_server.binary, tmp_path / "cluster")
    try:
        url = nodes[0].url
        names = ["customers", "orders", "accounts", "regions", "plans", "zones"]
        for n in names:
            declare(n)
        a = Cache(origin=CountingOrigin(duck), l2=RedisL2(url))
        b_origin = CountingOrigin(duck)
        b = Cache(origin=b_origin, l2=RedisL2(url))
        for n in names:
            a.get(n)
        for n in names:
            assert b.get(n).meta.tier == "l2"
        assert b_origin.calls == 0
        from redis.cluster import RedisCluster

        assert isinstance(b.l2.client(), RedisCluster)  # type: ignore[union-attr]
        owners = {b.l2.client().keyslot(f"athena-warm:{{{n}}}:gen") * 3 // 16384  # type: ignore
                  for n in names}
        assert len(owners) > 1  # the mappings really live on different nodes
        assert a.invalidate("orders") == 1
    finally:
        for node in nodes:
            node.stop()


# -- across processes --------------------------------------------------------------------------


class Worker:
    def __init__(self, url: str, lake: Path, interval: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.l2_worker", url, str(lake), str(interval)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the worker died"
        return line

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self._line())
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_processes_share_l2_and_one_invalidation_reaches_all(redis_url: str, lake: Path) -> None:
    a, b = Worker(redis_url, lake, 0.2), Worker(redis_url, lake, 0.2)
    try:
        assert a.ask("get customers")["tier"] == "origin"
        got = b.ask("get customers")
        assert got["tier"] == "l2" and got["origin_queries"] == 0 and got["rows"] == 1000
        c = Worker(redis_url, lake, 0.2)
        try:
            assert c.ask("invalidate customers") == {"generation": 1}
        finally:
            c.close()
        time.sleep(0.3)  # past the check interval of both
        after_a, after_b = a.ask("get customers"), b.ask("get customers")
        assert after_a["generation"] == after_b["generation"] == 1
        assert after_a["tier"] in ("origin", "l2") and after_b["tier"] in ("origin", "l2")
    finally:
        a.close()
        b.close()


# -- configuration and IAM ---------------------------------------------------------------------


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="redis:// or rediss://"):
        RedisL2("http://cache:6379")
    with pytest.raises(ConfigurationError, match="IAM_CACHE_NAME"):
        RedisL2("rediss://cache:6379", iam_user="warm")
    monkeypatch.setenv("ATHENA_WARM_REDIS_CLUSTER", "maybe")
    with pytest.raises(ConfigurationError, match="auto, true or false"):
        RedisL2("redis://cache:6379")


def test_tls_options_verify_by_default() -> None:
    opts = RedisL2("rediss://cache:6379", ca_file="/etc/ca.pem").connection_options()
    assert opts["ssl_cert_reqs"] == "required" and opts["ssl_check_hostname"] is True
    assert opts["ssl_ca_certs"] == "/etc/ca.pem"
    assert opts["socket_timeout"] == 0.25 and opts["socket_connect_timeout"] == 0.25
    assert opts["retry"].get_retries() == 1


def test_iam_tokens_are_signed_and_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    clock = FakeClock()
    provider = ElastiCacheIAMProvider(user="warm", cache_name="my-cache", region="eu-west-1",
                                      serverless=True, clock=clock)
    signed: list[str] = []
    sign = provider._sign
    monkeypatch.setattr(provider, "_sign", lambda: signed.append("x") or sign())
    user, token = provider.get_credentials()
    assert user == "warm"
    assert token.startswith("my-cache/?Action=connect&User=warm&ResourceType=ServerlessCache&")
    for part in ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Expires=900",
                 "X-Amz-Credential=AKIDEXAMPLE%2F", "%2Feu-west-1%2Felasticache%2Faws4_request",
                 "X-Amz-Signature=", "X-Amz-Date="):
        assert part in token, part
    clock.advance(599)
    provider.get_credentials()
    assert len(signed) == 1
    clock.advance(1)  # ten minutes: renewed well before the 15-minute lifetime
    provider.get_credentials()
    assert len(signed) == 2
    opts = RedisL2("rediss://my-cache.serverless.euw1.cache.amazonaws.com:6379",
                   iam_user="warm", iam_cache_name="my-cache").connection_options()
    assert isinstance(opts["credential_provider"], ElastiCacheIAMProvider)


def test_redis_is_not_imported_until_l2_is_used(redis_url: str) -> None:
    code = ("import sys, athena_warm; c = athena_warm.Cache(origin='duckdb:/x'); "
            "print(c.l2 is not None, 'redis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**_env(), "ATHENA_WARM_REDIS_URL": redis_url})
    assert out.stdout.split() == ["True", "False"]


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ATHENA_WARM_")}


def test_module_level_invalidate_uses_l2(duck: Any, redis_url: str) -> None:
    declare()
    athena_warm.configure(origin=duck, l2=redis_url)
    athena_warm.get_mapping("customers")
    assert athena_warm.invalidate("customers") == 1


def test_password_auth_and_a_client_passed_in(own_server: Server, duck: Any) -> None:
    password = "pw'with\"quotes@:/"
    own_server.client().config_set("requirepass", password)
    declare()
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{own_server.port}/0"
    a = Cache(origin=CountingOrigin(duck), l2=RedisL2(url))
    a.get("customers")
    import redis

    client = redis.Redis(host="127.0.0.1", port=own_server.port, password=password)
    b_origin = CountingOrigin(duck)
    b = Cache(origin=b_origin, l2=RedisL2(client=client))
    assert b.get("customers").meta.tier == "l2" and b_origin.calls == 0


def test_a_load_overtaken_by_an_invalidation_is_not_published(fleet: Fleet) -> None:
    declare()
    a, _ = fleet.container()

    class Invalidating(CountingOrigin):
        def query(self, sql: str, params: Any, **kw: Any) -> Any:
            a.invalidate("customers")  # the table changes while this query runs
            return super().query(sql, params, **kw)

    b = Cache(origin=Invalidating(fleet.duck), l2=RedisL2(fleet.url), clock=fleet.clock,
              wall_clock=fleet.wall)
    m = b.get("customers")
    assert m.meta.tier == "origin" and m.meta.generation == 0
    c, oc = fleet.container()
    assert c.get("customers").meta.tier == "origin" and oc.calls == 1  # nothing stale in L2


def test_a_lost_generation_counter_still_reloads(fleet: Fleet, redis_server: Server) -> None:
    declare()
    a, oa = fleet.container(check_interval=10)
    a.invalidate("customers")
    a.invalidate("customers")
    assert a.get("customers").meta.generation == 2
    redis_server.client().delete("athena-warm:{customers}:gen")  # evicted, or flushed
    fleet.clock.advance(10)
    m = a.get("customers")  # the counter went backwards: reload, and trust no older copy
    assert (m.meta.tier, m.meta.generation, oa.calls) == ("origin", 0, 2)
    assert a.invalidate("customers") == 1  # and invalidation works again from there
    b, _ = fleet.container()
    assert b.get("customers").meta.generation == 1
