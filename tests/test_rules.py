"""The pure freshness rules, tested directly (no cache, no tier, no clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from athena_warm import _rules as rules
from athena_warm.l2 import Generation, Lease, Pointer, parse_generation

E1, E2 = "0123456789abcdef", "fedcba9876543210"


def test_state_fresh_stale_too_old() -> None:
    assert rules.state(10, 20, 30) == "fresh"
    assert rules.state(20, 20, 30) == "stale"  # the TTL's end is already stale
    assert rules.state(30, 20, 30) == "too_old"  # ttl + max_stale is never served


def test_a_copy_matches_only_its_exact_epoch_and_number() -> None:
    g = Generation(E1, 3, 0)
    assert rules.copy_matches(E1, 3, g)
    assert rules.copy_matches(E1, 4, g)  # invalidate --refresh published it before the bump
    assert not rules.copy_matches(E1, 2, g)  # invalidated since
    assert not rules.copy_matches(E1, 5, g)
    assert not rules.copy_matches(E2, 3, g)  # the counter was lost since: another epoch
    assert not rules.copy_matches("", 3, g)  # loaded without L2


def test_below_floor() -> None:
    assert rules.below_floor(E1, 2, Generation(E1, 3, 3))
    assert not rules.below_floor(E1, 3, Generation(E1, 3, 3))
    assert not rules.below_floor(E2, 0, Generation(E1, 3, 0))  # no floor: soft only
    assert rules.below_floor(E2, 9, Generation(E1, 3, 1))  # cannot show it is newer


def test_next_look_and_lease_ttl() -> None:
    assert rules.next_look(100, 3700, shared=True, check_interval=30) == 130
    assert rules.next_look(100, 3700, shared=False, check_interval=30) == 3700
    assert rules.next_look(100, 110, shared=True, check_interval=30) == 110
    assert rules.lease_ttl(deadline_left=0.2, async_timeout=None, refresh_timeout=300) == 6.0


@given(elapsed=st.floats(0, 1e6), budget=st.none() | st.floats(0, 900))
def test_work_never_exceeds_the_invocation(elapsed: float, budget: float | None) -> None:
    work = rules.work_seconds(elapsed, budget=budget)
    assert 0 <= work <= elapsed
    if budget is not None:
        assert work <= budget


@given(estimate=st.floats(0, 1e6), left=st.floats(0.01, 900))
def test_an_estimate_vetoes_a_refresh_a_bounded_number_of_times(estimate: float,
                                                                left: float) -> None:
    times = 0
    while rules.should_defer(left, estimate):
        estimate = rules.after_deferral(estimate)
        times += 1
    assert times <= 80  # halving: log2(estimate / left) + 1 at most
    assert not rules.should_defer(None, estimate)  # no deadline: never deferred


def test_poll_interval_stays_between_20_and_50_ms() -> None:
    seen, interval = [], None
    for _ in range(10):
        interval = rules.poll_interval(interval)
        seen.append(interval)
    assert seen[0] == 0.02 and max(seen) == 0.05 and seen == sorted(seen)


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_parsers_never_raise(raw: bytes | str) -> None:
    Lease.decode(raw)
    Pointer.decode(raw)
    parse_generation(raw, raw, raw)


def test_lease_and_pointer_round_trip() -> None:
    lease = Lease("abcdef12", 7, 1.7e9, query_id="q-1", failed="OriginError: x",
                  failed_type="OriginError")
    assert Lease.decode(lease.encode()) == lease
    assert Lease.decode(lease.encode().encode()) == lease
    ptr = Pointer("abc123", 3, E1, 4, 1_700_000_000_000)
    assert Pointer.decode(ptr.encode()) == ptr
    assert ptr.older_than(E1, 5, 0) and ptr.older_than(E1, 4, 1_700_000_000_001)
    assert not ptr.older_than(E1, 4, 1_700_000_000_000) and ptr.older_than(E2, 0, 0)
    assert parse_generation(E1, "2", None) == Generation(E1, 2, 0)
    assert parse_generation(E1, str(2**53), "0") is None
