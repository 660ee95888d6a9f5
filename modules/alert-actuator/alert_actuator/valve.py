"""The backup pump valve: a pure state machine with debounce and manual override (time passed in).

Automatic mode:

- an alert opens a closed valve at once;
- an open valve stays open at least ``debounce_secs`` after it opened, and closes once
  ``debounce_secs`` have passed without an alert (every alert restarts that quiet period).

Manual override (the ``setValve`` direct method, ``{"open": true|false, "holdSecs": N}``): the valve
is switched at once and held in that position for ``holdSecs`` (default: ``debounce_secs``), alerts
received meanwhile are counted but do not move it. When the hold expires the automatic rules resume
from that moment: a valve held open closes unless an alert came within the last ``debounce_secs``; a
valve held closed reopens at the next alert.

Every change of position is returned as a :class:`ValveEvent`; calls that change nothing return None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REASONS = ("alert", "quiet", "manual", "hold-expired")


@dataclass(frozen=True)
class ValveEvent:
    open: bool
    reason: str  # one of REASONS
    at: float  # the clock's time of the change
    mode: str  # "auto" or "manual" after the change

    @property
    def position(self) -> str:
        return "open" if self.open else "closed"


class SetValveError(ValueError):
    """A ``setValve`` payload that cannot be applied; the text names the field."""


def parse_set_valve(payload: Any, default_hold: float) -> tuple[bool, float]:
    """``(open, hold_secs)`` from ``{"open": bool, "holdSecs": number >= 0}``."""
    if not isinstance(payload, Mapping):
        raise SetValveError('payload: expected {"open": true|false, "holdSecs": N}')
    unknown = sorted(set(payload) - {"open", "holdSecs"})
    if unknown:
        raise SetValveError(f"{unknown[0]}: unknown field (known: holdSecs, open)")
    if not isinstance(payload.get("open"), bool):
        raise SetValveError(f"open: expected true or false, got {payload.get('open')!r}")
    hold = payload.get("holdSecs", default_hold)
    if isinstance(hold, bool) or not isinstance(hold, int | float) or not math.isfinite(hold) or hold < 0:
        raise SetValveError(f"holdSecs: expected a number >= 0, got {hold!r}")
    return bool(payload["open"]), float(hold)


class ValveStateMachine:
    """Not thread-safe; ``ActuatorService`` serialises calls. ``now`` is any monotonic clock in seconds."""

    def __init__(self, debounce_secs: float = 5.0) -> None:
        if not debounce_secs >= 0:
            raise ValueError("debounce_secs must be >= 0")
        self.debounce_secs = float(debounce_secs)
        self.is_open = False
        self.opened_at: float | None = None
        self.last_alert_at: float | None = None
        self.manual_until: float | None = None
        self.alerts = 0
        self.changes = 0
        self.last_event: ValveEvent | None = None

    @property
    def mode(self) -> str:
        return "manual" if self.manual_until is not None else "auto"

    def _change(self, open_: bool, reason: str, now: float) -> ValveEvent:
        self.is_open = open_
        if open_:
            self.opened_at = now
        self.changes += 1
        self.last_event = ValveEvent(open=open_, reason=reason, at=now, mode=self.mode)
        return self.last_event

    def _hold_active(self, now: float) -> bool:
        return self.manual_until is not None and now < self.manual_until

    def on_alert(self, now: float) -> ValveEvent | None:
        self.alerts += 1
        self.last_alert_at = now
        if self._hold_active(now):
            return None
        self.manual_until = None
        if not self.is_open:
            return self._change(True, "alert", now)
        return None

    def tick(self, now: float) -> ValveEvent | None:
        """Advance time: ends an expired hold and closes a valve that has been quiet long enough."""
        if self._hold_active(now):
            return None
        ended_hold = self.manual_until is not None
        self.manual_until = None
        if not self.is_open:
            return None
        assert self.opened_at is not None
        last_activity = max(self.opened_at, self.last_alert_at or self.opened_at)
        if now - last_activity >= self.debounce_secs:
            return self._change(False, "hold-expired" if ended_hold else "quiet", now)
        return None

    def set_valve(self, open_: bool, hold_secs: float, now: float) -> ValveEvent | None:
        """Manual switch, held for ``hold_secs``; an event when the position changed."""
        self.manual_until = now + hold_secs
        if open_ != self.is_open:
            return self._change(open_, "manual", now)
        if open_:
            self.opened_at = now  # a hold restarts the time it counts as open
        return None

    def set_debounce(self, debounce_secs: float) -> None:
        if not debounce_secs >= 0:
            raise ValueError("debounce_secs must be >= 0")
        self.debounce_secs = float(debounce_secs)

    def state(self, now: float) -> dict[str, Any]:
        return {
            "valve": "open" if self.is_open else "closed",
            "open": self.is_open,
            "mode": self.mode,
            "holdRemainingSecs": round(max(0.0, self.manual_until - now), 3) if self.manual_until is not None else 0.0,
            "debounceSecs": self.debounce_secs,
            "alertsReceived": self.alerts,
            "changes": self.changes,
        }
