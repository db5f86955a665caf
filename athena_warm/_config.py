"""Settings: ``argument > ATHENA_WARM_* environment variable > default``, resolved in one place."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from .exceptions import ConfigurationError

T = TypeVar("T")

ENV_PREFIX = "ATHENA_WARM_"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_BYTES_UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BYTES_IUNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


MAX_SECONDS = 3650 * 86400.0  # ten years: any expiry a tier stores fits


def parse_duration(value: str | float | timedelta, *, what: str = "duration") -> float:
    """``"24h"``, ``"7d"``, ``"30m"``, ``"15s"``, ``"250ms"``, seconds, or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a duration like '24h', got {value!r}")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ConfigurationError(
                f"{what}: cannot read {value!r} as a duration; write a number with a unit "
                "(ms, s, m, h, d, w), e.g. '24h' or '90s'"
            )
        seconds = float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]
    else:
        raise ConfigurationError(f"{what}: expected a duration like '24h', got {value!r}")
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{what}: {value!r} is not a duration; give a finite one like "
                                 "'24h'")
    if seconds < 0:
        raise ConfigurationError(f"{what}: must not be negative, got {value!r}")
    if seconds > MAX_SECONDS:
        raise ConfigurationError(f"{what}: {value!r} is longer than ten years (3650d), which no "
                                 "cache can store as an expiry; give a shorter duration")
    return seconds


def parse_bytes(value: str | int, *, what: str = "size") -> int:
    """``"256MB"``, ``"1GiB"``, ``"512k"`` or a number of bytes."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{what}: expected a size like '256MB', got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _BYTES_RE.match(value)
        if not m:
            raise ConfigurationError(
                f"{what}: cannot read {value!r} as a size; write e.g. '256MB', '1GiB' or 1048576"
            )
        unit = (m.group(2) or "b").lower()
        factor = 1
        if unit != "b":
            factor = (_BYTES_IUNITS if "i" in unit else _BYTES_UNITS)[unit[0]]
        n = int(float(m.group(1)) * factor)
    else:
        raise ConfigurationError(f"{what}: expected a size like '256MB', got {value!r}")
    if n <= 0:
        raise ConfigurationError(f"{what}: must be positive, got {value!r}")
    return n


def resolve(
    argument: T | None,
    env: str,
    default: T,
    parse: Callable[[str], T] | None = None,
) -> T:
    """Return ``argument`` if given, else ``$ATHENA_WARM_<env>`` parsed, else ``default``."""
    if argument is not None:
        return argument
    name = ENV_PREFIX + env
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if parse is None:
        return raw  # type: ignore[return-value]
    try:
        return parse(raw)
    except ValueError as exc:  # ConfigurationError is a ValueError too
        raise ConfigurationError(f"${name}={raw!r}: {exc}") from None


def resolve_seconds(argument: str | float | timedelta | None, env: str, default: float) -> float:
    """A duration setting: ``argument`` > ``$ATHENA_WARM_<env>`` > ``default`` seconds."""
    what = env.lower()
    if argument is not None:
        return parse_duration(argument, what=what)
    return resolve(None, env, default, lambda raw: parse_duration(raw, what=what))


def truthy(value: str | None) -> bool:
    """How ATHENA_WARM_* switches read: 1, true, yes, on (any case) are on."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def resolve_flag(argument: bool | None, env: str, default: bool) -> bool:
    """A switch: ``argument`` > ``$ATHENA_WARM_<env>`` > ``default``."""
    return resolve(argument, env, default, truthy)


def default_l1_max_bytes() -> int:
    """Half of the Lambda function's memory when running in Lambda, else 1 GiB."""
    mem = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if mem and mem.isdigit():
        return int(mem) * 2**20 // 2
    return 2**30
