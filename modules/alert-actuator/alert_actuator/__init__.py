"""alert-actuator: drives a simulated backup pump valve from alerts, with debounce and manual override."""

from alert_actuator.valve import SetValveError, ValveEvent, ValveStateMachine, parse_set_valve

__all__ = ["SetValveError", "ValveEvent", "ValveStateMachine", "parse_set_valve"]
