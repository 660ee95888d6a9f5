"""fft-filter features against signals whose spectrum is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fft_filter.features import (
    FeatureError,
    FilterSettings,
    Spectrum,
    band_edges_for,
    band_energies,
    channel_features,
    extract,
    find_peaks,
    make_window,
    spectrum,
)
from fft_filter.service import FilterService

FS = 8000.0
N = 1024
BIN = FS / N


def sine(freq: float, amp: float = 1.0, n: int = N, phase: float = 0.3) -> np.ndarray:
    t = np.arange(n) / FS
    return amp * np.sin(2 * np.pi * freq * t + phase)


@pytest.mark.parametrize("freq", [50.0, 87.3, 131.0, 437.5, 1000.0, 2801.7, 3900.0])
def test_pure_sine_peaks_at_its_frequency_within_one_bin(freq: float) -> None:
    spec = spectrum(sine(freq, 2.5), FS)
    (f, a), *_ = find_peaks(spec, 3)
    assert abs(f - freq) < BIN
    assert abs(f - freq) < 0.1 * BIN  # interpolation does far better than a bin
    assert a == pytest.approx(2.5, rel=0.03)  # coherent gain corrected; scalloping (15 %) interpolated away


def test_on_bin_sine_amplitude_is_exact() -> None:
    spec = spectrum(sine(40 * BIN, 1.7), FS)
    k = int(np.argmax(spec.amplitude))
    assert k == 40
    assert spec.amplitude[k] == pytest.approx(1.7, rel=1e-9)


def test_two_tones_give_two_peaks_largest_first() -> None:
    x = sine(120.0, 1.0) + sine(1500.0, 0.25, phase=1.1)
    peaks = find_peaks(spectrum(x, FS), 2)
    assert [round(f / BIN) for f, _ in peaks] == [round(120.0 / BIN), round(1500.0 / BIN)]
    assert peaks[0][1] == pytest.approx(1.0, rel=0.03)
    assert peaks[1][1] == pytest.approx(0.25, rel=0.03)


def test_band_energies_sum_to_the_window_weighted_variance() -> None:
    rng = np.random.default_rng(3)
    x = sine(100.0, 1.0) + sine(2500.0, 0.3) + rng.normal(0, 0.1, N) + 4.0  # DC is removed
    spec = spectrum(x, FS)
    bands = band_energies(spec, band_edges_for((0, 20, 80, 200, 500, 1000, 2000), FS / 2))
    assert list(bands) == ["0-20", "20-80", "80-200", "200-500", "500-1000", "1000-2000", "2000-4000"]
    w = make_window("hann", N)
    dev = x - x.mean()
    assert sum(bands.values()) == pytest.approx(float(np.sum((w * dev) ** 2) / np.sum(w * w)), rel=1e-9)
    # Each tone's power (a^2 / 2) is in its own band.
    assert bands["80-200"] == pytest.approx(0.5, rel=0.05)
    assert bands["2000-4000"] == pytest.approx(0.045 + 0.01 * 0.5, rel=0.15)


def test_sine_power_is_amplitude_squared_over_two_and_stays_in_its_band() -> None:
    spec = spectrum(sine(300.0, 2.0), FS)
    bands = band_energies(spec, band_edges_for((0, 200, 500), FS / 2))
    assert sum(bands.values()) == pytest.approx(2.0, rel=0.01)
    assert bands["200-500"] / sum(bands.values()) > 0.999


def test_hann_window_bounds_leakage_where_rect_does_not() -> None:
    freq = 40.5 * BIN  # half-way between bins: the worst case

    def far(spec: Spectrum) -> float:
        return float(spec.amplitude[np.abs(spec.freqs - freq) > 4 * BIN].max())

    hann = spectrum(sine(freq), FS, window="hann")
    rect = spectrum(sine(freq), FS, window="rect")
    assert far(hann) / hann.amplitude.max() < 0.01  # < -40 dB beyond 4 bins
    assert far(rect) / rect.amplitude.max() > 0.05  # the rectangular window leaks much further
    # On a bin, periodic Hann leaks into exactly the two neighbouring bins.
    on = spectrum(sine(40 * BIN), FS)
    assert np.all(on.amplitude[np.abs(np.arange(len(on.amplitude)) - 40) > 1] < 1e-9)


def test_constant_signal_has_no_peaks_and_no_band_energy() -> None:
    spec = spectrum(np.full(N, 42.0), FS)
    assert find_peaks(spec, 5) == []
    assert sum(band_energies(spec, [(0.0, FS / 2)]).values()) == pytest.approx(0.0, abs=1e-20)


def test_short_window_is_zero_padded_long_window_truncated() -> None:
    settings = FilterSettings(window_size=N)
    short = channel_features(sine(500.0, 1.0, n=600), FS, settings)
    assert abs(short["peaks"][0][0] - 500.0) < BIN
    long = channel_features(sine(500.0, 1.0, n=4 * N), FS, settings)
    assert abs(long["peaks"][0][0] - 500.0) < BIN


def raw_message(**channels: object) -> dict[str, object]:
    return {"deviceID": "m1", "sequence": 3, "timestamp": 1.5, "sampleRateHz": FS, **channels}


def test_extract_builds_the_features_message_shape() -> None:
    msg = raw_message(
        current=(sine(50.0, 14.142)).tolist(),
        temperature=(np.full(N, 47.0) + np.random.default_rng(1).normal(0, 0.05, N)).tolist(),
        vibration=sine(24.5, 0.05).tolist(),
        sound=sine(100.0, 0.02).tolist(),
        fault="stall",
    )
    out = extract(msg, FilterSettings())
    assert out["deviceID"] == "m1"
    assert out["sequence"] == 3
    assert out["fault"] == "stall"
    assert out["current"] == pytest.approx(10.0, rel=0.01)  # RMS of a 14.142 A peak sine
    assert out["temperature"] == pytest.approx(47.0, abs=0.01)  # mean
    assert out["vibration"] == pytest.approx(0.05 / math.sqrt(2), rel=0.02)
    assert set(out["fft_data"]) == {"current", "temperature", "vibration", "sound"}
    current = out["fft_data"]["current"]
    assert set(current) == {"mean", "rms", "std", "crest", "kurtosis", "peaks", "bands"}
    assert len(current["peaks"]) <= 5
    assert abs(current["peaks"][0][0] - 50.0) < BIN


def test_extract_passes_scalar_channels_through_and_uses_the_fallback_device_id() -> None:
    out = extract({"temperature": 71.5, "current": 9.0}, FilterSettings(), device_id="leaf-7")
    assert out["deviceID"] == "leaf-7"
    assert out["temperature"] == 71.5
    assert out["fft_data"]["current"] == {"mean": 9.0, "rms": 9.0}
    assert "vibration" not in out


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"current": [1.0, float("nan"), 2.0]}, "current: contains a non-finite value"),
        ({"current": ["a", "b"]}, "current: expected a list of numbers"),
        ({"current": [[1.0, 2.0]]}, "current: expected a flat list"),
        ({"current": True}, "current: expected a number"),
        ({"current": [1.0]}, "current: need at least 2 samples"),
        ({"speed": [1.0, 2.0]}, "none of the channels"),
        ({"current": [1.0, 2.0], "sampleRateHz": "fast"}, "sampleRateHz"),
    ],
)
def test_extract_refuses_bad_messages_naming_the_field(message: dict[str, object], needle: str) -> None:
    with pytest.raises(FeatureError, match=needle.replace("(", r"\(")):
        extract(message, FilterSettings())


def test_settings_from_desired_and_refusals() -> None:
    desired = {"windowSize": 512, "sampleRateHz": 4000, "window": "hann", "peaks": 3, "$version": 4}
    s = FilterSettings.from_desired(desired)
    assert (s.window_size, s.sample_rate_hz, s.peaks) == (512, 4000.0, 3)
    for bad, needle in [
        ({"windowSize": 8}, "windowSize"),
        ({"window": "kaiser"}, "window"),
        ({"peaks": -1}, "peaks"),
        ({"bandEdgesHz": [10, 20]}, "bandEdgesHz"),
        ({"bandEdgesHz": [0, 20, 10]}, "bandEdgesHz"),
        ({"fftSize": 1}, "fftSize: unknown"),
    ]:
        with pytest.raises(FeatureError, match=needle):
            FilterSettings.from_desired(bad)


def test_service_keeps_settings_on_a_bad_patch_and_counts_refused_messages() -> None:
    service = FilterService()
    assert service.apply_desired({"windowSize": 512}) is None
    error = service.apply_desired({"windowSize": 512 + 0.5})
    assert error is not None
    assert "windowSize" in error
    assert service.settings.window_size == 512
    assert service.process({"current": "x"}) is None
    assert service.process(raw_message(current=sine(50.0).tolist())) is not None
    reported = service.reported()
    assert (reported["processed"], reported["rejected"]) == (1, 1)


def test_features_carry_the_source_windows_timestamp_on() -> None:
    from fft_filter.service import carried_properties

    assert carried_properties({"sourceTimestamp": "1700000000.5", "alertType": "x"}) == {
        "sourceTimestamp": "1700000000.5"
    }
    assert carried_properties({}) == {}  # a leaf device's window has none
