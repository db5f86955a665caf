"""The shared-tier contract: what every SharedTier does, run against the in-memory tier,
RedisL2 on each real server (valkey-server, redis-server) and S3Tier on moto. Generation with
epochs, fenced publishes, leases with fencing numbers, fail-open, and damaged values read as
misses."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2
from athena_warm.adapters.s3 import S3Tier

from athena_warm._files import FileTier
from athena_warm.exceptions import L2Error
from athena_warm.l2 import Generation, Lease, MemoryTier
from tests.conftest import SERVERS, FakeClock
from tests.servers import free_port

FP = "f" * 16


class Handle:
    """A tier under test, with raw access to its storage (to damage or lose it) and time."""

    def __init__(self, tier: Any, raw_set: Callable[[str, Any], None],
                 raw_hset: Callable[[str, dict[str, str]], None], flush: Callable[[], None],
                 advance: Callable[[float], None], down: Callable[[], Any]) -> None:
        self.tier, self.raw_set, self.raw_hset = tier, raw_set, raw_hset
        self.flush, self.advance, self.down = flush, advance, down

    def key(self, mapping: str, *parts: str) -> str:
        if isinstance(self.tier, S3Tier):  # one object per copy: its metadata is the pointer
            parts = tuple("copy" if p == "ptr" else p for p in parts)
        if isinstance(self.tier, FileTier):  # one file per copy: its first line is the pointer
            names = {"ptr": "copy", "gen": "gen.json", "lease": "lease.json"}
            parts = tuple(names.get(p, p) for p in parts)
        return str(self.tier.key(mapping, *parts))


def s3_handle(request: pytest.FixtureRequest) -> Handle:
    """S3Tier on moto (in this process), on a fake epoch clock for the leases."""
    import boto3

    request.getfixturevalue("aws")
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="shared-tier")
    clock = FakeClock(1_700_000_000.0)
    tier = S3Tier("s3://shared-tier/athena-warm", clock=clock)

    def raw_set(k: str, v: Any) -> None:
        s3.put_object(Bucket="shared-tier", Key=k, Body=v if isinstance(v, bytes) else str(v))

    def flush() -> None:
        for obj in s3.list_objects_v2(Bucket="shared-tier").get("Contents", []):
            s3.delete_object(Bucket="shared-tier", Key=obj["Key"])

    def down() -> S3Tier:
        dead = S3Tier("s3://shared-tier/athena-warm", connect_timeout=0.2, clock=clock,
                      client=boto3.client("s3", region_name="us-east-1",
                                          endpoint_url=f"http://127.0.0.1:{free_port()}"))
        return dead

    return Handle(tier, raw_set, lambda k, v: raw_set(k, json.dumps(v).encode()), flush,
                  clock.advance, down)


def node_handle(tmp_path: Path) -> Handle:
    """FileTier in a temporary directory, on a fake epoch clock for the leases."""
    clock = FakeClock(1_700_000_000.0)
    tier = FileTier(tmp_path / "node", clock=clock)

    def raw_set(k: str, v: Any) -> None:
        Path(k).parent.mkdir(parents=True, exist_ok=True)
        Path(k).write_bytes(v if isinstance(v, bytes) else str(v).encode())

    return Handle(tier, raw_set, lambda k, v: raw_set(k, json.dumps(v).encode()), tier.flush,
                  clock.advance, lambda: FileTier("/dev/null/not-a-directory", clock=clock))


@pytest.fixture(params=["memory", "s3", "node", *sorted(SERVERS)])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Handle:
    if request.param == "s3":
        return s3_handle(request)
    if request.param == "node":
        return node_handle(tmp_path)
    if request.param == "memory":
        clock = FakeClock()
        tier = MemoryTier(clock=clock)

        def mem_down() -> MemoryTier:
            other = MemoryTier(clock=clock)
            other.available = False
            return other

        return Handle(tier, lambda k, v: tier.set_raw(k, v),
                      lambda k, v: tier.set_raw(k, dict(v)), tier.flush, clock.advance,
                      mem_down)
    server = request.getfixturevalue("servers_by_kind")[request.param]
    admin = server.client()
    admin.flushall()
    redis_tier = RedisL2(server.url)

    def hset(k: str, v: dict[str, str]) -> None:
        admin.delete(k)
        admin.hset(k, mapping=v)

    return Handle(redis_tier, lambda k, v: admin.set(k, v), hset, admin.flushall, time.sleep,
                  lambda: RedisL2(f"redis://127.0.0.1:{free_port()}/0"))


def gen_of(h: Handle, mapping: str = "m") -> tuple[Generation, str]:
    got = h.tier.generation(mapping)
    assert got is not None
    return got  # type: ignore[no-any-return]


# -- the generation ------------------------------------------------------------------------------


def test_generation_has_an_epoch_and_counts_invalidations(h: Handle) -> None:
    first, how = gen_of(h)
    assert how == "new" and first.number == 0 and first.floor == 0 and len(first.epoch) == 16
    again, how = gen_of(h)
    assert how == "ok" and again == first
    assert h.tier.bump("m") == Generation(first.epoch, 1, 0)
    assert h.tier.bump("m", hard=True) == Generation(first.epoch, 2, 2)
    assert gen_of(h) == (Generation(first.epoch, 2, 2), "ok")
    assert gen_of(h, "other")[0].epoch != first.epoch  # one counter per mapping


def test_a_lost_counter_comes_back_with_a_new_epoch(h: Handle) -> None:
    before, _ = gen_of(h)
    h.tier.bump("m")
    h.flush()  # restarted empty, FLUSHALL, evicted
    after, how = gen_of(h)
    assert how == "new" and after.number == 0 and after.epoch != before.epoch


@pytest.mark.parametrize("fields", [
    {"e": "0123456789abcdef", "g": "abc"}, {"e": "0123456789abcdef", "g": "-1"},
    {"e": "0123456789abcdef", "g": str(2**64)}, {"g": "3"},
    {"e": "not-an-epoch!!!!", "g": "1"}, {"e": "0123456789abcdef", "g": "1", "hard": "x"},
])
def test_a_malformed_counter_is_reset_to_a_new_epoch(h: Handle, fields: dict[str, str]) -> None:
    h.raw_hset(h.key("m", "gen"), fields)
    gen, how = gen_of(h)
    assert how == "repaired" and gen.number == 0 and gen.epoch != fields.get("e")
    assert h.tier.bump("m").number == 1  # and invalidation works from there


def test_a_counter_of_the_wrong_type_is_reset(h: Handle) -> None:
    h.raw_set(h.key("m", "gen"), b"\xff\xfe garbage")
    gen, how = gen_of(h)
    assert how == "repaired" and gen.number == 0


# -- copies: fenced, atomic publishes ------------------------------------------------------------


def write(h: Handle, blob: bytes, *, created_at: float, gen: Generation,
          token: str | None = None) -> Any:
    return h.tier.write("m", FP, blob, ttl=3600, created_at=created_at, generation=gen,
                        token=token)


def test_write_read_head(h: Handle) -> None:
    gen, _ = gen_of(h)
    assert h.tier.read("m", FP) is None and h.tier.head("m", FP, 4) is None
    assert write(h, b"0123456789" * 10, created_at=100.0, gen=gen) == "written"
    assert h.tier.read("m", FP) == b"0123456789" * 10
    assert h.tier.head("m", FP, 4) == b"0123"


def test_a_late_holder_never_overwrites_a_newer_copy(h: Handle) -> None:
    gen, _ = gen_of(h)
    late = h.tier.acquire("m", FP, "aaaaaaaa", ttl=0.2, at=100.0)
    assert isinstance(late, Lease) and late.fence >= 1
    h.advance(0.3)  # the holder froze; its lease expired; another took over
    took = h.tier.acquire("m", FP, "bbbbbbbb", ttl=30, at=200.0)
    assert isinstance(took, Lease) and took.fence > late.fence
    assert write(h, b"new", created_at=200.0, gen=gen, token=took.token) == "written"
    assert h.tier.release("m", FP, took.token)
    # The late holder's copy is older (its query started first) and it holds nothing: refused.
    assert write(h, b"old", created_at=100.0, gen=gen, token=late.token) == "fenced"
    assert h.tier.read("m", FP) == b"new"
    # A newer copy is accepted from anyone; the holder of the lease is accepted.
    assert write(h, b"newer", created_at=300.0, gen=gen) == "written"
    holder = h.tier.acquire("m", FP, "cccccccc", ttl=30, at=50.0)
    assert isinstance(holder, Lease)
    assert write(h, b"holder", created_at=50.0, gen=gen, token=holder.token) == "written"


def test_a_newer_generation_beats_a_later_copy_of_an_older_one(h: Handle) -> None:
    gen, _ = gen_of(h)
    assert write(h, b"g0", created_at=500.0, gen=gen) == "written"
    # invalidate --refresh: generation + 1, even if its clock is behind
    assert write(h, b"g1", created_at=400.0, gen=Generation(gen.epoch, gen.number + 1)) == \
        "written"
    assert write(h, b"g0 again", created_at=600.0, gen=gen) == "fenced"
    assert h.tier.read("m", FP) == b"g1"


def test_a_publish_overtaken_by_an_invalidation_is_refused(h: Handle) -> None:
    gen, _ = gen_of(h)
    h.tier.bump("m")
    assert write(h, b"x", created_at=1.0, gen=gen) == "invalidated"
    assert write(h, b"x", created_at=1.0, gen=Generation("0" * 16, 1)) == "invalidated"
    now, _ = gen_of(h)
    assert write(h, b"y", created_at=1.0, gen=now) == "written"
    # invalidate --refresh publishes generation + 1 just before its bump
    assert write(h, b"z", created_at=2.0, gen=Generation(now.epoch, now.number + 1)) == "written"


E = b"0123456789abcdef"


@pytest.mark.parametrize("pointer", [b"garbage", b"\xff\xfe\xfd", b"abc:999999999:" + E + b":0:1",
                                     b"abc:0:" + E + b":0:1", b"abc:1:" + E + b":0",
                                     b"abc:1:nothex:0:1", b"a:b:c:d:e", b"abc:1:1"])
def test_a_malformed_pointer_is_a_miss(h: Handle, pointer: bytes) -> None:
    h.raw_set(h.key("m", FP, "ptr"), pointer)
    assert h.tier.read("m", FP) is None
    assert h.tier.head("m", FP, 8) is None
    gen, _ = gen_of(h)
    assert write(h, b"fixed", created_at=1.0, gen=gen) == "written"  # and is replaced
    assert h.tier.read("m", FP) == b"fixed"


# -- leases --------------------------------------------------------------------------------------


def test_lease_contract(h: Handle) -> None:
    t = h.tier
    first = t.acquire("m", FP, "11111111", ttl=30, at=5.0)
    assert isinstance(first, Lease) and first.token == "11111111" and first.at == 5.0
    assert t.acquire("m", FP, "22222222", ttl=30, at=6.0) is False  # single flight
    assert t.info("m", FP) == first
    marked = Lease("22222222", first.fence, 6.0, query_id="q")
    assert t.update("m", FP, marked) is False  # not the holder
    with_query = Lease(first.token, first.fence, first.at, query_id="q")
    assert t.update("m", FP, with_query) is True
    assert t.info("m", FP) == with_query
    assert t.release("m", FP, "22222222") is False  # only the holder releases
    assert t.release("m", FP, first.token) is True
    assert t.info("m", FP) is None
    second = t.acquire("m", FP, "33333333", ttl=30, at=7.0)
    assert isinstance(second, Lease) and second.fence > first.fence  # fencing numbers grow
    assert isinstance(t.acquire("m", "other", "44444444", ttl=30, at=7.0), Lease)  # per decl


def test_a_lease_expires_and_a_failure_marker_lives_its_own_ttl(h: Handle) -> None:
    t = h.tier
    lease = t.acquire("m", FP, "11111111", ttl=30, at=1.0)
    assert isinstance(lease, Lease)
    failed = Lease(lease.token, lease.fence, lease.at, failed="OriginError: down",
                   failed_type="OriginError")
    assert t.update("m", FP, failed, ttl=0.2)
    assert t.info("m", FP) == failed
    h.advance(0.3)
    assert t.info("m", FP) is None
    assert isinstance(t.acquire("m", FP, "22222222", ttl=30, at=2.0), Lease)


@pytest.mark.parametrize("raw", [b"garbage", b"\xff\xfe not utf-8", b"1234abcd {not json",
                                 b'1234abcd {"fence": "x"}', b'1234abcd {"at": "soon"}',
                                 b"1234abcd [1, 2]"])
def test_a_malformed_lease_is_nobodys(h: Handle, raw: bytes) -> None:
    h.raw_set(h.key("m", FP, "lease"), raw)
    assert h.tier.info("m", FP) is None  # a miss, and removed
    assert isinstance(h.tier.acquire("m", FP, "11111111", ttl=30, at=1.0), Lease)


# -- revalidation: renew and note ----------------------------------------------------------------


def test_renew_extends_the_copy_and_stores_the_note(h: Handle) -> None:
    gen, _ = gen_of(h)
    assert h.tier.note("m", FP) is None
    assert h.tier.renew("m", FP, "n1", created_ms=100_000, ttl=60) is False  # no copy yet
    assert h.tier.write("m", FP, b"x" * 100, ttl=0.5, created_at=100.0, generation=gen,
                        token=None) == "written"
    assert h.tier.renew("m", FP, "n1", created_ms=99_999, ttl=60) is False  # another copy
    assert h.tier.note("m", FP) is None
    assert h.tier.renew("m", FP, '{"c":100000} ab', created_ms=100_000, ttl=60) is True
    assert h.tier.note("m", FP) == '{"c":100000} ab'
    h.advance(0.8)  # past the copy's first life: the renewal extended it (pointer and chunks)
    assert h.tier.read("m", FP) == b"x" * 100 and h.tier.head("m", FP, 2) == b"xx"


def test_a_note_of_the_wrong_type_is_a_miss(h: Handle) -> None:
    h.raw_hset(h.key("m", FP, "note"), {"a": "b"})
    assert h.tier.note("m", FP) is None


def test_an_unreachable_tier_fails_open_on_renewal(h: Handle) -> None:
    t = h.down()
    assert t.renew("m", FP, "n", created_ms=1, ttl=1) is None
    assert t.note("m", FP) is None


# -- fail open -----------------------------------------------------------------------------------


def test_an_unreachable_tier_fails_open(h: Handle) -> None:
    t = h.down()
    assert t.generation("m") is None
    assert t.read("m", FP) is None and t.head("m", FP, 8) is None
    assert t.write("m", FP, b"x", ttl=1, created_at=1, generation=Generation("0" * 16, 0),
                   token=None) is None
    assert t.acquire("m", FP, "11111111", ttl=1, at=1) is None
    assert t.info("m", FP) is None
    assert t.update("m", FP, Lease("11111111")) is False
    assert t.release("m", FP, "11111111") is False
    with pytest.raises(L2Error, match="NOT told to reload"):
        t.bump("m")
