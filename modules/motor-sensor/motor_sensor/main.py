"""SDK glue for motor-sensor: read desired properties, publish one window per period on ``raw``.

Environment: ``MOTOR_ID`` (the ``deviceID`` in messages; default: the edge device id), plus what the
agent sets for the SDK (``IOTEDGE_MODULEID``, ``OUTPOST_HUB_HOST``...).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from motor_sensor.service import SensorService

log = logging.getLogger("motor-sensor")
REPORT_EVERY_SECS = 30.0


def main() -> int:
    from outpost.sdk import ModuleClient, SdkError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    device_id = os.environ.get("MOTOR_ID") or os.environ.get("IOTEDGE_DEVICEID") or "motor-1"
    service = SensorService(device_id)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    client = ModuleClient.from_environment()
    client.connect()

    def on_desired(patch: dict[str, Any]) -> None:
        service.apply_desired(patch)
        client.report(service.reported())

    client.on_desired_change(on_desired)
    service.apply_desired(_initial_twin(client, SdkError))
    client.report(service.reported())
    log.info("publishing raw windows for %s", device_id)

    next_due = time.monotonic()
    next_report = next_due + REPORT_EVERY_SECS
    try:
        while not stop.is_set():
            client.send("raw", service.next_message(time.time()))
            now = time.monotonic()
            if now >= next_report:
                client.report(service.reported())
                next_report = now + REPORT_EVERY_SECS
            next_due = max(next_due + service.period_secs, now - 1.0)  # never bursts to catch up > 1 s
            stop.wait(max(0.0, next_due - now))
    finally:
        client.close()
    return 0


def _initial_twin(client: Any, sdk_error: type[Exception]) -> dict[str, Any]:
    """The desired properties, or ``{}`` (defaults) when the hub has none for this module yet."""
    try:
        twin: dict[str, Any] = client.twin()
    except sdk_error as exc:
        log.warning("no desired properties yet (%s); running with defaults until a patch arrives", exc)
        return {}
    return twin
