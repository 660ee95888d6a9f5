"""alert-actuator: the valve's debounce state machine with a fake clock, setValve, and the service."""

from __future__ import annotations

from typing import Any

import pytest
from alert_actuator.service import ActuatorService
from alert_actuator.valve import SetValveError, ValveStateMachine, parse_set_valve


def positions(machine: ValveStateMachine, script: list[tuple[float, str]]) -> list[tuple[float, str, str]]:
    """Run ``(time, "alert"|"tick")`` steps; the changes as ``(time, position, reason)``."""
    out = []
    for now, what in script:
        event = machine.on_alert(now) if what == "alert" else machine.tick(now)
        if event is not None:
            out.append((now, event.position, event.reason))
    return out


def ticks(start: float, end: float, step: float = 0.5) -> list[tuple[float, str]]:
    n = round((end - start) / step)
    return [(start + i * step, "tick") for i in range(n + 1)]


def test_an_alert_opens_at_once_and_quiet_closes_after_debounce() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    changes = positions(machine, [(0.0, "tick"), (1.0, "alert"), *ticks(1.0, 10.0)])
    assert changes == [(1.0, "open", "alert"), (6.0, "closed", "quiet")]


def test_every_alert_restarts_the_quiet_period() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    script = [(0.0, "alert"), (3.0, "alert"), (7.0, "alert"), *ticks(0.0, 20.0)]
    script.sort(key=lambda s: (s[0], s[1] != "alert"))
    assert positions(machine, script) == [(0.0, "open", "alert"), (12.0, "closed", "quiet")]


def test_the_valve_stays_open_at_least_debounce_even_for_one_alert() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    positions(machine, [(0.0, "alert")])
    assert positions(machine, ticks(0.0, 4.5)) == []
    assert machine.is_open


def test_flapping_alerts_do_not_flap_the_valve() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    script = sorted([(t, "alert") for t in (0.0, 4.0, 8.0, 12.0)] + ticks(0.0, 30.0), key=lambda s: (s[0], s[1]))
    assert positions(machine, script) == [(0.0, "open", "alert"), (17.0, "closed", "quiet")]


def test_reopens_on_a_new_alert_after_closing() -> None:
    machine = ValveStateMachine(debounce_secs=2)
    script = [(0.0, "alert"), *ticks(0.5, 3.0), (4.0, "alert"), *ticks(4.5, 7.0)]
    assert positions(machine, script) == [
        (0.0, "open", "alert"),
        (2.0, "closed", "quiet"),
        (4.0, "open", "alert"),
        (6.0, "closed", "quiet"),
    ]


def test_zero_debounce_closes_on_the_next_tick() -> None:
    machine = ValveStateMachine(debounce_secs=0)
    assert positions(machine, [(0.0, "alert"), (0.1, "tick")]) == [(0.0, "open", "alert"), (0.1, "closed", "quiet")]


def test_manual_open_holds_then_automatic_rules_resume() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    event = machine.set_valve(True, hold_secs=10, now=0.0)
    assert event is not None
    assert (event.position, event.reason, event.mode) == ("open", "manual", "manual")
    assert positions(machine, ticks(0.0, 9.5)) == []
    assert machine.mode == "manual"
    assert positions(machine, ticks(10.0, 12.0)) == [(10.0, "closed", "hold-expired")]
    assert machine.mode == "auto"


def test_manual_close_ignores_alerts_during_the_hold() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    positions(machine, [(0.0, "alert")])
    event = machine.set_valve(False, hold_secs=8, now=1.0)
    assert event is not None
    assert event.reason == "manual"
    assert positions(machine, [(2.0, "alert"), (5.0, "alert"), *ticks(2.0, 8.5)]) == []
    assert machine.alerts == 3
    # Once the hold ended the next alert opens it again.
    assert positions(machine, [(9.5, "tick"), (10.0, "alert")]) == [(10.0, "open", "alert")]


def test_manual_open_with_recent_alerts_stays_open_after_the_hold() -> None:
    machine = ValveStateMachine(debounce_secs=5)
    machine.set_valve(True, hold_secs=2, now=0.0)
    positions(machine, [(1.5, "alert")])
    # The hold ended at 2 s while the alert was recent: it closes 5 s after that alert, as in auto mode.
    assert positions(machine, ticks(2.0, 7.0)) == [(6.5, "closed", "quiet")]


def test_switching_to_the_current_position_is_not_a_change_but_holds() -> None:
    machine = ValveStateMachine(debounce_secs=1)
    assert machine.set_valve(False, hold_secs=5, now=0.0) is None
    assert positions(machine, [(1.0, "alert")]) == []
    assert machine.state(1.0)["holdRemainingSecs"] == 4.0


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"open": "yes"}, "open: expected true or false"),
        ({}, "open: expected true or false"),
        ({"open": True, "holdSecs": -1}, "holdSecs"),
        ({"open": True, "holdSecs": "5"}, "holdSecs"),
        ({"open": True, "speed": 3}, "speed: unknown field"),
        ([True], "payload"),
    ],
)
def test_set_valve_payload_errors(payload: Any, needle: str) -> None:
    with pytest.raises(SetValveError, match=needle):
        parse_set_valve(payload, default_hold=5)


def test_set_valve_defaults_hold_to_debounce() -> None:
    assert parse_set_valve({"open": True}, default_hold=5) == (True, 5.0)
    assert parse_set_valve({"open": False, "holdSecs": 0}, default_hold=5) == (False, 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_service_publishes_state_changes_and_answers_the_method() -> None:
    clock = Clock()
    service = ActuatorService("motor-1", debounce_secs=5, monotonic=clock, wall=lambda: 1700000000.0)
    opened = service.on_alert({"deviceID": "motor-1", "score": 0.97, "sequence": 12, "fault": "stall"})
    assert opened is not None
    assert (opened["valve"], opened["open"], opened["reason"], opened["mode"]) == ("open", True, "alert", "auto")
    assert opened["trigger"] == {"deviceID": "motor-1", "score": 0.97, "sequence": 12, "fault": "stall"}
    assert service.on_alert({"score": 0.9}) is None
    clock.now = 4.0
    assert service.tick() is None
    clock.now = 5.0
    closed = service.tick()
    assert closed is not None
    assert (closed["valve"], closed["reason"]) == ("closed", "quiet")

    status, response, message = service.set_valve({"open": True, "holdSecs": 30})
    assert status == 200
    assert response["valve"] == "open"
    assert response["mode"] == "manual"
    assert message is not None
    assert message["reason"] == "manual"
    assert message["holdSecs"] == 30.0
    status, response, message = service.set_valve({"open": 1})
    assert status == 400
    assert "open" in response["error"]
    assert message is None

    assert service.apply_desired({"debounceSecs": 2}) is None
    assert service.apply_desired({"debounceSecs": -1}) is not None
    reported = service.reported()
    assert reported["debounceSecs"] == 2.0
    assert reported["changes"] == 3
    assert reported["alertsReceived"] == 2
    assert reported["lastError"] is not None
