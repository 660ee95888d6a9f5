"""motor-sensor: determinism, settings, and each fault's signature in the raw waveforms (seen through
the fft-filter's features)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fft_filter.features import FilterSettings, extract
from motor_sensor.service import SensorService
from motor_sensor.simulator import (
    Fault,
    MotorSimulator,
    SensorSettings,
    SettingsError,
    parse_faults,
)


def run(faults: list[Any], windows: int, **settings: Any) -> list[dict[str, Any]]:
    """Features of the last windows of a run (``windows`` windows at 2 windows/s)."""
    sim = MotorSimulator(SensorSettings(faults=parse_faults(faults), **settings))
    out = []
    for _ in range(windows):
        out.append(extract(sim.next_window().to_message("m", 0.0), FilterSettings()))
    return out


def band(features: dict[str, Any], channel: str, name: str) -> float:
    return float(features["fft_data"][channel]["bands"][name])


def peak_near(features: dict[str, Any], channel: str, freq: float, tol: float = 8.0) -> float:
    return max((a for f, a in features["fft_data"][channel]["peaks"] if abs(f - freq) <= tol), default=0.0)


@pytest.fixture(scope="module")
def healthy() -> list[dict[str, Any]]:
    return run([], 40)


def test_same_seed_same_waveforms_other_seed_other_noise() -> None:
    a = MotorSimulator(SensorSettings(seed=11)).next_window()
    b = MotorSimulator(SensorSettings(seed=11)).next_window()
    c = MotorSimulator(SensorSettings(seed=12)).next_window()
    for name in ("current", "temperature", "vibration", "sound"):
        assert np.array_equal(a.channels[name], b.channels[name])
        assert not np.array_equal(a.channels[name], c.channels[name])


def test_message_shape_and_json() -> None:
    sim = MotorSimulator(SensorSettings(window_size=256, sample_rate_hz=4000))
    msg = sim.next_window().to_message("motor-1", 1700000000.25)
    again = json.loads(json.dumps(msg))
    assert again["deviceID"] == "motor-1"
    assert (again["sequence"], again["sampleRateHz"], again["windowSize"]) == (0, 4000, 256)
    assert all(len(again[c]) == 256 for c in ("current", "temperature", "vibration", "sound"))
    assert "fault" not in again
    assert sim.next_window().sequence == 1


def test_healthy_motor_signature(healthy: list[dict[str, Any]]) -> None:
    sim = MotorSimulator(SensorSettings())
    rotation = sim.operating_point({}).rotation_hz
    assert 23.0 < rotation < 25.0  # 4 poles at 50 Hz, a few percent slip
    for f in healthy:
        assert 6.0 < f["current"] < 10.0
        assert 30.0 < f["temperature"] < 60.0
        assert abs(f["fft_data"]["current"]["peaks"][0][0] - 50.0) < 2.0  # the supply frequency dominates
        assert abs(f["fft_data"]["vibration"]["peaks"][0][0] - rotation) < 2.0  # unbalance at 1x
        assert band(f, "vibration", "80-200") < 1e-4
    temps = [f["temperature"] for f in healthy]
    assert max(temps) - min(temps) < 1.0  # thermal equilibrium


def test_bearing_wear_raises_defect_tones_in_vibration_and_sound(healthy: list[dict[str, Any]]) -> None:
    worn = run(["bearing_wear"], 10)
    sim = MotorSimulator(SensorSettings())
    bpfo = sim.params.bearing.bpfo(sim.operating_point({}).rotation_hz)
    assert 80.0 < bpfo < 95.0
    for f in worn:
        assert band(f, "vibration", "80-200") > 100 * band(healthy[0], "vibration", "80-200")
        assert band(f, "sound", "2000-4000") > 10 * band(healthy[0], "sound", "2000-4000")
        assert peak_near(f, "vibration", bpfo) > 0.15
        assert f["fft_data"]["vibration"]["peaks"][0][0] == pytest.approx(bpfo, abs=2.0)
        assert f["current"] == pytest.approx(healthy[0]["current"], rel=0.1)  # electrically still healthy
        assert f["fault"] == "bearing_wear"


def test_overheating_raises_temperature_over_time_and_current_at_once(healthy: list[dict[str, Any]]) -> None:
    hot = run(["overheating"], 80)
    assert hot[0]["current"] > 1.15 * healthy[0]["current"]
    temps = [f["temperature"] for f in hot]
    assert temps[-1] > 90.0 > max(f["temperature"] for f in healthy)
    assert np.all(np.diff(temps[::10]) > 0)  # climbing toward its new equilibrium
    assert band(hot[-1], "vibration", "80-200") < 1e-3  # no bearing signature


def test_stall_locks_the_rotor(healthy: list[dict[str, Any]]) -> None:
    stalled = run(["stall"], 20)
    for f in stalled:
        assert f["current"] > 5 * healthy[0]["current"]  # locked-rotor current
        assert peak_near(f, "vibration", 24.3, tol=3.0) < 0.005  # no rotation tone
        assert band(f, "vibration", "20-80") < 0.1 * band(healthy[0], "vibration", "20-80")
        assert abs(f["fft_data"]["sound"]["peaks"][0][0] - 100.0) < 2.0  # loud magnetic hum
    assert stalled[-1]["temperature"] > stalled[0]["temperature"] + 20


def test_fault_schedule_start_duration_and_ramp() -> None:
    fault = Fault("bearing_wear", start_secs=2.0, duration_secs=3.0, severity=0.8, ramp_secs=2.0)
    assert fault.level(1.9) == 0.0
    assert fault.level(3.0) == pytest.approx(0.4)
    assert fault.level(4.5) == pytest.approx(0.8)
    assert fault.level(5.0) == 0.0
    sim = MotorSimulator(SensorSettings(windows_per_second=2.0))
    sim.next_window()
    sim.next_window()  # schedules count from when they are applied, not from the start
    sim.set_faults([Fault("stall", start_secs=1.0, duration_secs=1.0)])
    labels = [sim.next_window().fault_label for _ in range(5)]
    assert labels == [None, None, "stall", "stall", None]


def test_settings_from_desired_and_refusals() -> None:
    s = SensorSettings.from_desired(
        {"sampleRateHz": 8000, "windowSize": 1024, "windowsPerSecond": 2, "seed": 7, "faults": [], "$version": 3}
    )
    assert (s.sample_rate_hz, s.window_size, s.period_secs, s.faults) == (8000, 1024, 0.5, ())
    s2 = SensorSettings.from_desired({"faults": ["stall", {"type": "overheating", "startSecs": 5}]}, base=s)
    assert [f.type for f in s2.faults] == ["stall", "overheating"]
    assert s2.window_size == 1024
    for bad, needle in [
        ({"faults": [{"type": "meltdown"}]}, r"faults\[0\]\.type"),
        ({"faults": [{"type": "stall", "severity": 2}]}, r"faults\[0\]\.severity"),
        ({"faults": "stall"}, "faults: expected a list"),
        ({"windowSize": 4}, "windowSize"),
        ({"windowsPerSecond": 0}, "windowsPerSecond"),
        ({"sampleRateHz": 500}, "sampleRateHz"),
        ({"rpm": 1500}, "rpm: unknown"),
    ]:
        with pytest.raises(SettingsError, match=needle):
            SensorSettings.from_desired(bad)


def test_service_refuses_a_bad_patch_whole_and_reports_it() -> None:
    service = SensorService("motor-9")
    assert service.apply_desired({"windowSize": 256, "faults": ["stall"]}) is None
    error = service.apply_desired({"windowSize": 512, "faults": [{"type": "nope"}]})
    assert error is not None
    assert "faults[0].type" in error
    assert service.settings.window_size == 256
    msg = service.next_message(10.0)
    assert (msg["deviceID"], len(msg["current"]), msg["fault"]) == ("motor-9", 256, "stall")
    reported = service.reported()
    assert reported["lastError"] == error
    assert reported["activeFaults"] == {"stall": 1.0}
    assert service.period_secs == 0.5


def test_raw_windows_are_stamped_with_the_moment_they_are_sent() -> None:
    from motor_sensor.service import source_properties

    assert source_properties(1700000000.1234567) == {"sourceTimestamp": "1700000000.123457"}
