"""fft-filter: windowed rFFT features (peaks, band energies, summaries) of raw sample windows."""

from fft_filter.features import (
    CHANNELS,
    FeatureError,
    FilterSettings,
    Spectrum,
    band_energies,
    extract,
    find_peaks,
    spectrum,
)

__all__ = [
    "CHANNELS",
    "FeatureError",
    "FilterSettings",
    "Spectrum",
    "band_energies",
    "extract",
    "find_peaks",
    "spectrum",
]
