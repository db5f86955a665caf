"""What athena-warm adds to a warm invocation: an L1 hit through the whole middleware stack.

    python benchmarks/middleware.py [--invocations 20000] [--l2]

The same handler (one lookup) under Powertools' Logger, Metrics and Tracer (tracing disabled,
as outside Lambda), three ways: with a plain module-level dict (what the hand-written pattern
costs at best), with ``warm_mappings`` and ``get_mapping()``, and with ``warm_mappings`` and an
L2 configured (``--l2``: a local Redis; the generation is checked once per check_interval, 30 s,
so almost never within this run). Microseconds per invocation, median of 5 rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from _common import demo_rows, redis_url


def per_invocation(handler: Any, context: Any, n: int) -> float:
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            handler({"customer_id": f"C{i % 1000:07d}"}, context)
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--invocations", type=int, default=20_000)
    ap.add_argument("--l2", action="store_true")
    ap.add_argument("--url")
    args = ap.parse_args()
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bench")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Bench")
    import io
    import logging

    from aws_lambda_powertools import Logger, Metrics, Tracer

    import athena_warm
    from athena_warm import get_mapping, warm_mappings
    from athena_warm.local import LambdaContext
    from athena_warm.origin import Column, QueryResult

    decl, result = demo_rows(200_000)
    plain = {r[0]: r[1] for r in result.rows}

    class Fixed:
        name = "fixed"

        def query(self, *a: Any, **k: Any) -> QueryResult:
            return QueryResult((Column("customer_id", "varchar"),
                                Column("account_id", "varchar")), result.rows)

    sink = io.StringIO()
    logger = Logger(logger_handler=logging.StreamHandler(sink))
    metrics, tracer = Metrics(), Tracer()

    def stack(body: Any) -> Any:
        return logger.inject_lambda_context(metrics.log_metrics(
            tracer.capture_lambda_handler(body)))

    def hand_written(event: Any, context: Any) -> Any:
        metrics.add_metric(name="Lookups", unit="Count", value=1)
        return plain.get(event["customer_id"])

    def with_get_mapping(event: Any, context: Any) -> Any:
        metrics.add_metric(name="Lookups", unit="Count", value=1)
        return get_mapping(decl.name).get(event["customer_id"])

    context = LambdaContext(timeout=30)
    import contextlib
    import sys

    with contextlib.ExitStack() as stack_:
        url = stack_.enter_context(redis_url(args.url)) if args.l2 else None
        athena_warm.configure(origin=Fixed(), l2=url or False)
        warm = stack(warm_mappings(decl.name, logger=logger)(with_get_mapping))
        base = stack(hand_written)
        real_stdout = sys.stdout
        sys.stdout = io.StringIO()  # EMF records go to stdout, as in Lambda
        try:
            warm({"customer_id": "C0000001"}, context)  # the load
            a = per_invocation(base, context, args.invocations)
            b = per_invocation(warm, context, args.invocations)
        finally:
            sys.stdout = real_stdout
    print(f"{'hand-written dict + Powertools stack':<44}{a:>8.1f} us per invocation")
    print(f"{'warm_mappings + get_mapping()' + (' + L2' if args.l2 else ''):<44}{b:>8.1f} us "
          f"per invocation (+{b - a:.1f} us)")


if __name__ == "__main__":
    main()
