"""SDK glue for fft-filter: input ``raw`` -> output ``features``."""

from __future__ import annotations

import logging
from typing import Any

from fft_filter.service import FilterService, carried_properties

log = logging.getLogger("fft-filter")
REPORT_EVERY_SECS = 30.0


def main() -> int:
    from outpost.sdk import InputMessage, initial_twin, start_module

    service = FilterService()
    run = start_module(log.name)
    client, stop = run.client, run.stop

    def on_desired(patch: dict[str, Any]) -> None:
        service.apply_desired(patch)
        client.report(service.reported())

    def on_raw(message: InputMessage) -> None:
        try:
            raw = message.json()
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("message %s refused: body is not JSON (%s)", message.id, exc)
            return
        # A leaf device's messages carry its id as the hub's connectionDeviceId.
        system = getattr(message, "system", {}) or {}
        features = service.process(raw, device_id=system.get("connectionDeviceId"))
        if features is not None:
            # A dict goes out as JSON, so routes can read $body; the window's sourceTimestamp rides along.
            client.send("features", features, properties=carried_properties(message.properties))

    client.on_desired_change(on_desired)
    service.apply_desired(initial_twin(client))
    client.report(service.reported())
    client.on_input("raw", on_raw)
    try:
        while not stop.wait(REPORT_EVERY_SECS):
            client.report(service.reported())
    finally:
        client.close()
    return 0
