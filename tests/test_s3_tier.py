"""The S3 shared tier (moto) and Redis over S3 (a real server + moto): configuration, the
conditional writes themselves, hostile objects, a fleet on S3 alone, and the layered tier that
makes a Redis loss cost zero origin queries. The tier contract itself is in
test_tier_contract.py; the multi-process fleet on S3 in test_fleet.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2
from athena_warm.adapters.s3 import S3Tier, _Conflict

from athena_warm import Cache
from athena_warm._layered import LayeredTier
from athena_warm.exceptions import ConfigurationError, L2Error, OriginError
from athena_warm.l2 import open_l2
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin, declare
from tests.servers import Server, free_port

BUCKET = "fleet-cache"
URL = f"s3://{BUCKET}/athena-warm"


@pytest.fixture
def s3(aws: None) -> Iterator[Any]:
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client


def objects(s3: Any) -> dict[str, int]:
    return {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


class Fleet:
    """Containers in one process sharing one tier, each with its own L1 and origin counter."""

    def __init__(self, duck: Any, tier: Any) -> None:
        self.duck, self.tier = duck, tier
        self.clock = FakeClock()
        self.wall = FakeClock(1.7e9)

    def container(self, **kw: Any) -> tuple[Cache, CountingOrigin]:
        origin = CountingOrigin(self.duck)
        return Cache(origin=origin, l2=kw.pop("l2", self.tier), clock=self.clock,
                     wall_clock=self.wall, **kw), origin


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "says"), [
    ("s3://", "invalid bucket"), ("s3://A_Bucket/x", "invalid bucket"),
    ("https://bucket/x", "must look like s3://bucket/prefix"),
    ("s3://bucket/pre fix", "prefix S3 keys should not hold"),
])
def test_bad_s3_urls_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        S3Tier(url)


def test_open_l2_picks_the_tiers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_l2() is None
    monkeypatch.setenv("ATHENA_WARM_S3_URL", URL)
    alone = open_l2()
    assert isinstance(alone, S3Tier) and (alone.bucket, alone.prefix) == (BUCKET, "athena-warm")
    monkeypatch.setenv("ATHENA_WARM_REDIS_URL", "redis://127.0.0.1:6379/0")
    both = open_l2()
    assert isinstance(both, LayeredTier) and isinstance(both.fast, RedisL2)
    assert isinstance(open_l2("s3://other/p"), S3Tier)  # an argument wins, S3 alone


def test_a_bad_s3_url_turns_l2_off_with_one_error(monkeypatch: pytest.MonkeyPatch, duck: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ATHENA_WARM_S3_URL", "s3://No_Such/x")
    with caplog.at_level(logging.ERROR, logger="athena_warm"):
        cache = Cache(origin=CountingOrigin(duck))
    assert cache.l2 is None
    assert "ATHENA_WARM_S3_URL" in caplog.text and "invalid bucket" in caplog.text


def test_boto3_is_not_imported_until_s3_is_used() -> None:
    import subprocess
    import sys

    code = ("import sys; from athena_warm import open_l2; "
            "t = open_l2('s3://bucket/p'); print('boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- the conditional writes ------------------------------------------------------------------------


def test_writes_are_compare_and_swap(s3: Any) -> None:
    """What every lease, bump and publish rests on: S3 refuses a create over an existing object
    and a replace of an object that changed since it was read (moto enforces both)."""
    tier = S3Tier(URL)
    c = tier.client()
    tier._put(c, "athena-warm/x", b"one", None)
    with pytest.raises(_Conflict):
        tier._put(c, "athena-warm/x", b"two", None)  # If-None-Match: *
    etag = s3.head_object(Bucket=BUCKET, Key="athena-warm/x")["ETag"]
    tier._put(c, "athena-warm/x", b"three", etag)  # If-Match: the ETag read
    with pytest.raises(_Conflict):
        tier._put(c, "athena-warm/x", b"four", etag)  # that ETag is gone
    assert s3.get_object(Bucket=BUCKET, Key="athena-warm/x")["Body"].read() == b"three"


def test_a_lease_taken_between_read_and_write_is_not_taken_twice(s3: Any) -> None:
    """Two containers read 'nobody holds it' at once; only the first write lands."""
    clock = FakeClock(1.7e9)
    a, b = S3Tier(URL, clock=clock), S3Tier(URL, clock=clock)
    seen = a._lease(a.client(), "m", "fp")  # a reads: free
    assert isinstance(b.acquire("m", "fp", "bbbbbbbb", ttl=30, at=1.0), object)
    with pytest.raises(_Conflict):  # a writes on what it read: refused
        a._put_lease(a.client(), "m", "fp", None, seen[1] + 1, 0, seen[3])
    assert a.acquire("m", "fp", "aaaaaaaa", ttl=30, at=1.0) is False
    assert a.info("m", "fp").token == "bbbbbbbb"  # type: ignore[union-attr]


def test_fencing_numbers_grow_even_when_the_lease_object_is_lost(s3: Any) -> None:
    clock = FakeClock(1.7e9)
    tier = S3Tier(URL, clock=clock)
    first = tier.acquire("m", "fp", "11111111", ttl=30, at=1.0)
    assert tier.release("m", "fp", "11111111")
    second = tier.acquire("m", "fp", "22222222", ttl=30, at=2.0)
    assert tier.release("m", "fp", "22222222")
    s3.delete_object(Bucket=BUCKET, Key="athena-warm/m/fp/lease")
    clock.advance(1)
    third = tier.acquire("m", "fp", "33333333", ttl=30, at=3.0)
    assert first and second and third
    assert first.fence < second.fence < third.fence  # type: ignore[union-attr]


def test_a_bump_that_collides_with_another_is_retried_and_both_count(s3: Any) -> None:
    """Two invalidations at once: the one whose write lost the race reads again and bumps on
    top of the other's (interleaved by hand: moto in one process is not thread-safe)."""
    tier, other = S3Tier(URL), S3Tier(URL)
    tier.generation("m")
    real_get = tier._get
    raced = []

    def get_then_race(c: Any, key: str, **kw: Any) -> Any:
        got = real_get(c, key, **kw)
        if key.endswith("/gen") and not raced:
            raced.append(other.bump("m"))  # lands between our read and our write
        return got

    tier._get = get_then_race  # type: ignore[method-assign]
    assert tier.bump("m").number == 2 and raced[0].number == 1


# -- hostile objects -----------------------------------------------------------------------------


def test_oversized_and_damaged_objects_are_misses(s3: Any) -> None:
    tier = S3Tier(URL)
    gen, _ = tier.generation("m")  # type: ignore[misc]
    s3.put_object(Bucket=BUCKET, Key="athena-warm/m/fp/lease", Body=b"{" * 1_000_000)
    assert tier.info("m", "fp") is None
    assert tier.acquire("m", "fp", "11111111", ttl=30, at=1.0)  # and it is taken over
    s3.put_object(Bucket=BUCKET, Key="athena-warm/m/gen", Body=b"x" * 1_000_000)
    again, how = tier.generation("m")  # type: ignore[misc]
    assert how == "repaired" and again.epoch != gen.epoch
    # A copy bigger than its header says (max_chunks) is not downloaded.
    assert tier.write("m", "fp", b"y" * 200_000, ttl=60, created_at=1.0, generation=again,
                      token=None) == "written"
    assert tier.read("m", "fp", max_chunks=1) is None
    assert tier.read("m", "fp") == b"y" * 200_000
    # A copy without its pointer metadata (written by hand, or by something else) is a miss.
    s3.put_object(Bucket=BUCKET, Key="athena-warm/m/fp/copy", Body=b"hand written")
    assert tier.read("m", "fp") is None and tier.head("m", "fp", 4) is None
    s3.put_object(Bucket=BUCKET, Key="athena-warm/m/fp/note", Body=b'{"note": 5}')
    assert tier.note("m", "fp") is None


def test_access_denied_fails_open_with_a_hint(s3: Any, caplog: pytest.LogCaptureFixture) -> None:
    tier = S3Tier("s3://no-such-bucket-here/p")
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        assert tier.generation("m") is None
        assert tier.read("m", "fp") is None
    assert "NoSuchBucket" in caplog.text and "s3:GetObject/PutObject" in caplog.text
    with pytest.raises(L2Error, match="NOT told to reload"):
        tier.bump("m")


# -- a fleet on S3 alone ---------------------------------------------------------------------------


def test_a_fleet_shares_copies_and_invalidations_through_s3(s3: Any, duck: Any) -> None:
    declare()
    fleet = Fleet(duck, S3Tier(URL))
    a, oa = fleet.container(check_interval=30)
    b, ob = fleet.container(check_interval=30)
    m = a.get("customers")
    assert m.meta.tier == "origin" and oa.calls == 1
    n = b.get("customers")
    assert n.meta.tier == "l2" and ob.calls == 0 and dict(n) == dict(m)
    assert set(objects(s3)) == {"athena-warm/customers/gen",
                                f"athena-warm/customers/{m.meta.fingerprint}/copy",
                                f"athena-warm/customers/{m.meta.fingerprint}/lease"}
    assert a.invalidate("customers") == 1
    fleet.clock.advance(31)  # b looks at the generation within check_interval
    assert b.get("customers").meta.tier == "origin" and ob.calls == 1


# -- Redis over S3 ---------------------------------------------------------------------------------


@pytest.fixture
def layered(s3: Any, own_server: Server) -> Iterator[tuple[LayeredTier, Server]]:
    yield LayeredTier(RedisL2(own_server.url), S3Tier(URL)), own_server


def test_redis_restarted_empty_costs_zero_origin_queries(
        layered: tuple[LayeredTier, Server], duck: Any) -> None:
    tier, server = layered
    declare()
    fleet = Fleet(duck, tier)
    a, oa = fleet.container()
    first = a.get("customers")
    assert first.meta.tier == "origin" and oa.calls == 1
    gen = tier.durable.generation("customers")
    server.restart()  # killed, and back with nothing in it
    assert server.client().dbsize() == 0
    b, ob = fleet.container(l2=LayeredTier(RedisL2(server.url), S3Tier(URL)))
    got = b.get("customers")
    assert got.meta.tier == "l2" and ob.calls == 0 and dict(got) == dict(first)
    # Redis's counter came back from S3's, not as a new epoch that would orphan the copies.
    assert tier.fast.peek_generation("customers") == gen[0]  # type: ignore[index]


def test_invalidation_reaches_both_and_survives_a_flush(
        layered: tuple[LayeredTier, Server], duck: Any) -> None:
    tier, server = layered
    declare()
    fleet = Fleet(duck, tier)
    a, _ = fleet.container()
    a.get("customers")
    assert a.invalidate("customers") == 1
    assert tier.fast.peek_generation("customers").number == 1  # type: ignore[union-attr]
    assert tier.durable.generation("customers")[0].number == 1  # type: ignore[index]
    server.client().flushall()
    got = tier.generation("customers")
    assert got is not None and got[0].number == 1  # not a new epoch at 0: still invalidated
    b, ob = fleet.container()
    assert b.get("customers").meta.tier == "origin" and ob.calls == 1  # the copy is gen 0


def test_an_invalidation_that_reaches_s3_but_not_redis_says_so(
        layered: tuple[LayeredTier, Server]) -> None:
    tier, server = layered
    tier.generation("m")
    server.kill()
    with pytest.raises(L2Error, match="Redis could not be reached"):
        tier.bump("m")


def test_with_redis_down_s3_serves_and_holds_the_leases(
        layered: tuple[LayeredTier, Server], duck: Any) -> None:
    tier, server = layered
    declare()
    fleet = Fleet(duck, tier)
    a, _ = fleet.container()
    a.get("customers")
    server.kill()
    dead = LayeredTier(RedisL2(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2),
                       S3Tier(URL))
    b, ob = fleet.container(l2=dead)
    assert b.get("customers").meta.tier == "l2" and ob.calls == 0
    lease = dead.acquire("customers", "fp", "aaaaaaaa", ttl=30, at=1.0)
    assert lease and dead.acquire("customers", "fp", "bbbbbbbb", ttl=30, at=1.0) is False
    assert tier.durable.info("customers", "fp").token == "aaaaaaaa"  # type: ignore[union-attr]
    assert dead.release("customers", "fp", "aaaaaaaa")


def test_a_failing_origin_serves_the_s3_copy_to_a_cold_container(
        layered: tuple[LayeredTier, Server], duck: Any) -> None:
    tier, server = layered
    declare()
    fleet = Fleet(duck, tier)
    a, _ = fleet.container()
    first = a.get("customers")
    server.client().flushall()  # Redis lost everything
    fleet.wall.advance(2 * 3600)  # the copy is past its 1 h TTL, within its 1 d max_stale
    b, ob = fleet.container()
    ob.fail = OriginError("Athena is down")
    got = b.get("customers")
    assert dict(got) == dict(first) and got.meta.tier == "l2"
    assert got.meta.loaded_at == first.meta.loaded_at  # the old copy, 2 h old
    assert ob.calls == 1  # it tried, failed, and served the stale copy


def test_the_s3_objects_are_json_and_the_copy_is_the_l2_format(
        layered: tuple[LayeredTier, Server], duck: Any, s3: Any) -> None:
    tier, _ = layered
    declare()
    a, _ = Fleet(duck, tier).container()
    m = a.get("customers")
    gen = json.loads(s3.get_object(Bucket=BUCKET, Key="athena-warm/customers/gen")["Body"].read())
    assert set(gen) == {"e", "g", "hard"}
    copy = s3.get_object(Bucket=BUCKET, Key=f"athena-warm/customers/{m.meta.fingerprint}/copy")
    assert copy["Metadata"]["aw-pointer"].count(":") == 4
    assert copy["ContentLength"] < 20_000  # 1,000 rows, compressed


def count_requests(tier: S3Tier) -> list[str]:
    seen: list[str] = []
    tier.client().meta.events.register(
        "before-send.s3.*", lambda request, **_: seen.append(request.method))
    return seen


@pytest.mark.parametrize("whole", [1 << 20, 100])
def test_a_cold_read_is_two_requests_when_the_copy_is_small(
        s3: Any, duck: Any, whole: int) -> None:
    """The generation, then the copy: head() downloads a copy under WHOLE_BYTES whole and
    read() uses it; a bigger one costs a third request (the first bytes, then all of it)."""
    declare(validate=None)
    Fleet(duck, S3Tier(URL)).container()[0].get("customers")
    tier = S3Tier(URL, whole_bytes=whole)
    seen = count_requests(tier)
    cold, origin = Fleet(duck, tier).container()
    got = cold.get("customers")
    assert got.meta.tier == "l2" and origin.calls == 0 and len(got) == 1000
    assert seen == ["GET"] * (2 if whole > 20_000 else 3)
