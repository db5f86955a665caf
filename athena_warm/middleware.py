"""The Lambda integration: a Powertools middleware, prewarm at init, SnapStart hooks, metrics.

    @logger.inject_lambda_context
    @metrics.log_metrics
    @tracer.capture_lambda_handler
    @warm_mappings(CUSTOMERS, logger=logger, tracer=tracer)
    def handler(event, context):
        customers = get_mapping("customer_mapping")

Before the handler runs, the middleware makes the named mappings ready (one generation check
each, within the invocation's remaining time) and pins them for the invocation, so the
handler's lookups are dict lookups. After it, it emits one EMF metrics record per mapping,
from counters aggregated across invocations: one with a load, a failure or stale data is
written at its end; L1 hits alone are written at most once per ``metrics_interval`` (60 s).
Metrics never fail or change an invocation: a flush that fails is logged.
aws-lambda-powertools is imported when ``warm_mappings`` is first called, not with athena_warm.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ._cache import Cache, default_cache
from ._config import resolve, resolve_seconds, truthy
from ._declare import Mapping
from ._events import emit, listeners
from ._view import MappingView
from .exceptions import AthenaWarmError, MappingUnavailableError

log = logging.getLogger("athena_warm")

__all__ = ["prewarm", "register_snapstart", "warm_mappings"]

MappingRef = Mapping | str
DEFAULT_PRICE_PER_TB = 5.0  # Athena's price per TB scanned in most regions (us-east-1)


def _name(m: MappingRef) -> str:
    return m.name if isinstance(m, Mapping) else m


class InvocationMetrics:
    """Counts what the cache does during one invocation (from its events, whatever the log
    level) and flushes it as EMF, one record per mapping, through Powertools'
    EphemeralMetrics."""

    def __init__(self, *, namespace: str | None, service: str | None,
                 price_per_tb: float, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.namespace = namespace
        self.service = service
        self.price_per_tb = price_per_tb
        self.interval = interval  # L1 hits alone wait this long to be written
        self.clock = clock
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.ages: dict[str, float] = {}
        self._last: float | None = None  # the last write (None: none yet; counts from now)
        self._lock = threading.Lock()

    def record(self, fields: dict[str, Any]) -> None:
        event = fields.get("event")
        mapping = fields.get("mapping")
        if event is None or mapping is None:
            return
        with self._lock:
            c = self.counts.get(mapping)
            if c is None:  # created here, dropped below if the event is not one we count
                c = self.counts[mapping] = defaultdict(float)
            self._count(c, event, fields)
            if not c:
                del self.counts[mapping]  # an uncounted event: nothing to write for it

    def _count(self, c: dict[str, float], event: str, fields: dict[str, Any]) -> None:
        tier = fields.get("tier")
        if event == "load" and tier == "origin":
            c["OriginQueries"] += 1
            scanned = fields.get("bytes_scanned") or 0
            c["AthenaBytesScanned"] += scanned
            c["AthenaCostUSD"] += scanned / 1e12 * self.price_per_tb
            if fields.get("reused_previous_result"):
                c["AthenaResultsReused"] += 1
        elif event == "load" and tier == "l2":
            c["L2Loads"] += 1
        elif event == "refresh_failed":
            c["RefreshFailures"] += 1
        elif event == "stale_served":
            c["StaleServed"] += 1
        elif event == "l2_error":
            c["L2Errors"] += 1
        elif event == "l2_corrupt":
            c["L2Corrupt"] += 1
        elif event == "handover":
            c["QueriesHandedOver"] += 1
        elif event == "collect":
            c["QueriesCollected"] += 1
        elif event == "revalidated":
            c["Revalidations"] += 1
        elif event == "table_changed":
            c["TableChanges"] += 1
        elif event == "validate_failed":
            c["ValidationFailures"] += 1

    def served(self, name: str, view: MappingView, now: float) -> None:
        with self._lock:
            tier = view.meta.tier
            self.counts[name]["Hits" + {"l1": "L1", "l2": "L2"}.get(tier, "Origin")] += 1
            self.ages[name] = max(0.0, now - view.meta.loaded_at)

    def due(self) -> bool:
        """Whether to write now: something besides L1 hits happened, or the interval passed."""
        now = self.clock()
        if self._last is None:
            self._last = now
        return any(set(c) - {"HitsL1"} for c in self.counts.values()) or \
            now - self._last >= self.interval

    def publish(self, *, force: bool = False) -> list[Any]:
        """Emit and reset when due (or ``force``); returns the EMF records (also printed to
        stdout, as Lambda wants)."""
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        units = {"AthenaBytesScanned": MetricUnit.Bytes, "AthenaCostUSD": MetricUnit.NoUnit,
                 "CopyAgeSeconds": MetricUnit.Seconds}
        with self._lock:
            if not force and not self.due():
                return []
            counts, ages = self.counts, self.ages
            self.counts = defaultdict(lambda: defaultdict(float))
            self.ages = {}
            self._last = self.clock()
        out: list[Any] = []
        for name in sorted(n for n in set(counts) | set(ages) if counts.get(n) or n in ages):
            metrics = EphemeralMetrics(namespace=self.namespace, service=self.service)
            metrics.add_dimension(name="mapping", value=name)
            for metric, value in sorted(counts[name].items()):
                metrics.add_metric(name=metric, unit=units.get(metric, MetricUnit.Count),
                                   value=value)
            if name in ages:
                metrics.add_metric(name="CopyAgeSeconds", unit=MetricUnit.Seconds,
                                   value=round(ages[name], 3))
            record = metrics.serialize_metric_set()
            metrics.flush_metrics()
            out.append(record)
        return out


def _configure_logging(logger: Any) -> None:
    """Structured log lines for athena_warm: the user's Powertools Logger configuration if one
    is given, else Powertools' JSON formatter of our own (once)."""
    ours = logging.getLogger("athena_warm")
    if logger is not None:
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        copy_config_to_registered_loggers(source_logger=logger, include={"athena_warm"})
    elif not ours.handlers:
        from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(LambdaPowertoolsFormatter(
            service=os.environ.get("POWERTOOLS_SERVICE_NAME", "athena-warm")))
        ours.addHandler(handler)
        ours.propagate = False
    level = resolve(None, "LOG_LEVEL", "INFO").upper()
    if logger is None or ours.level == logging.NOTSET:
        ours.setLevel(level)


def warm_mappings(
    *mappings: MappingRef,
    optional: Sequence[MappingRef] = (),
    cache: Cache | None = None,
    logger: Any = None,
    tracer: Any = None,
    metrics_namespace: str | None = None,
    metrics_interval: str | float | None = None,
    price_per_tb: float | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A Powertools middleware that makes ``mappings`` ready before the handler runs.

    A required mapping that cannot be had fails the invocation with MappingUnavailableError
    (the handler does not run); an ``optional`` one lets the handler run, and its
    ``get_mapping()`` raises the problem. ``logger`` (a Powertools Logger) shares its
    configuration with athena-warm's log lines; ``tracer`` (a Powertools Tracer) gets X-Ray
    subsegments for L2 and origin calls. Metrics go to ``metrics_namespace`` (default
    ``$ATHENA_WARM_METRICS_NAMESPACE``, ``$POWERTOOLS_METRICS_NAMESPACE``, ``athena-warm``):
    an invocation that loaded, failed or served stale data writes its record at its end; L1
    hits alone are added up and written at most once per ``metrics_interval`` (default
    ``$ATHENA_WARM_METRICS_INTERVAL``, 60 s; 0 writes one record per invocation).
    ``ATHENA_WARM_DISABLED=true`` bypasses the cache (every invocation queries the origin).
    """
    from aws_lambda_powertools.middleware_factory import lambda_handler_decorator

    required = [_name(m) for m in mappings]
    optional_names = [_name(m) for m in optional]
    _configure_logging(logger)
    namespace = resolve(metrics_namespace, "METRICS_NAMESPACE",
                        os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "athena-warm")
    price = resolve(price_per_tb, "PRICE_PER_TB", DEFAULT_PRICE_PER_TB, float)
    collector = InvocationMetrics(namespace=namespace,
                                  service=os.environ.get("POWERTOOLS_SERVICE_NAME"),
                                  price_per_tb=price,
                                  interval=resolve_seconds(metrics_interval, "METRICS_INTERVAL",
                                                           60.0))
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
        register_snapstart(cache=cache)

    def middleware(handler: Callable[..., Any], event: Any, context: Any) -> Any:
        c = cache or default_cache()
        collector.clock = c.clock  # the cache's monotonic clock (a test's fake one)
        if tracer is not None and not getattr(tracer, "disabled", False):
            c.span = tracer.provider.in_subsegment
        return _invoke(handler, event, context, c, required, optional_names, collector)

    decorator: Callable[[Callable[..., Any]], Callable[..., Any]] = \
        lambda_handler_decorator(middleware)
    return decorator


def _invoke(handler: Callable[..., Any], event: Any, context: Any, cache: Cache,
            required: list[str], optional: list[str], collector: InvocationMetrics) -> Any:
    cache.disabled = truthy(os.environ.get("ATHENA_WARM_DISABLED"))
    if cache.disabled:
        emit(logging.WARNING, "disabled",
            "athena-warm is disabled by ATHENA_WARM_DISABLED: every mapping is queried "
                    "from the origin in this invocation", extra={})
    remaining = None
    get_remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(get_remaining):
        remaining = get_remaining() / 1000.0
    listeners.append(collector.record)
    try:
        return _run(handler, event, context, cache, required, optional, collector, remaining)
    finally:
        listeners.remove(collector.record)
        try:
            collector.publish()
        except Exception as exc:  # metrics never fail, or change, an invocation
            emit(logging.WARNING, "metrics_failed",
                 "athena-warm could not write its metrics (%s: %s); the invocation is "
                 "unaffected", type(exc).__name__, exc, extra={})


def _run(handler: Callable[..., Any], event: Any, context: Any, cache: Cache,
         required: list[str], optional: list[str], collector: InvocationMetrics,
         remaining: float | None) -> Any:
    with cache.invocation(remaining=remaining):
        for name in required + optional:
            try:  # the generation is checked at most once per check_interval, as anywhere
                view = cache.get(name)
            except AthenaWarmError as exc:
                if name in required:
                    raise MappingUnavailableError(
                        f"required mapping {name!r} is not available, so the handler did not "
                        f"run: {exc}", mapping=name,
                    ) from exc
                emit(logging.WARNING, "unavailable",
                    "athena-warm: optional mapping %s is not available: %s; the "
                            "handler runs and its get_mapping(%r) raises this", name, exc,
                            name, extra={"mapping": name})
                cache.problems[name] = exc
                continue
            collector.served(name, view, cache.wall_clock())
        return handler(event, context)


def prewarm(*mappings: MappingRef, budget: str | float | None = None,
            cache: Cache | None = None, logger: Any = None) -> dict[str, str]:
    """Fill L1 during the init phase (call it at module level). Takes the L2 copy if there is
    one, else queries the origin within ``budget`` seconds in all (default
    ``$ATHENA_WARM_PREWARM_BUDGET`` or 8 s, under Lambda's 10 s init limit). Never raises: on
    trouble it logs and leaves the work to the first invocation. Returns name -> what happened.
    ``ATHENA_WARM_PREWARM=false`` turns it off. ``logger``: as for warm_mappings."""
    if not truthy(os.environ.get("ATHENA_WARM_PREWARM", "true")):
        return {}
    _configure_logging(logger)
    c = cache or default_cache()
    try:
        total = resolve_seconds(budget, "PREWARM_BUDGET", 8.0)
    except AthenaWarmError as exc:
        log.warning("athena-warm prewarm skipped: %s", exc)
        return {}
    start = time.monotonic()
    out: dict[str, str] = {}
    for m in mappings:
        name = _name(m)
        left = total - (time.monotonic() - start)
        if left <= 0:
            out[name] = "skipped: the init budget is spent"
            continue
        try:
            view = c.get(name, remaining=left)
            out[name] = view.meta.tier
        except Exception as exc:
            out[name] = f"failed: {type(exc).__name__}: {exc}"
            emit(logging.WARNING, "prewarm_failed",
                "athena-warm: prewarm of %s did not complete (%s); the first invocation "
                        "loads it", name, exc, extra={"mapping": name})
    emit(logging.INFO, "prewarm",
         "athena-warm: prewarm %s in %.0f ms", out, (time.monotonic() - start) * 1000,
             extra={})
    return out


def register_snapstart(*, cache: Cache | None = None) -> bool:
    """With SnapStart (Python 3.12+, snapshot-restore-py installed): close L2's connections
    before the snapshot, and after a restore re-derive every copy's age from the wall clock.
    Returns whether the hooks were registered."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(lambda: (cache or default_cache()).before_snapshot())
    register_after_restore(lambda: (cache or default_cache()).after_restore())
    return True
