"""The Lambda integration: the middleware stacked with Powertools, its EMF and log lines, cold
and warm invocations, required and optional mappings, the kill switch, prewarm, SnapStart."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

import athena_warm
from athena_warm import Cache, Mapping, MappingUnavailableError, get_mapping
from athena_warm.exceptions import OriginError
from athena_warm.local import LambdaContext, invoke
from athena_warm.middleware import prewarm, register_snapstart, warm_mappings
from tests.conftest import FakeClock
from tests.helpers import CountingOrigin, declare


def lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def captured(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    got = capsys.readouterr()
    return lines(got.out + "\n" + got.err)


def emf(records: list[dict[str, Any]], *, ours: bool = True) -> list[dict[str, Any]]:
    """EMF records: athena-warm's (they carry the mapping dimension) or the user's."""
    return [r for r in records if "_aws" in r and ("mapping" in r) == ours]


def logs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "level" in r and "athena-warm" in str(r.get("message"))]


@pytest.fixture
def powertools(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Logger, Metrics, Tracer; made after capsys, so the Logger writes where capsys reads."""
    import uuid

    service = f"lookup-{uuid.uuid4().hex[:8]}"  # Powertools keeps one logger per service name
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Lookup")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    import io

    from aws_lambda_powertools import Logger, Metrics, Tracer


    stream = io.StringIO()  # where the Logger (and, sharing its handler, athena-warm) writes
    return Logger(stream=stream), Metrics(), Tracer(), stream


def make_handler(powertools: Any, cache: Cache, *, order: str = "powertools-outside",
                 **kw: Any) -> Any:
    logger, metrics, tracer, _ = powertools
    calls: list[str] = []

    def body(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event["customer_id"])
        m = get_mapping("customers")
        metrics.add_metric(name="Lookups", unit="Count", value=1)
        return {"account": m.get(event["customer_id"]), "tier": m.meta.tier}

    warm = warm_mappings("customers", cache=cache, logger=logger, tracer=tracer, **kw)
    if order == "powertools-outside":
        handler = logger.inject_lambda_context(metrics.log_metrics(
            tracer.capture_lambda_handler(warm(body))))
    else:
        handler = warm(logger.inject_lambda_context(metrics.log_metrics(
            tracer.capture_lambda_handler(body))))
    handler.calls = calls  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize("order", ["powertools-outside", "athena-warm-outside"])
def test_cold_then_warm_with_logger_metrics_tracer(
    duck: Any, powertools: Any, capsys: pytest.CaptureFixture[str], order: str
) -> None:
    declare()
    origin = CountingOrigin(duck)
    cache = athena_warm.configure(origin=origin, l2=False)
    handler = make_handler(powertools, cache, order=order)

    stream = powertools[3]
    cold = invoke(handler, {"customer_id": "C0008"}, timeout=3)
    out = captured(capsys) + lines(stream.getvalue())
    assert cold == {"account": "A1", "tier": "origin"}
    (record,) = emf(out)
    service = os.environ["POWERTOOLS_SERVICE_NAME"]
    assert record["mapping"] == "customers" and record["service"] == service
    cw = record["_aws"]["CloudWatchMetrics"][0]
    assert cw["Namespace"] == "Lookup"  # the function's namespace, with a mapping dimension
    assert cw["Dimensions"] == [["mapping", "service"]]
    units = {m["Name"]: m["Unit"] for m in cw["Metrics"]}
    assert units == {"HitsOrigin": "Count", "OriginQueries": "Count", "AthenaBytesScanned": "Bytes",
                     "AthenaCostUSD": "None", "CopyAgeSeconds": "Seconds"}
    assert record["HitsOrigin"] == [1.0] and record["OriginQueries"] == [1.0]
    assert emf(out, ours=False)[0]["Lookups"] == [1.0]  # the user's own metrics still flush
    (load,) = [r for r in logs(out) if r.get("event") == "load"]
    assert load["mapping"] == "customers" and load["tier"] == "origin" and load["rows"] == 1000
    assert load["level"] == "INFO" and load["service"] == service and "ms" in load
    if order == "powertools-outside":  # Logger.inject_lambda_context's keys reach our lines
        assert load["function_request_id"] and load["cold_start"] is True

    seen = len(stream.getvalue())
    warm = invoke(handler, {"customer_id": "C0009"}, timeout=3)
    out = captured(capsys) + lines(stream.getvalue()[seen:])
    assert warm == {"account": "A2", "tier": "l1"} and origin.calls == 1
    assert emf(out) == []  # L1 hits alone are added up: written once per metrics_interval
    assert [r for r in logs(out) if r.get("event") == "load"] == []  # an L1 hit logs nothing
    every = make_handler(powertools, cache, order=order, metrics_interval=0)
    invoke(every, {"customer_id": "C0009"}, timeout=3)
    (record,) = emf(captured(capsys))
    assert record["HitsL1"] == [1.0] and "OriginQueries" not in record


def test_l1_hits_are_written_once_per_metrics_interval(
        duck: Any, powertools: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A hot function pays for one EMF record a minute, not one per invocation: 1,000
    invocations a second would otherwise write ~350 MB of logs a day."""
    from tests.conftest import FakeClock

    declare()
    clock = FakeClock()
    cache = athena_warm.configure(origin=CountingOrigin(duck), l2=False, clock=clock)
    handler = make_handler(powertools, cache)
    invoke(handler, {"customer_id": "C0008"}, timeout=3)  # the load: written at once
    assert emf(captured(capsys))[0]["OriginQueries"] == [1.0]
    for _ in range(24):  # t = 0 .. 57.5 s: nothing written
        invoke(handler, {"customer_id": "C0008"}, timeout=3)
        clock.advance(2.5)
    assert emf(captured(capsys)) == []
    invoke(handler, {"customer_id": "C0008"}, timeout=3)  # t = 60 s: all 25 in one record
    (record,) = emf(captured(capsys))
    assert record["HitsL1"] == [25.0] and "CopyAgeSeconds" in record


def test_metrics_never_fail_an_invocation(duck: Any, powertools: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Events the metrics do not count (refresh_deferred, unavailable) must not make an
    empty record (Powertools raises 'Must contain at least one metric'), and a flush that
    fails for any reason is logged, never raised."""
    declare()
    declare("broken", sql="SELECT nope FROM nowhere")
    origin = CountingOrigin(duck)
    cache = athena_warm.configure(origin=origin, l2=False)
    _, metrics, _, _ = powertools

    def body(event: Any, context: Any) -> str:
        metrics.add_metric(name="Lookups", unit="Count", value=1)
        return "ran"

    optional = metrics.log_metrics(
        warm_mappings("customers", optional=["broken"], cache=cache)(body))
    assert invoke(optional, {}, timeout=3) == "ran"
    required = metrics.log_metrics(warm_mappings("broken", cache=cache)(body))
    with pytest.raises(MappingUnavailableError):  # not SchemaValidationError
        invoke(required, {}, timeout=3)

    import athena_warm.middleware as mw

    def broken_publish(self: Any, **_: Any) -> Any:
        raise RuntimeError("CloudWatch says no")

    real = mw.InvocationMetrics.publish
    mw.InvocationMetrics.publish = broken_publish  # type: ignore[method-assign]
    try:
        assert invoke(optional, {}, timeout=3) == "ran"
    finally:
        mw.InvocationMetrics.publish = real  # type: ignore[method-assign]


def test_required_mapping_unavailable_fails_the_invocation(duck: Any, powertools: Any) -> None:
    declare()
    origin = CountingOrigin(duck)
    origin.fail = OriginError("table not found", origin="counting", state="FAILED")
    cache = athena_warm.configure(origin=origin, l2=False)
    handler = make_handler(powertools, cache)
    with pytest.raises(MappingUnavailableError) as ei:
        invoke(handler, {"customer_id": "C0008"}, timeout=3)
    assert "required mapping 'customers' is not available, so the handler did not run" in \
        str(ei.value) and "table not found" in str(ei.value)
    assert handler.calls == []


def test_optional_mapping_lets_the_handler_see_the_problem(duck: Any) -> None:
    declare()
    declare("extras", sql="SELECT nope FROM customers", key="nope", value=None)
    cache = athena_warm.configure(origin=duck, l2=False)
    seen: list[str] = []

    @warm_mappings("customers", optional=["extras"], cache=cache)
    def handler(event: Any, context: Any) -> str:
        seen.append(get_mapping("customers").meta.tier)
        try:
            get_mapping("extras")
        except OriginError as exc:
            seen.append(f"extras: {exc.state}")
        return "ok"

    assert invoke(handler, {}) == "ok"
    assert seen == ["origin", "extras: FAILED"]


def test_kill_switch_bypasses_the_cache(duck: Any, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    declare()
    origin = CountingOrigin(duck)
    cache = athena_warm.configure(origin=origin, l2=False)

    @warm_mappings("customers", cache=cache)
    def handler(event: Any, context: Any) -> Any:
        get_mapping("customers")  # pinned for the invocation: one query, not one per call
        return get_mapping("customers").get("C0008")

    assert invoke(handler) == "A1" and invoke(handler) == "A1" and origin.calls == 1
    monkeypatch.setenv("ATHENA_WARM_DISABLED", "true")
    assert invoke(handler) == "A1" and invoke(handler) == "A1"
    assert origin.calls == 3  # one query per invocation while disabled
    warnings = [r for r in logs(captured(capsys)) if r["level"] == "WARNING"]
    assert any("disabled by ATHENA_WARM_DISABLED" in r["message"] for r in warnings)
    monkeypatch.delenv("ATHENA_WARM_DISABLED")
    assert invoke(handler) == "A1" and origin.calls == 3  # L1 again


def test_the_invocations_deadline_reaches_the_cache(slow_athena: Any, clock: FakeClock) -> None:
    declare()
    cache = athena_warm.configure(origin=slow_athena, l2=False, clock=clock, sleep=clock.advance)

    @warm_mappings("customers", cache=cache)
    def handler(event: Any, context: Any) -> str:
        return "ran"

    with pytest.raises(MappingUnavailableError, match="was started and a later invocation"):
        invoke(handler, timeout=1.0, clock=clock)
    assert len(slow_athena.double.started) == 1


@pytest.fixture
def slow_athena(athena: Any) -> Any:
    from moto.moto_api import state_manager

    state_manager.set_transition("athena::execution", {"progression": "manual", "times": 10})
    yield athena
    state_manager.unset_transition("athena::execution")


def test_generation_is_checked_at_most_once_per_check_interval(duck: Any,
                                                               redis_url: str) -> None:
    """One rule, in or out of the middleware: a warm container asks the shared tier for the
    generation at most once per check_interval (an S3 GET costs money and tens of ms)."""
    from athena_warm.adapters.redis import RedisL2

    from tests.conftest import FakeClock

    checks: list[str] = []

    class Counting(RedisL2):
        def generation(self, mapping: str) -> Any:
            checks.append(mapping)
            return super().generation(mapping)

    declare()
    clock = FakeClock()
    cache = athena_warm.configure(origin=duck, l2=Counting(redis_url), check_interval=30,
                                  clock=clock)

    @warm_mappings("customers", cache=cache)
    def handler(event: Any, context: Any) -> Any:
        for _ in range(100):
            get_mapping("customers")
        return get_mapping("customers").meta.generation

    invoke(handler)
    checks.clear()
    for _ in range(50):  # 50 invocations within the interval: no check at all
        assert invoke(handler) == 0
        clock.advance(0.5)
    assert checks == []
    other = athena_warm.Cache(origin=duck, l2=RedisL2(redis_url))
    other.invalidate("customers")  # another container's invalidation
    assert invoke(handler) == 0  # not seen yet: within check_interval
    clock.advance(6)
    assert invoke(handler) == 1 and checks == ["customers"]  # seen at the next check


def test_tracer_gets_subsegments_for_origin_and_l2(duck: Any, redis_url: str) -> None:
    import contextlib

    names: list[str] = []

    class Provider:
        @contextlib.contextmanager
        def in_subsegment(self, name: str) -> Any:
            names.append(name)
            yield None

    class RecordingTracer:  # the part of Powertools' Tracer the middleware uses
        disabled = False
        provider = Provider()

    declare()
    cache = athena_warm.configure(origin=duck, l2=redis_url)
    handler = warm_mappings("customers", cache=cache, tracer=RecordingTracer())(
        lambda event, context: "ok")
    invoke(handler)
    assert set(names) == {"## athena-warm L2 read", "## athena-warm validate",
                          "## athena-warm origin query", "## athena-warm L2 write"}
    assert names.index("## athena-warm origin query") < names.index("## athena-warm L2 write")


# -- prewarm ---------------------------------------------------------------------------------


def test_prewarm_fills_l1_at_init(duck: Any) -> None:
    declare()
    origin = CountingOrigin(duck)
    cache = athena_warm.configure(origin=origin, l2=False)
    assert prewarm("customers", cache=cache) == {"customers": "origin"}

    @warm_mappings("customers", cache=cache)
    def handler(event: Any, context: Any) -> str:
        return get_mapping("customers").meta.tier

    assert invoke(handler) == "l1" and origin.calls == 1  # the first invocation is warm


def test_prewarm_never_fails_the_init(duck: Any, slow_athena: Any) -> None:
    declare()
    declare("broken", sql="SELECT nope FROM customers", key="nope", value=None)
    cache = athena_warm.configure(origin=duck, l2=False)
    got = prewarm("broken", "customers", "unknown", cache=cache)
    assert got["customers"] == "origin"
    assert got["broken"].startswith("failed: OriginError") and "nope" in got["broken"]
    assert got["unknown"].startswith("failed: UnknownMappingError")
    # Athena slower than the budget: the query is started, the init goes on.
    slow = athena_warm.configure(origin=slow_athena, l2=False)
    athena_warm.declarations.unregister("customers")
    declare()
    # (1.5 s for the start call after the 0.5 s deadline margin: a cold boto3 client on a busy
    # machine, Python 3.13 in CI, took longer than 0.1 s; the query stays RUNNING for 10 polls)
    got = prewarm("customers", cache=slow, budget=2.0)
    assert got["customers"].startswith("failed: DeadlineError"), got
    assert len(slow_athena.double.started) == 1


def test_prewarm_budget_and_switch(duck: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    declare()
    cache = athena_warm.configure(origin=duck, l2=False)
    assert prewarm("customers", cache=cache, budget=0) == {
        "customers": "skipped: the init budget is spent"}
    monkeypatch.setenv("ATHENA_WARM_PREWARM", "false")
    assert prewarm("customers", cache=cache) == {}


# -- SnapStart ---------------------------------------------------------------------------------


def test_after_restore_rederives_ages_from_the_wall_clock(duck: Any) -> None:
    declare("short", max_stale="1d")
    declare("long", sql="SELECT customer_id, n FROM customers", value="n", max_stale="7d")
    mono, wall = FakeClock(1000), FakeClock(1.7e9)
    origin = CountingOrigin(duck)
    cache = Cache(origin=origin, l2=False, clock=mono, wall_clock=wall)
    cache.get("short")
    cache.get("long")
    cache.before_snapshot()
    mono.now = 5.0  # a restored microVM: the monotonic clock tells nothing
    wall.advance(3 * 86400)  # restored three days later
    cache.after_restore()
    held = {k[0] for k, _ in cache.l1.items()}
    assert held == {"long"}  # "short" is past ttl + max_stale: dropped
    m = cache.get("long")  # stale (3 days > 1 h), so it is refreshed now
    assert m.meta.tier == "origin" and origin.calls == 3


def test_register_snapstart_hooks(duck: Any, redis_url: str) -> None:
    import snapshot_restore_py as snap

    declare()
    cache = Cache(origin=duck, l2=redis_url)
    cache.get("customers")
    assert cache.l2._client is not None  # type: ignore[union-attr]
    assert register_snapstart(cache=cache) is True
    try:
        for hook in snap.get_before_snapshot():
            hook[0]()
        assert cache.l2._client is None  # type: ignore[union-attr]  closed
        for hook in snap.get_after_restore():
            hook[0]()
        assert cache.get("customers").meta.tier in ("l1", "l2")
    finally:
        snap._before_snapshot_registry.clear()
        snap._after_restore_registry.clear()


# -- the local invoker -------------------------------------------------------------------------


def test_local_context_is_lambda_shaped() -> None:
    clock = FakeClock()
    ctx = LambdaContext(function_name="f", memory_limit_in_mb=256, timeout=3, clock=clock)
    assert ctx.get_remaining_time_in_millis() == 3000
    clock.advance(1.25)
    assert ctx.get_remaining_time_in_millis() == 1750
    assert ctx.invoked_function_arn.endswith(":function:f") and ctx.aws_request_id
    assert ctx.log_group_name == "/aws/lambda/f"


def test_example_functions(duck: Any, lake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from athena_warm.examples import counter

    assert [invoke(counter.handler) for _ in range(2)] == ["okay", "okay"]
    assert counter.EXECUTIONS == 2
    monkeypatch.setenv("ATHENA_WARM_ORIGIN", f"duckdb:{lake}")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("ATHENA_WARM_PREWARM", "false")
    athena_warm.configure(l2=False)
    import athena_warm.examples.customer_lookup as app

    app = importlib.reload(app) if app.EXECUTIONS else app
    # The same name, on this test lake's table.
    athena_warm.declarations.unregister("customer_mapping")
    Mapping("customer_mapping", sql="SELECT customer_id, account_id FROM customers WHERE active",
            database="analytics", key="customer_id", value="account_id")
    first = invoke(app.handler, {"customer_id": "C0003"})
    second = invoke(app.handler, {"customer_id": "C0006"})
    assert first == {"customer_id": "C0003", "account_id": "A3", "tier": "origin",
                     "validated_at": None, "executions": 1}
    assert second["tier"] == "l1" and second["executions"] == 2


def test_metrics_do_not_depend_on_the_log_level(duck: Any, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATHENA_WARM_LOG_LEVEL", "ERROR")
    declare()
    cache = athena_warm.configure(origin=duck, l2=False)
    handler = warm_mappings("customers", cache=cache)(lambda event, context: "ok")
    assert invoke(handler) == "ok"
    out = captured(capsys)
    (record,) = emf(out)
    assert record["OriginQueries"] == [1.0] and record["HitsOrigin"] == [1.0]
    assert [r for r in logs(out) if r.get("event") == "load"] == []  # INFO lines suppressed
