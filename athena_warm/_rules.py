"""The freshness rules, as pure functions of times and numbers (no I/O, no clock reads).

A copy of a mapping is
  fresh         younger than its TTL (shortened per container by a random jitter, so containers
                loaded together do not all come due together) and of the current generation;
  stale         older than that, or of an older generation, but younger than ttl + max_stale:
                served while exactly one refresher (the lease holder) reloads it, and served
                when the refresh fails (stale-if-error), loudly;
  too old       older than ttl + max_stale: never served; with no fresh copy, an error.

Times: ``now`` and the ``*_at``/``*_until`` of an entry are monotonic seconds (this process);
``created_at`` is epoch seconds (crosses processes). Every function here is tested directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from .l2 import Generation

State = Literal["fresh", "stale", "too_old"]

DEADLINE_MARGIN = 0.5  # seconds kept back from an invocation's deadline to return in time
LEASE_SLACK = 5.0  # a lease outlives its holder's deadline by this much
ASYNC_LEASE_SLACK = 60.0  # ... and a handed-over query's timeout by this much
# Below this many seconds left, a refresh does not look at the tables' metadata first (a Glue
# call, and the client's first creation, take tens to hundreds of ms): the query starts at once.
VALIDATE_MIN_LEFT = 3.0
COLLECT_CLAIM_TTL = 120.0  # one container downloads a finished handed-over result: its claim
POLL_FIRST, POLL_MAX = 0.02, 0.05  # waiting for another container's copy: look this often


def jittered(ttl: float, jitter: float, rand: Callable[[], float]) -> float:
    """The TTL this container uses: ``ttl`` shortened by up to ``jitter`` (a fraction)."""
    return ttl * (1.0 - jitter * rand())


def state(now: float, expires_at: float, stale_until: float) -> State:
    """Where a copy stands: fresh until ``expires_at``, stale until ``stale_until``."""
    if now < expires_at:
        return "fresh"
    return "stale" if now < stale_until else "too_old"


def copy_matches(epoch: str, number: int, current: Generation) -> bool:
    """Whether a copy made at generation (``epoch``, ``number``) is of the current generation.
    ``number == current + 1`` is a copy that ``invalidate --refresh`` published just before its
    bump: newer data, so it counts. Another epoch never matches (the counter was lost since)."""
    return epoch == current.epoch and current.number <= number <= current.number + 1


def below_floor(epoch: str, number: int, current: Generation) -> bool:
    """A copy that a hard invalidation put out of service (not even served as stale). A copy
    of another epoch (made before the counter was lost, or without L2) cannot show it is not
    older than the floor, so when there is a floor it is out too."""
    if epoch != current.epoch:
        return current.floor > 0
    return number < current.floor


def next_look(now: float, expires_at: float, *, shared: bool, check_interval: float) -> float:
    """When a fresh copy is looked at again: at its expiry, or sooner to check the generation."""
    return min(expires_at, now + check_interval) if shared else expires_at


def lease_ttl(*, deadline_left: float | None, async_timeout: float | None,
              refresh_timeout: float) -> float:
    """How long a lease lives if its holder disappears. A handed-over Athena query must outlive
    the invocation; a synchronous holder cannot run past its deadline."""
    if async_timeout is not None:
        return async_timeout + ASYNC_LEASE_SLACK
    if deadline_left is not None:
        return max(1.0, deadline_left) + LEASE_SLACK
    return refresh_timeout


def work_seconds(elapsed: float, *, budget: float | None) -> float:
    """How long a load took, for the next holder's estimate. Inside an invocation nothing can
    take longer than the invocation had: anything beyond ``budget`` was time frozen or stalled,
    not work, so it is not counted."""
    return max(0.0, elapsed if budget is None else min(elapsed, budget))


def should_defer(left: float | None, expected: float) -> bool:
    """Whether not to start a blocking load now: it would not finish in the time left."""
    return left is not None and left <= expected


def after_deferral(expected: float) -> float:
    """The estimate once a refresh was deferred on it: halved, so an estimate that was wrong
    (or measured across a stall) delays refreshes a few times at most, never indefinitely."""
    return expected / 2.0


def poll_interval(previous: float | None) -> float:
    """How long a waiter sleeps before looking for the refresher's copy again."""
    return POLL_FIRST if previous is None else min(previous * 1.5, POLL_MAX)


def may_serve_stale(now: float, stale_until: float) -> bool:
    return now < stale_until
