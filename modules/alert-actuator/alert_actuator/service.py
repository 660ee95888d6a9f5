"""The alert-actuator's logic without the hub: alerts, ticks and setValve in, ``state`` messages out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from alert_actuator.valve import SetValveError, ValveEvent, ValveStateMachine, parse_set_valve

log = logging.getLogger("alert-actuator")


class ActuatorService:
    """Thread-safe wrapper: the SDK calls inputs, methods and desired changes on different threads and
    a ticker advances time. ``monotonic`` drives the state machine, ``wall`` stamps messages."""

    def __init__(
        self,
        device_id: str,
        *,
        debounce_secs: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.machine = ValveStateMachine(debounce_secs)
        self.monotonic = monotonic
        self.wall = wall
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_alert: dict[str, Any] | None = None

    def _message(self, event: ValveEvent, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        message = {
            "deviceID": self.device_id,
            "valve": event.position,
            "open": event.open,
            "reason": event.reason,
            "mode": event.mode,
            "changedAt": round(self.wall(), 3),
            "debounceSecs": self.machine.debounce_secs,
        }
        if extra:
            message.update(extra)
        log.info("valve %s (%s)", event.position, event.reason)
        return message

    def on_alert(self, alert: Any) -> dict[str, Any] | None:
        """The state message when this alert changed the valve's position."""
        with self._lock:
            trigger: dict[str, Any] = {}
            if isinstance(alert, Mapping):
                trigger = {k: alert[k] for k in ("deviceID", "score", "sequence", "fault") if k in alert}
                self.last_alert = trigger
            event = self.machine.on_alert(self.monotonic())
            return None if event is None else self._message(event, {"trigger": trigger} if trigger else None)

    def tick(self) -> dict[str, Any] | None:
        with self._lock:
            event = self.machine.tick(self.monotonic())
            return None if event is None else self._message(event)

    def set_valve(self, payload: Any) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        """``(status, response, state message or None)`` for the ``setValve`` direct method."""
        with self._lock:
            try:
                open_, hold = parse_set_valve(payload, self.machine.debounce_secs)
            except SetValveError as exc:
                return 400, {"error": str(exc)}, None
            now = self.monotonic()
            event = self.machine.set_valve(open_, hold, now)
            message = None if event is None else self._message(event, {"holdSecs": hold})
            return 200, self.machine.state(now), message

    def apply_desired(self, desired: Mapping[str, Any]) -> str | None:
        if "debounceSecs" not in desired:
            return None
        value = desired["debounceSecs"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86_400:
            self.last_error = f"debounceSecs: expected a number in [0, 86400], got {value!r}"
            log.error("desired property refused: %s", self.last_error)
            return self.last_error
        with self._lock:
            self.machine.set_debounce(float(value))
        self.last_error = None
        return None

    def reported(self) -> dict[str, Any]:
        with self._lock:
            state = self.machine.state(self.monotonic())
        state["lastAlert"] = self.last_alert
        state["lastError"] = self.last_error
        return state
