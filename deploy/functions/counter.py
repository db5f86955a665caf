"""The classic example: a module-global counter survives between invocations of one
warm container (Lambda's freeze/thaw), and starts again at 1 in every new container."""

from __future__ import annotations

from typing import Any

EXECUTIONS = 0


def handler(event: Any, context: Any) -> str:
    global EXECUTIONS
    EXECUTIONS += 1
    print(f"Number of execution: {EXECUTIONS}")
    return "okay"
