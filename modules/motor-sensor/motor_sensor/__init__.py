"""motor-sensor: simulated induction-motor sensors publishing raw sample windows on output ``raw``."""

from motor_sensor.simulator import (
    CHANNELS,
    FAULT_TYPES,
    Fault,
    MotorParams,
    MotorSimulator,
    SensorSettings,
    SettingsError,
    Window,
    parse_faults,
)

__all__ = [
    "CHANNELS",
    "FAULT_TYPES",
    "Fault",
    "MotorParams",
    "MotorSimulator",
    "SensorSettings",
    "SettingsError",
    "Window",
    "parse_faults",
]
