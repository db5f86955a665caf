"""Invoke a Lambda handler locally, as a warm container does: same process, same globals.

    from athena_warm.local import invoke
    invoke(handler, {"customer_id": "C0000042"}, timeout=3)

The context has what Lambda's has (request id, function name and ARN, memory size, log group,
``get_remaining_time_in_millis()``), so Powertools' Logger, Metrics and Tracer and athena-warm's
middleware behave as in Lambda. Used by the demo and the tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LambdaContext", "invoke"]


@dataclass
class LambdaContext:
    function_name: str = "athena-warm-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    timeout: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}")
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout - (self.clock() - self.started)) * 1000))


def invoke(handler: Callable[[Any, Any], Any], event: Any = None, *, timeout: float = 30.0,
           memory: int = 512, function_name: str = "athena-warm-local",
           clock: Callable[[], float] = time.monotonic) -> Any:
    """Call ``handler(event, context)`` with a Lambda-shaped context of ``timeout`` seconds."""
    context = LambdaContext(function_name=function_name, memory_limit_in_mb=memory,
                            timeout=timeout, clock=clock)
    return handler({} if event is None else event, context)
