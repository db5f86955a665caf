"""A customer -> account lookup from an Athena table, kept warm by athena-warm.

Environment: ATHENA_WARM_REDIS_URL (the fleet's L2; optional), ATHENA_WARM_S3_STAGING_DIR and
ATHENA_WARM_WORKGROUP (Athena), or ATHENA_WARM_ORIGIN=duckdb:PATH locally; MAPPING_DATABASE,
MAPPING_TTL and MAPPING_TTL_JITTER for the declaration. Handler: customer_lookup.handler. The
demo (`athena-warm demo`) runs this very file.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

from athena_warm import Mapping, get_mapping, prewarm, warm_mappings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "customer-lookup"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "CustomerLookup"))
tracer = Tracer()

CUSTOMERS = Mapping(
    "customer_mapping",
    sql="SELECT customer_id, account_id FROM customer_mapping WHERE active",
    database=os.environ.get("MAPPING_DATABASE", "analytics"),
    key="customer_id",
    value="account_id",
    ttl=os.environ.get("MAPPING_TTL", "24h"),
    ttl_jitter=float(os.environ.get("MAPPING_TTL_JITTER", "0.1")),
    max_stale="7d",
)

# In the init phase: L2's copy if there is one, else the origin within 8 s; never fails the init.
prewarm(CUSTOMERS, logger=logger)

EXECUTIONS = 0  # an execution counter (a module global): invocations served by this container


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
@warm_mappings(CUSTOMERS, logger=logger, tracer=tracer)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global EXECUTIONS
    EXECUTIONS += 1
    customers = get_mapping("customer_mapping")  # pinned for this invocation: a dict lookup
    account = customers.get(event["customer_id"])
    metrics.add_metric(name="Lookups", unit="Count", value=1)
    return {
        "customer_id": event["customer_id"],
        "account_id": account,
        "tier": customers.meta.tier,
        "validated_at": customers.meta.validated_at,  # tables found unchanged: no query
        "executions": EXECUTIONS,
    }
