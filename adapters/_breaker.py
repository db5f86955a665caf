"""The circuit breaker of the shared tiers: after a failure, skip the tier without waiting for
``reset_window`` seconds, then let exactly one call try again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed -> (a failure) -> open for ``reset_window`` -> one trial call -> closed or open."""

    def __init__(self, reset_window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.reset_window = reset_window
        self.clock = clock
        self._open_until = 0.0
        self._trial = False
        self._lock = threading.Lock()
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def allow(self) -> bool:
        if self._open_until == 0.0:
            return True
        with self._lock:
            if self.clock() < self._open_until or self._trial:
                return False
            self._trial = True  # half-open: exactly one caller tries
            return True

    def success(self) -> None:
        if self._open_until:
            with self._lock:
                self._open_until = 0.0
                self._trial = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self._open_until = self.clock() + self.reset_window
            self._trial = False
