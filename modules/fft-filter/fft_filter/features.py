"""Spectral features of one raw sample window (pure numpy, no I/O).

Per channel: the mean is removed, a window (periodic Hann by default) applied, and a real FFT taken
(``windowSize`` points; shorter windows are zero-padded, longer ones truncated). From it:

- ``peaks``: the ``peaks`` largest local maxima of the *amplitude* spectrum as ``[frequency_hz,
  amplitude]``; amplitudes are corrected for the window's coherent gain (a sine of amplitude ``a``
  reads ``a``), and frequency and amplitude are refined by Gaussian interpolation over the three bins
  around the maximum (exact for a Gaussian-shaped main lobe, within a few percent for Hann);
- ``bands``: the power in each frequency band ``[lo, hi)`` (the last band includes Nyquist), from
  the one-sided power spectrum normalised by the window's energy, so the bands together sum to
  ``sum((w * x)^2) / sum(w^2)``, the window-weighted variance of the channel (Parseval);
- time-domain summaries: ``mean``, ``rms`` (of the signal, mean included), ``std``, ``crest``
  (max deviation / std) and ``kurtosis`` (3 for Gaussian noise; impulsive bearing faults raise it).

:func:`extract` turns a raw message (``deviceID``, per-channel arrays, ``sampleRateHz``...) into the
``features`` message, with the per-channel scalar summaries the design's message shape names
(``current`` RMS, ``temperature`` mean, ``vibration`` RMS, ``sound`` RMS) and everything else under
``fft_data``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

CHANNELS: tuple[str, ...] = ("current", "temperature", "vibration", "sound")
#: The scalar each channel is summarised by at the top level of a ``features`` message.
SUMMARY: dict[str, str] = {"current": "rms", "temperature": "mean", "vibration": "rms", "sound": "rms"}
WINDOWS: tuple[str, ...] = ("hann", "hamming", "blackman", "rect")
DEFAULT_BAND_EDGES: tuple[float, ...] = (0.0, 20.0, 80.0, 200.0, 500.0, 1000.0, 2000.0)
#: Passed through from the raw message when present.
PASSTHROUGH: tuple[str, ...] = ("sequence", "timestamp", "simTimeSecs", "fault")


class FeatureError(ValueError):
    """A raw message or a setting the filter cannot use; the text names the field."""


def make_window(name: str, n: int) -> FloatArray:
    """A periodic (DFT-even) window of ``n`` points."""
    k = np.arange(n, dtype=np.float64)
    if name == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * k / n)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * k / n)
    if name == "blackman":
        return 0.42 - 0.5 * np.cos(2 * np.pi * k / n) + 0.08 * np.cos(4 * np.pi * k / n)
    if name == "rect":
        return np.ones(n, dtype=np.float64)
    raise FeatureError(f"window: {name!r} is not one of {', '.join(WINDOWS)}")


@dataclass(frozen=True)
class Spectrum:
    """One-sided spectrum of a mean-removed, windowed signal."""

    freqs: FloatArray  # Hz, rfftfreq of the FFT length
    amplitude: FloatArray  # coherent-gain corrected: a sine of amplitude a reads a (on a bin)
    power: FloatArray  # per bin; sums to sum((w x)^2) / sum(w^2)

    @property
    def bin_hz(self) -> float:
        return float(self.freqs[1] - self.freqs[0]) if len(self.freqs) > 1 else 0.0


def spectrum(x: npt.ArrayLike, sample_rate_hz: float, *, window: str = "hann", n_fft: int | None = None) -> Spectrum:
    """Window (after removing the mean) and real-FFT ``x``; ``n_fft`` zero-pads or truncates."""
    data = np.asarray(x, dtype=np.float64)
    if n_fft is not None and len(data) > n_fft:
        data = data[:n_fft]
    n = len(data)
    if n < 2:
        raise FeatureError(f"need at least 2 samples, got {n}")
    m = n_fft or n
    w = make_window(window, n)
    xw = (data - data.mean()) * w
    spec = np.fft.rfft(xw, n=m)
    mag = np.abs(spec)
    amplitude = 2.0 * mag / w.sum()
    amplitude[0] /= 2.0
    power = 2.0 * mag**2 / (m * float(np.sum(w * w)))
    power[0] /= 2.0
    if m % 2 == 0:
        amplitude[-1] /= 2.0
        power[-1] /= 2.0
    freqs: FloatArray = np.fft.rfftfreq(m, d=1.0 / sample_rate_hz).astype(np.float64)
    return Spectrum(freqs=freqs, amplitude=amplitude, power=power)


def find_peaks(spec: Spectrum, count: int) -> list[tuple[float, float]]:
    """The ``count`` largest local maxima (DC excluded), largest first, as ``(frequency, amplitude)``,
    refined by Gaussian (log-parabolic) interpolation."""
    a = spec.amplitude
    if count <= 0 or len(a) < 3:
        return []
    inner = a[1:-1]
    is_peak = (inner > a[:-2]) & (inner >= a[2:]) & (inner > 0)
    idx = np.nonzero(is_peak)[0] + 1
    if len(idx) == 0:
        return []
    top = idx[np.argsort(a[idx])[::-1][:count]]
    df = spec.bin_hz
    floor = float(a.max()) * 1e-12 + 1e-300
    peaks: list[tuple[float, float]] = []
    for k in top:
        alpha, beta, gamma = (math.log(max(float(v), floor)) for v in (a[k - 1], a[k], a[k + 1]))
        denom = alpha - 2 * beta + gamma
        p = 0.5 * (alpha - gamma) / denom if denom < 0 else 0.0
        p = max(-0.5, min(0.5, p))
        mag = math.exp(beta - 0.25 * (alpha - gamma) * p)
        peaks.append(((int(k) + p) * df, mag))
    return peaks


def band_edges_for(edges: Sequence[float], nyquist: float) -> list[tuple[float, float]]:
    """Contiguous bands from ``edges`` up to Nyquist (edges at or above Nyquist are dropped)."""
    lows = [e for e in edges if e < nyquist]
    return [(lo, hi) for lo, hi in zip(lows, [*lows[1:], nyquist], strict=True)]


def band_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def band_energies(spec: Spectrum, bands: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Power per band ``[lo, hi)``; a band ending at Nyquist includes the Nyquist bin."""
    nyquist = float(spec.freqs[-1])
    out: dict[str, float] = {}
    for lo, hi in bands:
        upper = spec.freqs <= hi if hi >= nyquist else spec.freqs < hi
        out[band_name(lo, hi)] = float(spec.power[(spec.freqs >= lo) & upper].sum())
    return out


def time_summaries(x: npt.ArrayLike) -> dict[str, float]:
    data = np.asarray(x, dtype=np.float64)
    mean = float(data.mean())
    dev = data - mean
    std = float(np.sqrt(np.mean(dev * dev)))
    rms = float(np.sqrt(np.mean(data * data)))
    crest = float(np.max(np.abs(dev)) / std) if std > 0 else 0.0
    kurtosis = float(np.mean(dev**4) / std**4) if std > 0 else 0.0
    return {"mean": mean, "rms": rms, "std": std, "crest": crest, "kurtosis": kurtosis}


@dataclass(frozen=True)
class FilterSettings:
    """Desired properties: ``windowSize``, ``sampleRateHz`` (used when a message has none), ``window``,
    ``peaks`` (how many per channel), ``bandEdgesHz`` (lower edges; the last band ends at Nyquist)."""

    window_size: int = 1024
    sample_rate_hz: float = 8000.0
    window: str = "hann"
    peaks: int = 5
    band_edges_hz: tuple[float, ...] = DEFAULT_BAND_EDGES

    @classmethod
    def from_desired(cls, desired: Mapping[str, Any], base: FilterSettings | None = None) -> FilterSettings:
        cur = base or cls()
        keys = {"windowSize", "sampleRateHz", "window", "peaks", "bandEdgesHz"}
        unknown = sorted(k for k in desired if k not in keys and not k.startswith("$"))
        if unknown:
            raise FeatureError(f"{unknown[0]}: unknown desired property (known: {', '.join(sorted(keys))})")
        size = desired.get("windowSize", cur.window_size)
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 65_536:
            raise FeatureError(f"windowSize: expected an integer in [16, 65536], got {size!r}")
        rate = desired.get("sampleRateHz", cur.sample_rate_hz)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 1e6:
            raise FeatureError(f"sampleRateHz: expected a number in [1, 1e6], got {rate!r}")
        window = desired.get("window", cur.window)
        if window not in WINDOWS:
            raise FeatureError(f"window: {window!r} is not one of {', '.join(WINDOWS)}")
        peaks = desired.get("peaks", cur.peaks)
        if isinstance(peaks, bool) or not isinstance(peaks, int) or not 0 <= peaks <= 64:
            raise FeatureError(f"peaks: expected an integer in [0, 64], got {peaks!r}")
        edges = desired.get("bandEdgesHz", list(cur.band_edges_hz))
        if (
            not isinstance(edges, list)
            or not edges
            or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges)
            or edges[0] != 0
            or any(b <= a for a, b in itertools.pairwise(edges))
        ):
            raise FeatureError(f"bandEdgesHz: expected increasing numbers starting at 0, got {edges!r}")
        return cls(
            window_size=size,
            sample_rate_hz=float(rate),
            window=str(window),
            peaks=peaks,
            band_edges_hz=tuple(float(e) for e in edges),
        )


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def channel_features(x: npt.ArrayLike, sample_rate_hz: float, settings: FilterSettings) -> dict[str, Any]:
    """Time summaries, peaks and band energies of one channel's window."""
    data = np.asarray(x, dtype=np.float64)[: settings.window_size]
    spec = spectrum(data, sample_rate_hz, window=settings.window, n_fft=settings.window_size)
    bands = band_energies(spec, band_edges_for(settings.band_edges_hz, sample_rate_hz / 2))
    out: dict[str, Any] = {k: _sig(v) for k, v in time_summaries(data).items()}
    out["peaks"] = [[_sig(f), _sig(a)] for f, a in find_peaks(spec, settings.peaks)]
    out["bands"] = {k: _sig(v) for k, v in bands.items()}
    return out


def _samples(value: Any, where: str) -> FloatArray | float:
    if isinstance(value, bool):
        raise FeatureError(f"{where}: expected a number or a list of numbers, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise FeatureError(f"{where}: not a finite number")
        return float(value)
    if not isinstance(value, list) or not value:
        raise FeatureError(f"{where}: expected a number or a non-empty list of numbers")
    try:
        data = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FeatureError(f"{where}: expected a list of numbers ({exc})") from None
    if data.ndim != 1:
        raise FeatureError(f"{where}: expected a flat list of numbers")
    if not np.all(np.isfinite(data)):
        raise FeatureError(f"{where}: contains a non-finite value")
    return data


def extract(raw: Mapping[str, Any], settings: FilterSettings, *, device_id: str | None = None) -> dict[str, Any]:
    """The ``features`` message for one ``raw`` message.

    A channel may be an array (full features) or a single number (a leaf device's own summary, passed
    through as that channel's scalar with ``{"mean": v, "rms": |v|}``); absent channels are omitted.
    ``deviceID`` falls back to ``device_id`` (e.g. the hub's connectionDeviceId for a leaf device)."""
    if not isinstance(raw, Mapping):
        raise FeatureError("message: expected a JSON object")
    rate = raw.get("sampleRateHz", settings.sample_rate_hz)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 1e6:
        raise FeatureError(f"sampleRateHz: expected a number in [1, 1e6], got {rate!r}")
    present = [c for c in CHANNELS if c in raw]
    if not present:
        raise FeatureError(f"message: none of the channels {', '.join(CHANNELS)} is present")
    out: dict[str, Any] = {
        "deviceID": raw.get("deviceID") or device_id or "unknown",
        "sampleRateHz": rate,
        "windowSize": settings.window_size,
        "window": settings.window,
        "binHz": _sig(float(rate) / settings.window_size),
    }
    for key in PASSTHROUGH:
        if key in raw:
            out[key] = raw[key]
    fft_data: dict[str, Any] = {}
    for channel in present:
        samples = _samples(raw[channel], channel)
        if isinstance(samples, float):
            fft_data[channel] = {"mean": samples, "rms": abs(samples)}
        elif len(samples) < 2:
            raise FeatureError(f"{channel}: need at least 2 samples, got {len(samples)}")
        else:
            fft_data[channel] = channel_features(samples, float(rate), settings)
        out[channel] = fft_data[channel][SUMMARY[channel]]
    out["fft_data"] = fft_data
    return out
