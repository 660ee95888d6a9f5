"""The fft-filter module's logic without the hub: settings from desired properties, raw -> features."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from fft_filter.features import FeatureError, FilterSettings, extract

log = logging.getLogger("fft-filter")

#: Application property motor-sensor stamps on a raw window (epoch seconds when it was sent); the
#: features derived from that window carry it on unchanged.
SOURCE_TIMESTAMP = "sourceTimestamp"


def carried_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The application properties of an input that its output carries on: the source window's timestamp
    (absent when the input had none, e.g. a leaf device's message)."""
    value = properties.get(SOURCE_TIMESTAMP)
    return {} if value is None else {SOURCE_TIMESTAMP: value}


class FilterService:
    """Thread-safe holder of the settings, with counters for the reported properties."""

    def __init__(self, settings: FilterSettings | None = None) -> None:
        self._lock = threading.Lock()
        self.settings = settings or FilterSettings()
        self.processed = 0
        self.rejected = 0
        self.last_error: str | None = None

    def apply_desired(self, desired: Mapping[str, Any]) -> str | None:
        """Apply a full document or a patch; a bad one is refused whole and the error returned."""
        with self._lock:
            try:
                self.settings = FilterSettings.from_desired(desired, base=self.settings)
            except FeatureError as exc:
                self.last_error = f"desired properties refused: {exc}"
                log.error("%s", self.last_error)
                return self.last_error
            log.info("settings: %s", self.settings)
            return None

    def process(self, raw: Any, *, device_id: str | None = None) -> dict[str, Any] | None:
        """The features message, or None (logged and counted) when the raw message is unusable."""
        with self._lock:
            settings = self.settings
        try:
            features = extract(raw, settings, device_id=device_id)
        except FeatureError as exc:
            with self._lock:
                self.rejected += 1
                self.last_error = f"message refused: {exc}"
            log.warning("message refused: %s", exc)
            return None
        with self._lock:
            self.processed += 1
        return features

    def reported(self) -> dict[str, Any]:
        with self._lock:
            s = self.settings
            return {
                "windowSize": s.window_size,
                "sampleRateHz": s.sample_rate_hz,
                "window": s.window,
                "peaks": s.peaks,
                "bandEdgesHz": list(s.band_edges_hz),
                "processed": self.processed,
                "rejected": self.rejected,
                "lastError": self.last_error,
            }
