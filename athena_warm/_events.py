"""The cache's events: one structured log line each, and the listeners that count them.

Every load, publish, refresh, invalidation and fallback goes through ``emit``: it logs on the
``athena_warm`` logger (when that level is enabled) and hands the fields to the listeners (the
middleware's per-invocation metrics) whatever the log level, so metrics never depend on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("athena_warm")

Listener = Callable[[dict[str, Any]], None]
listeners: list[Listener] = []


def emit(level: int, msg: str, *args: Any, extra: dict[str, Any]) -> None:
    if log.isEnabledFor(level):
        log.log(level, msg, *args, extra=extra, stacklevel=2)
    for listener in listeners:
        listener(extra)
