"""The cache's events: one structured log line each, and the listeners that count them.

Every load, publish, refresh, invalidation and fallback goes through ``emit``: it logs on the
``athena_warm`` logger (when that level is enabled) and hands the fields to the listeners (the
middleware's per-invocation metrics) whatever the log level, so metrics never depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

log = logging.getLogger("athena_warm")

EventName = Literal[
    "collect",
    "disabled",
    "generation_new",
    "handover",
    "invalidate",
    "invalidated",
    "l1_evict",
    "l1_over_budget",
    "l2_corrupt",
    "l2_error",
    "load",
    "load_dropped",
    "metrics_failed",
    "prewarm",
    "prewarm_failed",
    "publish",
    "publish_failed",
    "publish_fenced",
    "publish_skipped",
    "refresh_deferred",
    "refresh_failed",
    "renewed",
    "restore",
    "revalidated",
    "stale_served",
    "table_changed",
    "unavailable",
    "validate_failed",
    "validate_unknown",
]

Listener = Callable[[dict[str, Any]], None]
listeners: list[Listener] = []


def emit(level: int, event: EventName, msg: str, *args: Any, extra: dict[str, Any]) -> None:
    """Log ``msg`` with ``extra`` and ``event`` as structured fields, and tell the listeners."""
    extra = {**extra, "event": event}
    if log.isEnabledFor(level):
        log.log(level, msg, *args, extra=extra, stacklevel=2)
    if listeners:
        try:
            told = {**extra, "message": msg % args if args else msg}
        except (TypeError, ValueError):
            told = extra
        for listener in listeners:
            listener(told)


def brief(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one printable line of at most ``limit`` characters: a server's
    error may quote what it was sent (a binary payload), which no log line should carry."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def l2_corrupt(mapping: str, reason: str) -> None:
    """Something read from L2 is unusable: a logged miss, with the reason (``L2Corrupt``)."""
    emit(logging.WARNING, "l2_corrupt",
         "athena-warm: the L2 copy of %s is unusable (%s); treating it as a miss, the next "
         "load replaces it", mapping, reason, extra={"mapping": mapping, "reason": reason})
