"""SDK glue for alert-actuator: input ``alerts`` -> valve -> output ``state``; direct method ``setValve``."""

from __future__ import annotations

import logging
import os
from typing import Any

from alert_actuator.service import ActuatorService

log = logging.getLogger("alert-actuator")
TICK_SECS = 0.1
REPORT_EVERY_SECS = 10.0


def main() -> int:
    from outpost.sdk import InputMessage, initial_twin, start_module

    device_id = os.environ.get("MOTOR_ID") or os.environ.get("IOTEDGE_DEVICEID") or "motor-1"
    service = ActuatorService(device_id)
    run = start_module(log.name)
    client, stop = run.client, run.stop

    def publish(message: dict[str, Any] | None) -> None:
        if message is not None:
            client.send("state", message)
            client.report(service.reported())

    def on_alert(message: InputMessage) -> None:
        try:
            body = message.json()
        except (ValueError, UnicodeDecodeError):
            body = None  # any message on this input is an alert, whatever its body
        publish(service.on_alert(body))

    def on_set_valve(payload: Any) -> tuple[int, Any]:
        status, response, message = service.set_valve(payload)
        publish(message)
        return status, response

    def on_desired(patch: dict[str, Any]) -> None:
        service.apply_desired(patch)
        client.report(service.reported())

    client.on_desired_change(on_desired)
    on_desired(initial_twin(client))
    client.on_input("alerts", on_alert)
    client.on_method("setValve", on_set_valve)
    ticks_per_report = int(REPORT_EVERY_SECS / TICK_SECS)
    ticks = 0
    try:
        while not stop.wait(TICK_SECS):
            publish(service.tick())
            ticks += 1
            if ticks % ticks_per_report == 0:
                client.report(service.reported())
    finally:
        client.close()
    return 0
