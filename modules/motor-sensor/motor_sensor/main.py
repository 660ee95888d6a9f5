"""SDK glue for motor-sensor: read desired properties, publish one window per period on ``raw``.

Environment: ``MOTOR_ID`` (the ``deviceID`` in messages; default: the edge device id), plus what the
agent sets for the SDK (``IOTEDGE_MODULEID``, ``OUTPOST_HUB_HOST``...).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from motor_sensor.service import SensorService, source_properties

log = logging.getLogger("motor-sensor")
REPORT_EVERY_SECS = 30.0


def main() -> int:
    from outpost.sdk import initial_twin, start_module

    device_id = os.environ.get("MOTOR_ID") or os.environ.get("IOTEDGE_DEVICEID") or "motor-1"
    service = SensorService(device_id)
    run = start_module(log.name)
    client, stop = run.client, run.stop

    def on_desired(patch: dict[str, Any]) -> None:
        service.apply_desired(patch)
        client.report(service.reported())

    client.on_desired_change(on_desired)
    service.apply_desired(initial_twin(client))
    client.report(service.reported())
    log.info("publishing raw windows for %s", device_id)

    next_due = time.monotonic()
    next_report = next_due + REPORT_EVERY_SECS
    try:
        while not stop.is_set():
            message = service.next_message(time.time())
            client.send("raw", message, properties=source_properties(time.time()))  # stamped once the window is built
            now = time.monotonic()
            if now >= next_report:
                client.report(service.reported())
                next_report = now + REPORT_EVERY_SECS
            next_due = max(next_due + service.period_secs, now - 1.0)  # never bursts to catch up > 1 s
            stop.wait(max(0.0, next_due - now))
    finally:
        client.close()
    return 0
