"""SDK glue for fft-filter: input ``raw`` -> output ``features``."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from fft_filter.service import FilterService

log = logging.getLogger("fft-filter")
REPORT_EVERY_SECS = 30.0


def main() -> int:
    from outpost.sdk import InputMessage, ModuleClient, SdkError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    service = FilterService()
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
            client.send("features", features)  # a dict goes out as JSON, so routes can read $body

    client.on_desired_change(on_desired)
    service.apply_desired(_initial_twin(client, SdkError))
    client.report(service.reported())
    client.on_input("raw", on_raw)
    try:
        while not stop.wait(REPORT_EVERY_SECS):
            client.report(service.reported())
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
