"""The anomaly-detector's per-message logic without the hub: score, threshold, alert, statistics."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from anomaly_detector.inputs import InputError
from anomaly_detector.model import ModelError
from anomaly_detector.swap import Inference, ModelManager, ModelSource

log = logging.getLogger("anomaly-detector")

DEFAULT_THRESHOLD = 0.8
#: Copied from the features message into an alert (and an inference result) when present.
PASSTHROUGH: tuple[str, ...] = ("sequence", "timestamp", "fault")
#: Application property motor-sensor stamps on a raw window (epoch seconds when it was sent); fft-filter
#: carries it onto the features, and the alerts and inference results scored from them carry it on.
SOURCE_TIMESTAMP = "sourceTimestamp"


def carried_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The application properties of an input that its outputs carry on: the source window's timestamp
    (absent when the input had none)."""
    value = properties.get(SOURCE_TIMESTAMP)
    return {} if value is None else {SOURCE_TIMESTAMP: value}


@dataclass(frozen=True)
class Outcome:
    """One scored message: the inference, the ``inference`` output's message (sent only when the desired
    ``publishInferences`` is true) and the alert message when the score is above the threshold."""

    inference: Inference
    alert: dict[str, Any] | None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class DesiredResult:
    """What a desired-properties document asked for: a model to swap to (run it in the background), and
    the errors of the parts that were refused (the rest is applied)."""

    model: ModelSource | None
    errors: list[str]


class Detector:
    """Thread-safe: inputs, desired changes and reports may come from different threads."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        clock: Callable[[], float] = time.time,
        history: int = 1000,
    ) -> None:
        self.manager = manager
        self.threshold = threshold
        self.publish_inferences = False
        self.clock = clock
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=history)
        self._recent: deque[bool] = deque(maxlen=100)
        self._alert_times: deque[float] = deque(maxlen=10_000)
        self.inferences = 0
        self.alerts = 0
        self.invalid = 0
        self.last_error: str | None = None
        self.last: dict[str, Any] | None = None

    def apply_desired(self, desired: Mapping[str, Any]) -> DesiredResult:
        errors: list[str] = []
        source: ModelSource | None = None
        if "threshold" in desired:
            value = desired["threshold"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                errors.append(f"threshold: expected a number in [0, 1], got {value!r}")
            else:
                with self._lock:
                    self.threshold = float(value)
        if "publishInferences" in desired:
            flag = desired["publishInferences"]  # null (removed by a patch): back to the default, off
            if flag is None or isinstance(flag, bool):
                with self._lock:
                    self.publish_inferences = bool(flag)
            else:
                errors.append(f"publishInferences: expected true or false, got {flag!r}")
        if desired.get("model") is not None:
            try:
                source = ModelSource.from_desired(desired["model"])
            except ModelError as exc:
                errors.append(str(exc))
        for error in errors:
            log.error("desired property refused: %s", error)
        if errors:
            self.last_error = "; ".join(errors)
        return DesiredResult(model=source, errors=errors)

    def handle(self, features: Mapping[str, Any]) -> Outcome | None:
        """Score one features message; the alert message when the score is above the threshold. A message
        the model cannot read is counted, logged and skipped (None)."""
        try:
            inference = self.manager.infer(features)
        except (InputError, ModelError) as exc:
            with self._lock:
                self.invalid += 1
                self.last_error = f"message skipped: {exc}"
            log.warning("message skipped: %s", exc)
            return None
        now = self.clock()
        with self._lock:
            threshold = self.threshold
            is_alert = inference.score > threshold
            self.inferences += 1
            self._latencies.append(inference.latency_s)
            self._recent.append(is_alert)
            if is_alert:
                self.alerts += 1
                self._alert_times.append(now)
            model = self.manager.current
            names = model.spec.names if model is not None else []
            self.last = {
                "deviceID": features.get("deviceID"),
                "score": round(inference.score, 4),
                "alert": is_alert,
                "modelVersion": inference.version,
                "at": round(now, 3),
            }
            publish = self.publish_inferences
        passed = {key: features[key] for key in PASSTHROUGH if key in features}
        alert: dict[str, Any] | None = None
        if is_alert:
            alert = {
                "deviceID": features.get("deviceID"),
                "alert": True,
                "score": round(inference.score, 4),
                "threshold": threshold,
                "model": {"version": inference.version, "sha256": model.sha256 if model else None},
                "features": {n: round(float(v), 4) for n, v in zip(names, inference.inputs, strict=False)},
                "detectedAt": round(now, 3),
                "latencyMs": round(inference.latency_s * 1e3, 3),
                **passed,
            }
        result: dict[str, Any] | None = None
        if publish:
            result = {
                "deviceID": features.get("deviceID"),
                "score": round(inference.score, 4),
                "alert": is_alert,
                "threshold": threshold,
                "modelVersion": inference.version,
                "detectedAt": round(now, 3),
                "latencyMs": round(inference.latency_s * 1e3, 3),
                **passed,
            }
        return Outcome(inference=inference, alert=alert, result=result)

    def reported(self) -> dict[str, Any]:
        """Reported properties: model, inference latency, alert rate, errors."""
        model = self.manager.current
        now = self.clock()
        with self._lock:
            lat = np.array(self._latencies, dtype=np.float64) * 1e3
            recent = list(self._recent)
            per_minute = sum(1 for t in self._alert_times if now - t <= 60.0)

            def pct(q: float) -> float | None:
                return None if len(lat) == 0 else round(float(np.percentile(lat, q)), 4)

            return {
                "model": model.describe() if model is not None else None,
                "modelError": self.manager.last_error,
                "threshold": self.threshold,
                "publishInferences": self.publish_inferences,
                "inference": {
                    "count": self.inferences,
                    "latencyMsP50": pct(50),
                    "latencyMsP99": pct(99),
                    "latencyMsMean": None if len(lat) == 0 else round(float(lat.mean()), 4),
                },
                "alerts": {
                    "count": self.alerts,
                    "rate": round(sum(recent) / len(recent), 4) if recent else 0.0,
                    "perMinute": per_minute,
                },
                "invalidMessages": self.invalid,
                "lastInference": self.last,
                "lastError": self.last_error,
            }
