"""Regression tests for the refresh path's failure defects (issue 9), each of which failed on
the previous design: every failure is served stale and leaves a short failure marker; load time
excludes frozen time; a late holder never overwrites newer data; waiters stop at a failure
marker; an invalidation beats an in-flight load; generations survive counter loss; every value
read from L2 is untrusted."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2

from athena_warm import AthenaWarmError, _events
from athena_warm.exceptions import (
    DeadlineError,
    DuplicateKeyError,
    EmptyResultError,
    MissingColumnError,
    NullKeyError,
    OriginError,
    RefreshError,
)
from athena_warm.l2 import Lease, MemoryTier
from tests.conftest import SERVERS
from tests.faults import Clocks, Table, TableOrigin, container, declare_table, version_of


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def events() -> Any:
    seen: list[dict[str, Any]] = []
    _events.listeners.append(seen.append)
    yield seen
    _events.listeners.remove(seen.append)


def _chain(exc: BaseException | None) -> list[str]:
    names = []
    while exc is not None:
        names.append(type(exc).__name__)
        exc = exc.__cause__
    return names


# -- 1. any exception in a refresh: one handler ---------------------------------------------------

class NoRegionError(Exception):
    """Stands in for botocore's NoRegionError: not an athena-warm error."""


FAILURES: dict[str, tuple[dict[str, Any], Any]] = {
    "duplicate key": ({"bad": "duplicate"}, DuplicateKeyError),
    "empty result": ({"bad": "empty"}, EmptyResultError),
    "missing column": ({"bad": "missing"}, MissingColumnError),
    "origin error": ({"fail": OriginError("Athena is down", state="FAILED")}, OriginError),
    "client that cannot be built": ({"fail": NoRegionError("You must specify a region")},
                                    NoRegionError),
    "import error": ({"fail": ImportError("No module named 'pyathena'")}, ImportError),
}


@pytest.mark.parametrize("with_l2", [True, False], ids=["l2", "no-l2"])
@pytest.mark.parametrize("kind", list(FAILURES))
def test_every_refresh_failure_serves_stale_and_leaves_a_short_marker(
        clocks: Clocks, events: list[dict[str, Any]], caplog: pytest.LogCaptureFixture,
        kind: str, with_l2: bool) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono) if with_l2 else None
    table = Table()
    origin = TableOrigin(table)
    a = container(clocks, tier, origin)
    first = a.get("customers")
    clocks.advance(3600)  # stale
    setup, expected = FAILURES[kind]
    for attr, value in setup.items():
        setattr(origin, attr, value)
    with caplog.at_level(logging.ERROR, logger="athena_warm"):
        assert a.get("customers") is first  # stale-if-error, whatever the error
    assert f"refreshing customers failed: {expected.__name__}" in caplog.text
    assert any(e["event"] == "refresh_failed" and e["error"] == expected.__name__
               for e in events)  # -> RefreshFailures
    leases = tier if tier is not None else a.refresher.local.tier
    fp = a.declaration("customers").fingerprint
    marker = leases.info("customers", fp)
    assert marker is not None and marker.failed_type == expected.__name__
    left = leases.lease_expires_in("customers", fp)
    assert left is not None and left <= 5  # retry_interval, not refresh_timeout
    calls = origin.calls
    if tier is not None:
        # A cold container takes the fleet's stale copy, without querying; one with no usable
        # copy at all gets the real cause at once: no waiting, no query.
        b_origin = TableOrigin(table)
        assert container(clocks, tier, b_origin).get("customers").meta.source == "l2"
        tier.delete("customers", fp)
        b = container(clocks, tier, b_origin)
        start = clocks.mono()
        with pytest.raises(AthenaWarmError) as ei:
            b.get("customers", remaining=30)
        assert not isinstance(ei.value, DeadlineError)
        assert expected.__name__ in str(ei.value) and clocks.mono() == start
        assert b_origin.calls == 0
    clocks.advance(5)  # the marker expired: retried once, then recovered
    for attr in setup:
        setattr(origin, attr, None)
    assert a.get("customers").meta.tier == "origin" and origin.calls == calls + 1


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_first_load_that_fails_raises_the_real_error(clocks: Clocks, kind: str) -> None:
    declare_table()
    origin = TableOrigin(Table())
    setup, expected = FAILURES[kind]
    for attr, value in setup.items():
        setattr(origin, attr, value)
    a = container(clocks, MemoryTier(clock=clocks.mono), origin)
    with pytest.raises(AthenaWarmError) as ei:
        a.get("customers")
    assert expected.__name__ in _chain(ei.value)  # the real cause is in the chain
    if not issubclass(expected, AthenaWarmError):
        assert isinstance(ei.value, RefreshError) and ei.value.cause_type == expected.__name__


def test_a_null_key_error_is_handled_like_any_other(clocks: Clocks) -> None:
    declare_table(on_null_key="error")
    table = Table()
    origin = TableOrigin(table)
    a = container(clocks, MemoryTier(clock=clocks.mono), origin)
    first = a.get("customers")
    clocks.advance(3600)
    original = table.result

    def with_null_key(bad: str | None = None) -> Any:
        got = original(bad)
        return type(got)(columns=got.columns, rows=[*got.rows, (None, "x")])

    table.result = with_null_key  # type: ignore[method-assign]
    assert a.get("customers") is first
    with pytest.raises(NullKeyError):
        container(clocks, None, origin).get("customers")


def test_a_value_l2_cannot_store_is_served_and_the_lease_released(
        clocks: Clocks, caplog: pytest.LogCaptureFixture) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono)
    origin = TableOrigin(Table())
    origin.bad = "unstorable"
    a = container(clocks, tier, origin)
    with caplog.at_level(logging.ERROR, logger="athena_warm"):
        m = a.get("customers")
    assert len(m) == 3 and m.meta.tier == "origin"
    assert "cannot be stored in L2 (TypeError" in caplog.text
    assert tier.info("customers", a.declaration("customers").fingerprint) is None  # released
    b_origin = TableOrigin(Table())
    b_origin.bad = "unstorable"
    assert container(clocks, tier, b_origin).get("customers").meta.tier == "origin"


class BrokenWrites(MemoryTier):
    def write(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("the tier broke while publishing")


def test_an_l2_failure_while_publishing_is_served_and_the_lease_released(
        clocks: Clocks) -> None:
    declare_table()
    tier = BrokenWrites(clock=clocks.mono)
    a = container(clocks, tier, TableOrigin(Table()))
    assert len(a.get("customers")) == 3
    assert tier.info("customers", a.declaration("customers").fingerprint) is None


def test_the_longest_expiry_neither_fails_the_read_nor_keeps_the_lease(
        clocks: Clocks, redis_url: str) -> None:
    """A declaration refuses durations over ten years; the longest it accepts (twenty years of
    ttl + max_stale) is stored, and a longer expiry given to the tier is clamped, not refused."""
    declare_table(ttl="3650d", max_stale="3650d")
    tier = RedisL2(redis_url)
    gen = tier.generation("clamped")
    assert gen is not None
    assert tier.write("clamped", "f" * 16, b"x", ttl=1e15, created_at=1.0, generation=gen[0],
                      token=None) == "written"  # ~31 million years: clamped to Redis's limit
    a = container(clocks, tier, TableOrigin(Table()))
    assert len(a.get("customers")) == 3
    assert tier.info("customers", a.declaration("customers").fingerprint) is None
    assert not tier.breaker.is_open
    b = container(clocks, RedisL2(redis_url), TableOrigin(Table()))
    assert b.get("customers").meta.tier == "l2"


# -- 2. frozen time is not load time, and an estimate never vetoes refreshes for good ------------


def test_time_frozen_during_a_load_is_not_counted_as_load_time(clocks: Clocks) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono)
    a_origin = TableOrigin(Table())
    a_origin.during = lambda: clocks.advance(100)  # frozen (or stalled) mid-load
    a = container(clocks, tier, a_origin)
    with a.invocation(remaining=10):
        a.get("customers")
    b = container(clocks, tier, TableOrigin(Table()))
    b.get("customers")
    (_, entry), = b.l1.items()
    assert entry.view.meta.tier == "l2" and entry.load_seconds <= 10


def test_a_wrong_estimate_delays_a_refresh_a_few_times_at_most(clocks: Clocks) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono)
    slow = TableOrigin(Table())
    slow.during = lambda: clocks.advance(12.2)  # measured with no deadline: counted in full
    container(clocks, tier, slow).get("customers")
    b_origin = TableOrigin(Table())
    b = container(clocks, tier, b_origin)
    b.get("customers")
    clocks.advance(3600)  # stale everywhere
    attempts = 0
    while b_origin.calls == 0:
        attempts += 1
        assert attempts <= 4, "the estimate kept vetoing the refresh"
        b.get("customers", remaining=3)
        clocks.advance(5)
    assert b_origin.calls == 1


# -- 3. a holder that outlived its lease never overwrites newer data ------------------------------


def test_a_late_holder_does_not_bring_the_fleet_back_to_old_data(
        clocks: Clocks, events: list[dict[str, Any]]) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono)
    table = Table()
    a_origin, b_origin = TableOrigin(table), TableOrigin(table)
    a = container(clocks, tier, a_origin, refresh_timeout=300)
    b = container(clocks, tier, b_origin, refresh_timeout=300)
    a.get("customers")
    b.get("customers")
    clocks.advance(3600)

    def freeze_while_the_fleet_moves_on() -> None:
        a_origin.during = None
        clocks.advance(301)  # A's lease expired while it was frozen
        table.version = 2
        assert version_of(b.get("customers")) == 2  # B took over and published v2

    a_origin.during = freeze_while_the_fleet_moves_on
    got = a.get("customers")  # A's query read v1 before it froze
    assert any(e["event"] == "publish_fenced" for e in events)
    assert version_of(got) == 2  # A serves the fleet's newer copy, not its own late one
    cold = container(clocks, tier, TableOrigin(table))
    assert version_of(cold.get("customers")) == 2 and cold.get("customers").meta.source == "l2"


# -- 4. waiters stop at a failure marker ----------------------------------------------------------


def test_a_waiter_stops_at_the_holders_failure_marker(clocks: Clocks) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono)
    b_origin = TableOrigin(Table())
    b = container(clocks, tier, b_origin)
    fp = b.declaration("customers").fingerprint
    held = tier.acquire("customers", fp, "aaaaaaaa", ttl=300, at=clocks.wall())
    assert isinstance(held, Lease)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # while B waits, the holder fails
        slept.append(seconds)
        clocks.advance(seconds)
        tier.update("customers", fp, Lease(held.token, held.fence, held.at,
                                           failed="OriginError: Athena is down",
                                           failed_type="OriginError"), ttl=5)

    b.sleep = sleep
    b.refresher = b._make_refresher()
    with pytest.raises(RefreshError, match="failed with OriginError: Athena is down") as ei:
        b.get("customers", remaining=30)
    assert ei.value.cause_type == "OriginError"
    assert len(slept) == 1 and sum(slept) <= 0.05 and b_origin.calls == 0


def test_a_waiter_takes_the_holders_copy_within_50_ms(clocks: Clocks) -> None:
    declare_table()
    tier = MemoryTier(clock=clocks.mono)
    holder = container(clocks, tier, TableOrigin(Table()))
    waiter = container(clocks, tier, TableOrigin(Table()))
    fp = waiter.declaration("customers").fingerprint
    assert isinstance(tier.acquire("customers", fp, "aaaaaaaa", ttl=300, at=clocks.wall()),
                      Lease)
    published_at: list[float] = []

    def sleep(seconds: float) -> None:
        clocks.advance(seconds)
        if clocks.mono() > 1000 + 2.0 and not published_at:  # the holder publishes at 2 s
            tier.release("customers", fp, "aaaaaaaa")
            holder.get("customers")
            published_at.append(clocks.mono())

    waiter.sleep = sleep
    waiter.refresher = waiter._make_refresher()
    got = waiter.get("customers", remaining=30)
    assert got.meta.tier == "l2" and clocks.mono() - published_at[0] <= 0.05


# -- 5. an invalidation beats a load already in flight (no L2) ------------------------------------


def test_without_l2_an_invalidation_during_a_load_is_not_undone(clocks: Clocks) -> None:
    declare_table()
    table = Table()
    origin = TableOrigin(table)
    cache = container(clocks, None, origin)

    def table_updated_and_invalidated() -> None:
        origin.during = None
        table.version = 2
        cache.invalidate("customers")

    origin.during = table_updated_and_invalidated
    assert version_of(cache.get("customers")) == 1  # the caller that asked gets its result
    assert version_of(cache.get("customers")) == 2  # but it was not kept past the invalidation
    assert origin.calls == 2


# -- 6. generations are unique across counter loss ------------------------------------------------


@pytest.fixture(params=["memory", *sorted(SERVERS)])
def shared(request: pytest.FixtureRequest, clocks: Clocks) -> Any:
    """(make a tier, lose everything in it)"""
    if request.param == "memory":
        tier = MemoryTier(clock=clocks.mono)
        return (lambda: tier), tier.flush
    server = request.getfixturevalue("servers_by_kind")[request.param]
    server.client().flushall()
    return (lambda: RedisL2(server.url)), lambda: server.client().flushall()


def test_a_copy_from_before_a_lost_counter_is_not_served_as_current(
        clocks: Clocks, shared: Any) -> None:
    make, lose = shared
    declare_table()
    table = Table()
    a = container(clocks, make(), TableOrigin(table))
    assert version_of(a.get("customers")) == 1  # generation 0
    table.version = 2
    operator = container(clocks, make(), TableOrigin(table))
    operator.switch("customers")  # invalidate --refresh: generation 1
    lose()  # the cache restarts empty before A looked
    clocks.advance(30)
    got = a.get("customers")
    assert version_of(got) == 2 and got.meta.tier == "origin"


def test_a_generation_number_reused_after_loss_does_not_match(
        clocks: Clocks, shared: Any) -> None:
    make, lose = shared
    declare_table()
    table = Table()
    b = container(clocks, make(), TableOrigin(table))
    operator = container(clocks, make(), TableOrigin(table))
    operator.invalidate("customers")
    assert b.get("customers").meta.generation == 1
    lose()
    table.version = 3
    assert operator.invalidate("customers") == 1  # a new epoch's generation 1
    c = container(clocks, make(), TableOrigin(table))
    assert version_of(c.get("customers")) == 3
    clocks.advance(30)
    got = b.get("customers")
    assert version_of(got) == 3 and got.meta.tier == "l2"


# -- 7. every value read from L2 is untrusted ----------------------------------------------------


def _damage(admin: Any, fp: str, what: str) -> None:
    ns = "athena-warm:{customers}"
    if what.startswith("ptr="):
        admin.set(f"{ns}:{fp}:ptr", what[4:].encode("latin-1"))
    elif what.startswith("gen:"):
        admin.delete(f"{ns}:gen")
        if what == "gen:string":
            admin.set(f"{ns}:gen", b"\xff")
        else:
            field, _, value = what[4:].partition("=")
            admin.hset(f"{ns}:gen", mapping={"e": "0123456789abcdef", field: value})
    elif what == "lease:hash":
        admin.hset(f"{ns}:{fp}:lease", mapping={"x": "y"})
    else:
        admin.set(f"{ns}:{fp}:lease", what[6:].encode("latin-1"), px=600_000)


@pytest.mark.parametrize("what", [
    "ptr=garbage", "ptr=\xff\xfe", "ptr=abc:1000000:0123456789abcdef:0:1", "gen:g=abc", "gen:g=-1",
    f"gen:g={2**64}", "gen:string", "lease=garbage", "lease=\xff\xfe", "lease:hash",
])
def test_a_malformed_l2_value_is_a_logged_miss(clocks: Clocks, redis_url: str,
                                               redis_server: Any, what: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    declare_table()
    table = Table()
    a = container(clocks, RedisL2(redis_url), TableOrigin(table))
    a.get("customers")
    _damage(redis_server.client(), a.declaration("customers").fingerprint, what)
    clocks.advance(3600)  # stale: the next reads look at everything in L2
    b = container(clocks, RedisL2(redis_url), TableOrigin(table))
    with caplog.at_level(logging.WARNING, logger="athena_warm"):
        assert len(b.get("customers")) == 3
        assert len(a.get("customers")) == 3
    assert "athena-warm" in caplog.text  # said why
    assert not b.l2.breaker.is_open  # type: ignore[union-attr]  # damage is not an outage
