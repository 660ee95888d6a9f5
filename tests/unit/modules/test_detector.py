"""anomaly-detector: threshold and alert message, statistics for the reported properties, desired
properties, and the heartbeat health probe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from anomaly_detector import health
from anomaly_detector.detector import Detector
from anomaly_detector.swap import ModelManager

HEALTHY: dict[str, Any] = {
    "deviceID": "motor-1",
    "sequence": 41,
    "timestamp": 1700000000.0,
    "current": 8.0,
    "temperature": 45.0,
    "fft_data": {"vibration": {"bands": {"80-200": 2e-5}}, "sound": {"bands": {"2000-4000": 5e-5}}},
}
STALLED: dict[str, Any] = {
    **HEALTHY,
    "sequence": 42,
    "current": 45.0,
    "temperature": 120.0,
    "fault": "stall",
    "fft_data": {"vibration": {"bands": {"80-200": 0.05}}, "sound": {"bands": {"2000-4000": 2e-5}}},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def detector(bundled_model: Path) -> Detector:
    manager = ModelManager(edgetpu="off")
    manager.load_file(bundled_model)
    return Detector(manager, threshold=0.8, clock=Clock())


def test_healthy_features_score_low_without_alert(detector: Detector) -> None:
    outcome = detector.handle(HEALTHY)
    assert outcome is not None
    assert outcome.inference.score < 0.5
    assert outcome.alert is None


def test_fault_features_alert_with_the_documented_shape(detector: Detector) -> None:
    outcome = detector.handle(STALLED)
    assert outcome is not None
    assert outcome.alert is not None
    alert = outcome.alert
    assert alert["deviceID"] == "motor-1"
    assert alert["score"] > 0.8
    assert alert["threshold"] == 0.8
    assert alert["model"]["version"] == "1"
    assert len(alert["model"]["sha256"]) == 64
    assert set(alert["features"]) == {"current_rms", "temperature", "vibration_bearing_band", "sound_hf_band"}
    assert alert["features"]["current_rms"] == 45.0
    assert alert["features"]["vibration_bearing_band"] == pytest.approx(-1.301, abs=1e-3)  # log10(0.05)
    assert (alert["sequence"], alert["fault"], alert["timestamp"]) == (42, "stall", 1700000000.0)
    assert alert["latencyMs"] >= 0


def test_threshold_from_desired_properties(detector: Detector) -> None:
    assert detector.apply_desired({"threshold": 0.0}).errors == []
    outcome = detector.handle(HEALTHY)
    assert outcome is not None
    assert outcome.alert is not None
    result = detector.apply_desired({"threshold": 1.5, "$version": 7})
    assert result.errors == ["threshold: expected a number in [0, 1], got 1.5"]
    assert detector.threshold == 0.0


def test_desired_model_is_parsed_for_the_swapper(detector: Detector) -> None:
    result = detector.apply_desired({"threshold": 0.7, "model": {"version": "2", "url": "file:///m.tflite"}})
    assert result.model is None
    assert result.errors
    assert "model.sha256: required" in result.errors[0]
    assert detector.threshold == 0.7  # the valid part is applied
    ok = detector.apply_desired({"model": {"version": "2", "url": "file:///m.tflite", "sha256": "b" * 64}})
    assert ok.model is not None
    assert ok.model.version == "2"
    assert ok.errors == []


def test_inference_results_are_published_only_when_desired(detector: Detector) -> None:
    outcome = detector.handle(HEALTHY)
    assert outcome is not None
    assert outcome.result is None  # off by default: the manifest routes no inference output
    assert detector.apply_desired({"publishInferences": True}).errors == []
    assert detector.reported()["publishInferences"] is True
    healthy, stalled = detector.handle(HEALTHY), detector.handle(STALLED)
    assert healthy is not None
    assert stalled is not None
    assert healthy.result is not None
    assert healthy.result["alert"] is False
    assert healthy.result["score"] < 0.5
    assert (healthy.result["sequence"], healthy.result["timestamp"]) == (41, 1700000000.0)
    assert healthy.result["modelVersion"] == "1"
    assert stalled.result is not None
    assert stalled.alert is not None
    assert stalled.result["alert"] is True
    assert stalled.result["score"] == stalled.alert["score"]
    assert stalled.result["fault"] == "stall"
    assert detector.apply_desired({"publishInferences": "yes"}).errors == [
        "publishInferences: expected true or false, got 'yes'"
    ]
    assert detector.publish_inferences is True  # a refused value changes nothing
    assert detector.apply_desired({"publishInferences": None}).errors == []  # removed by a patch: default
    outcome = detector.handle(HEALTHY)
    assert outcome is not None
    assert outcome.result is None


def test_outputs_carry_the_source_windows_timestamp() -> None:
    from anomaly_detector.detector import carried_properties

    assert carried_properties({"sourceTimestamp": "1700000000.123456", "other": "x"}) == {
        "sourceTimestamp": "1700000000.123456"
    }
    assert carried_properties({}) == {}


def test_message_without_the_models_inputs_is_skipped_and_counted(detector: Detector) -> None:
    assert detector.handle({"deviceID": "x", "current": 1.0}) is None
    assert detector.handle({**HEALTHY, "current": "high"}) is None
    reported = detector.reported()
    assert reported["invalidMessages"] == 2
    assert "temperature: missing from the features message" in str(detector.last_error) or "current" in str(
        detector.last_error
    )


def test_reported_properties_carry_model_latency_and_alert_rate(detector: Detector) -> None:
    clock = detector.clock
    assert isinstance(clock, Clock)
    for _ in range(3):
        detector.handle(HEALTHY)
    detector.handle(STALLED)
    clock.now += 120  # the alert drops out of the per-minute count
    detector.handle(STALLED)
    reported = detector.reported()
    assert reported["model"]["version"] == "1"
    assert reported["model"]["delegate"] == "cpu"
    assert reported["threshold"] == 0.8
    assert reported["inference"]["count"] == 5
    assert 0 < reported["inference"]["latencyMsP50"] <= reported["inference"]["latencyMsP99"]
    assert reported["alerts"] == {"count": 2, "rate": 0.4, "perMinute": 1}
    assert reported["lastInference"]["alert"] is True
    assert reported["modelError"] is None


def test_health_probe_fresh_stale_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beat = tmp_path / "hb"
    env = {"OUTPOST_HEARTBEAT_FILE": str(beat), "OUTPOST_HEARTBEAT_MAX_AGE": "30"}
    assert health.main(env) == 1
    assert "no heartbeat file" in capsys.readouterr().err
    health.beat(beat)
    assert health.main(env) == 0
    assert "healthy" in capsys.readouterr().out
    old = os.stat(beat).st_mtime - 60
    os.utime(beat, (old, old))
    assert health.main(env) == 1
    assert "s old (> 30 s)" in capsys.readouterr().err
    ok, why = health.check(beat, 30, now=old + 10)
    assert ok, why


def test_heartbeat_path_is_per_device_and_module() -> None:
    a = health.heartbeat_path({"OUTPOST_DEVICE_ID": "dev/1", "IOTEDGE_MODULEID": "anomaly-detector"})
    b = health.heartbeat_path({"OUTPOST_DEVICE_ID": "dev2", "IOTEDGE_MODULEID": "anomaly-detector"})
    assert a != b
    assert "/" not in a.name
