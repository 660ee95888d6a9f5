"""Capped exponential backoff: one value type for every loop that retries after a failure.

``Backoff`` is the shape (first wait, cap, factor, optional jitter); ``Retry`` is one retried
thing's state (consecutive failures and when it is due again), immutable, stamped with a time
the caller's clock gives it, so tests drive it with a fake clock. Used by the agent's command
retries and restart policy, the hub's upstream pumps and Mosquitto supervisor, and the SDK's
resends of unacknowledged messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "Retry"]


@dataclass(frozen=True)
class Backoff:
    """Wait ``first * factor**(n-1)`` after the n-th consecutive failure, at most ``cap``.

    ``jitter`` (0..1) takes up to that fraction off each wait at random, so many clients that
    failed together do not come back together.
    """

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.first < 0 or self.cap < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid backoff {self!r}: need first, cap >= 0, factor >= 1, 0 <= jitter <= 1")

    def delay(self, failures: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 for none)."""
        if failures <= 0:
            return 0.0
        wait = float(min(self.first * self.factor ** min(failures - 1, 64), self.cap))
        return wait * (1 - self.jitter * rand()) if self.jitter else wait


@dataclass(frozen=True)
class Retry:
    """Consecutive failures of one thing and when it may be tried again (``None``: not by itself)."""

    failures: int = 0
    due_at: float | None = 0.0

    def failed(self, backoff: Backoff, now: float, *, permanent: bool = False) -> Retry:
        """The state after one more failure at ``now``; a permanent one is never due by itself."""
        failures = self.failures + 1
        return Retry(failures, None if permanent else now + backoff.delay(failures))

    def due(self, now: float) -> bool:
        return self.due_at is not None and now >= self.due_at

    def wait(self, now: float) -> float | None:
        """Seconds until due (0 when due now), ``None`` when it waits for outside help."""
        return None if self.due_at is None else max(0.0, self.due_at - now)
