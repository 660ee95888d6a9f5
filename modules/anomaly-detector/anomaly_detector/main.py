"""SDK glue for anomaly-detector: input ``features`` -> score -> output ``alerts`` above the threshold.

The bundled model (``models/motor-v1.tflite``) serves from the start; the desired property ``model``
swaps it in the background (``swap.py``). Environment: ``OUTPOST_MODELS_DIR`` (download cache,
default ``/var/lib/outpost/models`` when writable), ``OUTPOST_EDGETPU`` (``auto``/``off``),
``OUTPOST_HEARTBEAT_FILE`` (see ``health.py``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from anomaly_detector.detector import Detector, carried_properties
from anomaly_detector.health import HEARTBEAT_EVERY_SECS, beat, heartbeat_path
from anomaly_detector.model import edgetpu_mode
from anomaly_detector.swap import BackgroundSwapper, ModelManager, SwapResult

log = logging.getLogger("anomaly-detector")
BUNDLED_MODEL = Path(__file__).resolve().parent / "models" / "motor-v1.tflite"
DEFAULT_MODELS_DIR = Path("/var/lib/outpost/models")
REPORT_EVERY_SECS = 10.0


def models_dir() -> Path | None:
    explicit = os.environ.get("OUTPOST_MODELS_DIR")
    if explicit:
        return Path(explicit)
    if DEFAULT_MODELS_DIR.is_dir() and os.access(DEFAULT_MODELS_DIR, os.W_OK):
        return DEFAULT_MODELS_DIR
    return None


def main() -> int:
    from outpost.sdk import InputMessage, initial_twin, start_module

    manager = ModelManager(cache_dir=models_dir(), edgetpu=edgetpu_mode())
    manager.load_file(BUNDLED_MODEL)
    detector = Detector(manager)
    run = start_module(log.name)
    client, stop = run.client, run.stop

    def on_swapped(_result: SwapResult) -> None:
        client.report(detector.reported())

    swapper = BackgroundSwapper(manager, on_done=on_swapped)

    def on_desired(patch: dict[str, Any]) -> None:
        result = detector.apply_desired(patch)
        if result.model is not None:
            swapper.submit(result.model)
        client.report(detector.reported())

    def on_features(message: InputMessage) -> None:
        try:
            features = message.json()
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("message %s skipped: body is not JSON (%s)", message.id, exc)
            return
        if not isinstance(features, dict):
            log.warning("message %s skipped: body is not a JSON object", message.id)
            return
        outcome = detector.handle(features)
        if outcome is None:
            return
        carried = carried_properties(message.properties)  # the window's sourceTimestamp
        if outcome.alert is not None:
            client.send("alerts", outcome.alert, properties={"alertType": "anomaly", **carried})
        if outcome.result is not None:
            client.send("inference", outcome.result, properties=carried)

    client.on_desired_change(on_desired)
    on_desired(initial_twin(client))
    client.on_input("features", on_features)

    beat_path = heartbeat_path()
    next_report = time.monotonic() + REPORT_EVERY_SECS
    try:
        while True:
            if manager.current is not None:
                beat(beat_path)
            if time.monotonic() >= next_report:
                client.report(detector.reported())
                next_report = time.monotonic() + REPORT_EVERY_SECS
            if stop.wait(min(HEARTBEAT_EVERY_SECS, REPORT_EVERY_SECS)):
                client.report(detector.reported())  # the final numbers
                break
    finally:
        swapper.close()
        client.close()
        beat_path.unlink(missing_ok=True)
    return 0
