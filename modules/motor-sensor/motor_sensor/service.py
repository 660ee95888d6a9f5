"""The motor-sensor module's logic, without the hub: desired properties in, ``raw`` messages out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from motor_sensor.simulator import MotorSimulator, SensorSettings, SettingsError

log = logging.getLogger("motor-sensor")

#: Application property on every ``raw`` message: when this module handed the window to the hub
#: client (epoch seconds, 6 decimals). fft-filter and anomaly-detector copy it onto what they derive
#: from the window, so any consumer can tell how old the window behind a message is.
SOURCE_TIMESTAMP = "sourceTimestamp"


def source_properties(sent_at: float) -> dict[str, str]:
    """The application properties of a ``raw`` message sent at ``sent_at`` (``time.time()``)."""
    return {SOURCE_TIMESTAMP: f"{sent_at:.6f}"}


class SensorService:
    """Owns the simulator; thread-safe (desired-property patches arrive on the SDK's worker thread)."""

    def __init__(self, device_id: str, settings: SensorSettings | None = None) -> None:
        self.device_id = device_id
        self._lock = threading.Lock()
        self.settings = settings or SensorSettings()
        self.simulator = MotorSimulator(self.settings)
        self.last_error: str | None = None

    def apply_desired(self, desired: Mapping[str, Any]) -> str | None:
        """Apply a full document or a patch. A bad value is refused as a whole (the previous settings
        keep running) and its error returned and remembered for the reported properties."""
        with self._lock:
            try:
                settings = SensorSettings.from_desired(desired, base=self.settings)
            except SettingsError as exc:
                self.last_error = f"desired properties refused: {exc}"
                log.error("%s", self.last_error)
                return self.last_error
            self.simulator.reconfigure(settings)
            self.settings = settings
            self.last_error = None
            log.info(
                "settings: %d Hz, %d samples/window, %.2f windows/s, seed %d, %d fault(s)",
                settings.sample_rate_hz,
                settings.window_size,
                settings.windows_per_second,
                settings.seed,
                len(settings.faults),
            )
            return None

    def next_message(self, timestamp: float) -> dict[str, Any]:
        with self._lock:
            return self.simulator.next_window().to_message(self.device_id, timestamp)

    @property
    def period_secs(self) -> float:
        with self._lock:
            return self.settings.period_secs

    def reported(self) -> dict[str, Any]:
        with self._lock:
            s = self.settings
            return {
                "deviceID": self.device_id,
                "sampleRateHz": s.sample_rate_hz,
                "windowSize": s.window_size,
                "windowsPerSecond": s.windows_per_second,
                "seed": s.seed,
                "faults": [
                    {
                        "type": f.type,
                        "startSecs": f.start_secs,
                        "durationSecs": f.duration_secs,
                        "severity": f.severity,
                        "rampSecs": f.ramp_secs,
                    }
                    for f in s.faults
                ],
                "activeFaults": self.simulator.fault_levels(),
                "windowsSent": self.simulator.sequence,
                "lastError": self.last_error,
            }
