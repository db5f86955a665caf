"""Freshness policy on fake clocks: jitter, stale-while-revalidate, stale-if-error, max_stale,
deadlines, leases, and the hand-over of a running Athena query to a later invocation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from athena_warm.adapters.redis import RedisL2

from athena_warm import Cache
from athena_warm._memory import MemoryTier
from athena_warm._rules import jittered, lease_ttl
from athena_warm.exceptions import DeadlineError, OriginError, StaleLimitError
from tests import faults
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin, declare


class Clocks(faults.Clocks):
    def cache(self, origin: Any, **kw: Any) -> Cache:
        kw.setdefault("l2", False)
        return Cache(origin=origin, clock=self.mono, wall_clock=self.wall,
                     sleep=self.advance, **kw)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


# -- jitter ---------------------------------------------------------------------------------------


def test_jitter_shortens_each_containers_ttl(duck: Any, clocks: Clocks) -> None:
    assert jittered(3600, 0.1, lambda: 0.0) == 3600
    assert jittered(3600, 0.1, lambda: 1.0) == pytest.approx(3240)
    declare(ttl_jitter=0.1)
    early = clocks.cache(CountingOrigin(duck), random=lambda: 1.0)  # the most jitter
    late = clocks.cache(CountingOrigin(duck), random=lambda: 0.0)
    early.get("customers")
    late.get("customers")
    clocks.advance(3240)
    assert early.get("customers").meta.tier == "origin"  # due at 54 minutes
    assert late.get("customers").meta.tier == "l1"  # due at 60
    with pytest.raises(Exception, match="fraction in"):
        declare("bad", ttl_jitter=1.5)


def test_containers_loaded_together_come_due_apart(duck: Any, clocks: Clocks) -> None:
    import random

    declare(ttl_jitter=0.2)
    rng = random.Random(7)
    caches = [clocks.cache(CountingOrigin(duck), random=rng.random) for _ in range(20)]
    for c in caches:
        c.get("customers")
    due = sorted(next(iter(c.l1.items()))[1].expires_at for c in caches)
    assert due[-1] - due[0] > 0.1 * 3600  # spread over more than 6 of the 12 minutes


# -- stale while revalidate, in one process -------------------------------------------------------


def test_threads_get_the_stale_copy_while_one_refreshes(duck: Any) -> None:
    declare(ttl="1s")
    origin = CountingOrigin(duck)
    cache = Cache(origin=origin, l2=False)
    old = cache.get("customers")
    import time

    time.sleep(1.05)  # stale now
    origin.delay = 0.5
    got: list[Any] = []

    def reader() -> None:
        got.append(cache.get("customers"))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert origin.calls == 2  # one refresh
    assert sum(1 for m in got if m is old) == 7  # the others did not wait
    assert sum(1 for m in got if m is not old) == 1


# -- stale if error, and the hard limit -----------------------------------------------------------


def test_stale_if_error_up_to_max_stale_then_a_clear_error(
    duck: Any, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    declare(ttl="1h", max_stale="6h")
    origin = CountingOrigin(duck)
    cache = clocks.cache(origin, retry_interval=60)
    first = cache.get("customers")
    origin.fail = OriginError("Athena is down", origin="counting", state="FAILED")
    clocks.advance(3600)
    with caplog.at_level(logging.ERROR, logger="athena_warm"):
        assert cache.get("customers") is first  # stale, served loudly
    assert "serving a stale copy of customers (3600 s old" in caplog.text
    assert "Athena is down" in caplog.text
    calls = origin.calls
    clocks.advance(30)
    assert cache.get("customers") is first and origin.calls == calls  # no retry before 60 s
    clocks.advance(30)
    assert cache.get("customers") is first and origin.calls == calls + 1  # retried, failed
    clocks.advance(6 * 3600 - 60)  # exactly ttl + max_stale: never older data
    with pytest.raises(StaleLimitError, match="older than ttl \\+ max_stale") as ei:
        cache.get("customers")
    assert "Athena is down" in str(ei.value)
    origin.fail = None
    clocks.advance(60)
    assert cache.get("customers").meta.tier == "origin"  # recovered


def test_a_failed_first_load_raises_the_origin_error(duck: Any, clocks: Clocks) -> None:
    declare()
    origin = CountingOrigin(duck)
    origin.fail = OriginError("no such table", origin="counting", state="FAILED")
    with pytest.raises(OriginError, match="mapping 'customers': no such table"):
        clocks.cache(origin).get("customers")


# -- deadlines ------------------------------------------------------------------------------------


def slow_origin(inner: Any, clocks: Clocks, seconds: float) -> CountingOrigin:
    """Takes ``seconds`` of the fake clock per query."""
    return CountingOrigin(inner, on_query=lambda: clocks.advance(seconds))


def test_no_blocking_refresh_that_cannot_finish_in_time(duck: Any, clocks: Clocks) -> None:
    declare()
    origin = slow_origin(duck, clocks, 20)  # a 20-second load
    cache = clocks.cache(origin)
    first = cache.get("customers")
    clocks.advance(3600)
    assert cache.get("customers", remaining=10) is first  # 10 s left: serve stale, no query
    assert origin.calls == 1
    clocks.advance(5)  # past the retry interval
    assert cache.get("customers", remaining=60).meta.tier == "origin"  # time enough now
    assert origin.calls == 2


def test_invocation_scope_passes_its_deadline(duck: Any, clocks: Clocks) -> None:
    declare()
    origin = slow_origin(duck, clocks, 20)
    cache = clocks.cache(origin)
    first = cache.get("customers")
    clocks.advance(3600)
    with cache.invocation(remaining=3):
        assert cache.get("customers") is first
    assert origin.calls == 1


# -- leases (the lease contract itself is in test_tier_contract.py) -------------------------------


def test_a_lease_expires_so_a_dead_holders_work_is_taken_over(clocks: Clocks) -> None:
    leases = MemoryTier(clock=clocks.mono)
    assert leases.acquire("m", "fp", "dead0000", ttl=30, at=0)
    clocks.advance(29.9)
    assert not leases.acquire("m", "fp", "next0000", ttl=30, at=0)
    clocks.advance(0.1)
    assert leases.acquire("m", "fp", "next0000", ttl=30, at=0)


def test_lease_length_follows_the_refresh_deadline() -> None:
    assert lease_ttl(deadline_left=None, async_timeout=None, refresh_timeout=120) == 120
    # the holder cannot outlive its deadline
    assert lease_ttl(deadline_left=40, async_timeout=None, refresh_timeout=120) == 45
    # a handed-over query outlives the invocation
    assert lease_ttl(deadline_left=40, async_timeout=600, refresh_timeout=120) == 660


# -- hand-over of a running Athena query ----------------------------------------------------------


@pytest.fixture
def slow_athena(athena: Any) -> Any:
    """Athena (moto) whose queries stay RUNNING for 10 status checks."""
    from moto.moto_api import state_manager

    state_manager.set_transition("athena::execution", {"progression": "manual", "times": 10})
    yield athena
    state_manager.unset_transition("athena::execution")


def _starts(athena: Any) -> int:
    return len(athena.double.started)


def test_hand_over_to_a_later_invocation(slow_athena: Any, clock: FakeClock,
                                         redis_url: str) -> None:
    declare()
    wall = FakeClock(1.7e9)

    def container() -> Cache:
        return Cache(origin=slow_athena, l2=RedisL2(redis_url), clock=clock, wall_clock=wall,
                     sleep=clock.advance)

    a, b = container(), container()
    # No copy anywhere and 2 s left: fail fast, but start the query for the next invocation.
    with pytest.raises(DeadlineError, match="was started and a later invocation collects it"):
        a.get("customers", remaining=2)
    assert _starts(slow_athena) == 1
    query_id = a.l2.info("customers", a.declaration("customers").fingerprint).query_id
    # Another container, with no time either, does not start it again.
    with pytest.raises(DeadlineError):
        b.get("customers", remaining=0.6)
    assert _starts(slow_athena) == 1
    # Later, when the query is done, any container collects it instead of querying again.
    from moto.moto_api import state_manager

    state_manager.unset_transition("athena::execution")  # the query finishes
    m = b.get("customers", remaining=30)
    assert m.meta.query_id == query_id and len(m) == 1000 and _starts(slow_athena) == 1
    assert a.get("customers").meta.tier == "l2"  # published for the fleet


def test_a_refresher_out_of_time_serves_stale_and_hands_over(
    slow_athena: Any, clock: FakeClock
) -> None:
    declare()
    wall = FakeClock(1.7e9)
    cache = Cache(origin=slow_athena, l2=False, clock=clock, wall_clock=wall, sleep=clock.advance)
    from moto.moto_api import state_manager

    state_manager.unset_transition("athena::execution")  # the first load is quick
    first = cache.get("customers")
    state_manager.set_transition("athena::execution", {"progression": "manual", "times": 50})
    clock.advance(3600)
    wall.advance(3600)
    assert cache.get("customers", remaining=3) is first  # started, handed over, stale served
    assert _starts(slow_athena) == 2
    clock.advance(5)
    assert cache.get("customers", remaining=3) is first  # still running: not started again
    assert _starts(slow_athena) == 2
    state_manager.unset_transition("athena::execution")
    clock.advance(5)
    m = cache.get("customers", remaining=3)  # done: collected
    assert m is not first and m.meta.tier == "origin" and _starts(slow_athena) == 2


def test_no_copy_and_no_time_fails_fast(duck: Any, clocks: Clocks) -> None:
    declare()
    origin = CountingOrigin(duck)
    with pytest.raises(DeadlineError, match=r"0\.2 s left in this invocation is not enough"):
        clocks.cache(origin).get("customers", remaining=0.2)
    assert origin.calls == 0


# -- throttling, deadlines and handed-over queries (issue 11) -------------------------------------


def _throttle(client: Any, operation: str, calls: list[str]) -> Callable[[], None]:
    """Every call of ``operation`` on ``client`` is throttled until the returned function is
    called; ``calls`` records each attempt."""
    from botocore.exceptions import ClientError

    on = [True]

    def hook(**_: Any) -> None:
        calls.append(operation)
        if on[0]:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)

    client.meta.events.register(f"before-call.athena.{operation}", hook)
    return lambda: on.__setitem__(0, False)


def test_max_attempts_counts_every_attempt(athena: Any, clock: FakeClock) -> None:
    calls: list[str] = []
    _throttle(athena.clients()[0], "StartQueryExecution", calls)
    athena.max_attempts = 3
    with pytest.raises(OriginError, match="after 3 attempts") as ei:
        athena.start("SELECT 1", (), database="analytics", workgroup=None, catalog=None)
    assert len(calls) == 3 and ei.value.state == "THROTTLED"


def test_a_throttled_start_gives_up_at_the_invocations_deadline(athena: Any,
                                                                clock: FakeClock) -> None:
    """Measured before: 2 s left, a throttled StartQueryExecution returned after 10 to 22 s."""
    from athena_warm.origin import deadline_scope

    calls: list[str] = []
    _throttle(athena.clients()[0], "StartQueryExecution", calls)
    athena.max_attempts = 100
    began = clock()
    with deadline_scope(clock() + 2, clock), pytest.raises(OriginError) as ei:
        athena.start("SELECT 1", (), database="analytics", workgroup=None, catalog=None)
    assert clock() - began <= 2.0 and 1 < len(calls) < 100
    assert "time ran out" in str(ei.value)


def test_a_throttled_poll_hands_the_running_query_over(athena: Any, clock: FakeClock,
                                                       redis_url: str) -> None:
    declare()
    wall = FakeClock(1.7e9)
    cache = Cache(origin=athena, l2=RedisL2(redis_url), clock=clock, wall_clock=wall,
                  sleep=clock.advance)
    calls: list[str] = []
    stop_throttling = _throttle(athena.clients()[0], "GetQueryExecution", calls)
    athena.max_attempts = 2
    with pytest.raises(DeadlineError, match="was started and a later invocation collects it"):
        cache.get("customers", remaining=5)
    fingerprint = cache.declaration("customers").fingerprint
    lease = cache.l2.info("customers", fingerprint)
    assert lease is not None and lease.query_id and not lease.failed  # kept, not abandoned
    stop_throttling()
    m = cache.get("customers", remaining=30)  # collected: no second query
    assert m.meta.query_id == lease.query_id and len(athena.double.started) == 1


def test_a_handed_over_query_past_its_timeout_is_stopped_before_another_starts(
        slow_athena: Any, clock: FakeClock, redis_url: str) -> None:
    declare()
    wall = FakeClock(1.7e9)
    slow_athena.query_timeout = 60.0

    def container() -> Cache:
        return Cache(origin=slow_athena, l2=RedisL2(redis_url), clock=clock, wall_clock=wall,
                     sleep=clock.advance, retry_interval=5)

    a, b = container(), container()
    with pytest.raises(DeadlineError):
        a.get("customers", remaining=2)  # started, handed over
    query_id = a.l2.info("customers", a.declaration("customers").fingerprint).query_id
    wall.advance(61)  # the query runs past the origin's timeout
    with pytest.raises(OriginError, match="query timeout of 60 s; it was stopped"):
        b.get("customers", remaining=30)
    execution = slow_athena.clients()[0].get_query_execution(QueryExecutionId=query_id)
    assert execution["QueryExecution"]["Status"]["State"] == "CANCELLED"
    assert len(slow_athena.double.started) == 1  # stopped first; nothing else ran beside it


def test_one_container_downloads_a_finished_handed_over_result(
        slow_athena: Any, clock: FakeClock, redis_url: str) -> None:
    declare()
    wall = FakeClock(1.7e9)

    def container() -> Cache:
        return Cache(origin=slow_athena, l2=RedisL2(redis_url), clock=clock, wall_clock=wall,
                     sleep=clock.advance)

    a, b = container(), container()
    with pytest.raises(DeadlineError):
        a.get("customers", remaining=2)
    from moto.moto_api import state_manager

    state_manager.unset_transition("athena::execution")  # it finishes
    fingerprint = a.declaration("customers").fingerprint
    # Another container is downloading it (holds the collect claim): b does not download too.
    assert a.l2.acquire("customers", fingerprint + "-collect", "other00000000000", ttl=60,
                        at=wall())
    downloads: list[str] = []
    slow_athena.clients()[1].meta.events.register(
        "before-call.s3.GetObject", lambda **_: downloads.append("GetObject"))
    with pytest.raises(DeadlineError):
        b.get("customers", remaining=1)  # waits for the other's copy, downloads nothing
    assert downloads == []
    a.l2.release("customers", fingerprint + "-collect", "other00000000000")
    m = b.get("customers", remaining=30)  # the claim is free: b collects it, once
    assert downloads == ["GetObject"] and m.meta.query_id and len(slow_athena.double.started) == 1


def test_a_call_that_hangs_is_given_up_at_the_deadline(athena: Any) -> None:
    """Sockets may take 3 s + 10 s: with less time left, a call that does not answer is given
    up when the invocation's time is over, and a query it started after that is stopped."""
    import time

    from athena_warm.origin import deadline_scope

    def slow(**_: Any) -> None:
        time.sleep(1.0)

    athena_client = athena.clients()[0]
    athena_client.meta.events.register("before-call.athena.StartQueryExecution", slow)
    began = time.monotonic()
    with deadline_scope(time.monotonic() + 0.3, time.monotonic), \
            pytest.raises(OriginError, match="did not answer") as ei:
        athena.start("SELECT 1", (), database="analytics", workgroup=None, catalog=None)
    assert time.monotonic() - began < 0.9 and ei.value.state == "DEADLINE"
    time.sleep(1.5)  # the abandoned call answers on its thread, and stops its query
    (request,) = athena.double.started
    assert request["ClientRequestToken"]
    ids = athena_client.list_query_executions()["QueryExecutionIds"]
    states = {athena_client.get_query_execution(QueryExecutionId=q)["QueryExecution"]["Status"]
              ["State"] for q in ids}
    assert states == {"CANCELLED"}
