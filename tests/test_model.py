"""A model-based test of the refresh path: several containers (each its own Cache and L1) share
one in-memory tier and one fake clock, through freezes mid-refresh, origin failures and bad
data, table updates, invalidations (soft, --refresh, --hard), tier outages, losses and damage,
with revalidation (a validator that names the table's version, or fails) at each TTL and every
``validate_interval``. The freshness invariants are checked after every step.

CI runs a short profile (under a minute); ``ATHENA_WARM_MODEL_PROFILE=long`` runs a long one.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from athena_warm import AthenaWarmError, _declare
from athena_warm._codec import CorruptPayloadError, decode
from athena_warm.exceptions import (
    DeadlineError,
    OriginError,
    RefreshError,
    ResultShapeError,
    StaleLimitError,
)
from athena_warm.l2 import MemoryTier
from tests.faults import Clocks, Table, TableOrigin, container, declare_table

TTL, MAX_STALE, RETRY, CHECK, VALIDATE_EVERY = 60.0, 300.0, 5.0, 10.0, 20.0
REFRESH_TIMEOUT = 120.0
CONTAINERS = 3
FP_NAME = "customers"

settings.register_profile("ci", max_examples=300, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, stateful_step_count=80, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("ATHENA_WARM_MODEL_PROFILE", "ci")


class ModelOrigin(TableOrigin):
    """A container's origin: the fleet's table, the fleet's failure mode, and a record of the
    queries in flight (to check the single-flight invariant)."""

    def __init__(self, model: FleetModel, index: int) -> None:
        super().__init__(model.table)
        self.model, self.index = model, index

    def query(self, sql: str, params: Any, **kw: Any) -> Any:
        m = self.model
        self.fail, self.bad = m.fail, m.bad
        holder = _holder(m) if m.tier.available else None
        if m.tier.available:
            # While the tier is reachable, a query runs only under a live lease (its own), and
            # no other query in flight still holds a live lease: one per mapping, fleet-wide.
            assert holder is not None, "a query started without the fleet's lease"
            assert holder not in m.in_flight, f"two queries under one lease: {m.in_flight}"
        m.queries += 1
        m.in_flight.append(holder)
        try:
            return super().query(sql, params, **kw)
        finally:
            m.in_flight.pop()

    def validator(self, tables: Any, **kw: Any) -> str:
        """The table's version, or the fleet's validator failure."""
        m = self.model
        m.checks += 1
        if m.validator_fails:
            raise OriginError("Glue is down", state="ERROR")
        return f"v{m.table.version}"


def _holder(m: FleetModel) -> str | None:
    lease = m.tier.info(FP_NAME, m.fp)
    return lease.token if lease is not None else None


class FleetModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        _declare.REGISTRY.clear()
        self.decl = declare_table(FP_NAME, ttl=TTL, max_stale=MAX_STALE, ttl_jitter=0.1,
                                  validate_interval=VALIDATE_EVERY)
        self.fp = self.decl.fingerprint
        self.clocks = Clocks()
        self.tier = MemoryTier(clock=self.clocks.mono)
        self.table = Table()
        self.fail: BaseException | None = None
        self.bad: str | None = None
        self.in_flight: list[str | None] = []
        self.queries = 0
        self.checks = 0
        self.validator_fails = False
        self.history: list[tuple[float, int]] = [(0.0, 1)]  # (wall time, version from then)
        self.origins = [ModelOrigin(self, i) for i in range(CONTAINERS)]
        self.caches = [container(self.clocks, self.tier, self.origins[i],
                                 retry_interval=RETRY, check_interval=CHECK,
                                 refresh_timeout=REFRESH_TIMEOUT,
                                 random=lambda i=i: (i + 0.5) / CONTAINERS)
                       for i in range(CONTAINERS)]
        self.operator = container(self.clocks, self.tier, TableOrigin(self.table),
                                  retry_interval=RETRY, check_interval=CHECK)
        self.served: list[int] = [0] * CONTAINERS  # the newest version each has served
        self.published = 0  # the newest version seen in the tier (0: none since it was lost)
        self.bumped_at: float | None = None  # wall time of the latest invalidation
        self.hard_at: float | None = None  # ... of the latest hard one

    # -- the world ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 11.0, 31.0, 61.0, 130.0, 301.0]))
    def advance(self, seconds: float) -> None:
        self.clocks.advance(seconds)

    @rule(kind=st.sampled_from(["origin", "duplicate", "empty", "missing", "client",
                                "validator"]))
    def origin_fails(self, kind: str) -> None:
        self.fail, self.bad = None, None
        if kind == "validator":
            self.validator_fails = True
        elif kind == "origin":
            self.fail = OriginError("Athena is down", state="FAILED")
        elif kind == "client":
            self.fail = ValueError("cannot build the client")
        else:
            self.bad = kind

    @rule()
    def origin_recovers(self) -> None:
        self.fail, self.bad = None, None
        self.validator_fails = False

    @rule()
    def table_changes(self) -> None:
        self._change()

    def _change(self) -> None:
        self.clocks.advance(0.001)  # a change is strictly after what was checked before it
        self.table.version += 1
        self.history.append((self.clocks.wall(), self.table.version))

    def version_at(self, wall: float) -> int:
        return [v for t, v in self.history if t <= wall][-1]

    @rule()
    def l2_down(self) -> None:
        self.tier.available = False

    @rule()
    def l2_up(self) -> None:
        self.tier.available = True

    @rule()
    def l2_flushed(self) -> None:
        self.tier.flush()
        self.published, self.hard_at = 0, None  # lost: what was published, and the floor

    @rule(what=st.sampled_from(["ptr", "gen", "lease", "chunk"]),
          raw=st.sampled_from([b"garbage", b"\xff\xfe", b"1:2:3", b""]))
    def corrupt(self, what: str, raw: bytes) -> None:
        key = {"ptr": self.tier.key(FP_NAME, self.fp, "ptr"),
               "gen": self.tier.key(FP_NAME, "gen"),
               "lease": self.tier.key(FP_NAME, self.fp, "lease")}.get(what)
        if key is None:  # a chunk of the current copy
            chunks = [k for k in self.tier.stored_keys() if k.endswith(":0") and self.fp in k]
            if not chunks:
                return
            key = chunks[0]
        self.tier.set_raw(key, raw, ttl=600)
        if what in ("ptr", "chunk"):
            self.published = 0  # the copy is gone: any copy may be published next
        if what == "gen":
            self.hard_at = None  # reset to a new epoch: the floor is lost

    @rule(kind=st.sampled_from(["soft", "refresh", "hard"]))
    def invalidate(self, kind: str) -> None:
        self.operator.sleep = self.clocks.advance
        at = self.clocks.wall()
        try:
            if kind == "refresh":
                self.operator.switch(FP_NAME)
            else:
                self.operator.invalidate(FP_NAME, hard=kind == "hard")
        except (AthenaWarmError, ValueError):
            return  # L2 down, or the origin failing: the operator sees the error; no change
        self.bumped_at = at
        if kind == "hard":
            self.hard_at = at

    # -- the containers ----------------------------------------------------------------------

    @rule(i=st.integers(0, CONTAINERS - 1), remaining=st.sampled_from([None, 0.3, 2.0, 30.0]))
    def invoke(self, i: int, remaining: float | None) -> None:
        self._invoke(i, remaining)

    @rule(i=st.integers(0, CONTAINERS - 1), j=st.integers(0, CONTAINERS - 1),
          frozen=st.sampled_from([2.0, REFRESH_TIMEOUT + 1]), change=st.booleans())
    def freeze_mid_refresh(self, i: int, j: int, frozen: float, change: bool) -> None:
        """Container i freezes in the middle of its query (if it queries); meanwhile the clock
        moves on, the table may change, and container j is invoked."""
        origin = self.origins[i]

        def freeze() -> None:
            origin.during = None
            self.clocks.advance(frozen)
            if change:
                self._change()
            if j != i:
                self._invoke(j, 30.0)

        origin.during = freeze
        try:
            self._invoke(i, None)
        finally:
            origin.during = None

    def _invoke(self, i: int, remaining: float | None) -> None:
        try:
            self._invoke_checked(i, remaining)
        finally:
            self.the_fleets_copy_never_goes_back()  # also between nested invocations

    def _invoke_checked(self, i: int, remaining: float | None) -> None:
        cache = self.caches[i]
        try:
            with cache.invocation(remaining=remaining):
                cache.due(FP_NAME)  # the middleware's generation check
                view = cache.get(FP_NAME)
        except AthenaWarmError as exc:
            self._check_error(exc)
            return
        now = self.clocks.wall()
        validated = view.meta.validated_at
        age = now - max(view.meta.loaded_at, validated or 0.0)
        assert age < TTL + MAX_STALE, f"served a copy {age:.1f} s past its last check"
        version = int(next(iter(view.values()))[1:])
        if validated is not None:  # revalidated: the table was at the copy's version then
            assert self.version_at(validated) == version, \
                f"v{version} revalidated at {validated} when the table was " \
                f"v{self.version_at(validated)}"
        assert version >= self.served[i], \
            f"container {i} went back from v{self.served[i]} to v{version}"
        self.served[i] = version
        if self.tier.available:  # the container checked the generation in this invocation
            made = view.meta.loaded_at
            if self.hard_at is not None:
                assert made >= self.hard_at, "served a copy from before a hard invalidation"
            if self.bumped_at is not None and made < self.bumped_at:
                entry = dict(cache.l1.items()).get(self.decl.l1_key)
                assert entry is None or entry.expires_at <= self.clocks.mono(), \
                    "a copy from before an invalidation is held as fresh"

    def _check_error(self, exc: AthenaWarmError) -> None:
        chain: list[str] = []
        e: BaseException | None = exc
        while e is not None:
            chain.append(type(e).__name__)
            e = e.__cause__
        if isinstance(exc, DeadlineError):
            marker = self.tier.info(FP_NAME, self.fp) if self.tier.available else None
            assert marker is None or not marker.failed, \
                f"a DeadlineError while the refresh had already failed: {marker}"
            return
        assert isinstance(exc, (OriginError, ResultShapeError, StaleLimitError, RefreshError)), \
            f"unexpected {type(exc).__name__}: {exc}"
        if isinstance(exc, RefreshError):
            assert exc.cause_type in str(exc)
        if self.fail is not None or self.bad is not None:
            real = type(self.fail).__name__ if self.fail is not None else "ResultShapeError"
            named = str(exc) + " ".join(chain)
            assert real in named or any(n.endswith("Error") and n in named for n in chain), \
                f"the error does not name the cause: {chain}: {exc}"

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def failure_markers_are_short_lived(self) -> None:
        for leases in [self.tier, *(c.refresher.local.tier for c in self.caches)]:
            if not leases.available:
                continue
            marker = leases.info(FP_NAME, self.fp)
            if marker is not None and marker.failed:
                left = leases.lease_expires_in(FP_NAME, self.fp)
                assert left is not None and left <= RETRY + 1e-9, \
                    f"a failure marker lives {left} s more"

    @invariant()
    def the_fleets_copy_never_goes_back(self) -> None:
        if not self.tier.available:
            return
        blob = self.tier.read(FP_NAME, self.fp)
        if blob is None:
            return
        try:
            view, _, _ = decode(blob, fingerprint=self.fp)
        except CorruptPayloadError:
            return
        version = int(next(iter(view.values()))[1:])
        assert version >= self.published, \
            f"the tier went back from v{self.published} to v{version}"
        self.published = version

    @invariant()
    def nothing_in_flight_between_steps(self) -> None:
        assert self.in_flight == []


FleetModel.TestCase.settings = settings.get_profile(PROFILE)
TestFleetModel = FleetModel.TestCase
