"""Write ``features.json``: raw windows and the gateway fft-filter's features of them.

The firmware's GoogleTest suite checks its C++ features against this file, so the node and the
gateway agree by test. Run from the repository root after changing either side::

    .venv/bin/python firmware/test-vectors/generate.py

Cases: pure tones (bin-centred and between bins), a DC offset with noise, and one window of each
motor state from the motor-sensor simulator (healthy, bearing wear, stall).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _module in ("fft-filter", "motor-sensor"):
    sys.path.insert(0, str(REPO / "modules" / _module))

from fft_filter.features import FilterSettings, extract  # noqa: E402
from motor_sensor.simulator import Fault, MotorSimulator, SensorSettings  # noqa: E402

FS = 8000
N = 1024
CHANNELS = ("current", "temperature", "vibration", "sound")
#: Agreement the C++ side must reach (float32 FFT against numpy's float64): relative, with an
#: absolute floor for values near zero, and for peak frequencies in Hz. A peak whose amplitude is
#: below ``peakFloor`` times the strongest one's (80 dB down: float32 rounding noise) is held to
#: half a bin in frequency and to that floor in amplitude.
TOLERANCE = {"relative": 2e-3, "absolute": 1e-6, "peakHz": 0.05, "peakFloor": 1e-4}


def synthetic() -> dict[str, list[float]]:
    rng = np.random.default_rng(20240601)
    t = np.arange(N) / FS
    return {
        "current": (10 * np.sin(2 * np.pi * 50 * t + 0.3) + 0.5 * np.sin(2 * np.pi * 250 * t)).tolist(),
        "temperature": (42.5 + 0.05 * rng.standard_normal(N)).tolist(),
        "vibration": (0.2 * np.sin(2 * np.pi * 117.3 * t) + 0.01 * rng.standard_normal(N)).tolist(),
        "sound": (0.02 * np.sin(2 * np.pi * 3000 * t) + 0.005 * rng.standard_normal(N)).tolist(),
    }


def motor(fault: str | None, seed: int) -> dict[str, list[float]]:
    faults = (Fault(type=fault, start_secs=0.0, severity=1.0),) if fault else ()
    sim = MotorSimulator(SensorSettings(sample_rate_hz=FS, window_size=N, seed=seed, faults=faults))
    window = sim.next_window()
    return {c: [float(v) for v in window.channels[c]] for c in CHANNELS}


def case(name: str, raw: dict[str, list[float]]) -> dict[str, Any]:
    # Six significant digits (the node reads them as float32, fft-filter as float64: a difference of
    # ~1e-7 relative, far inside the tolerance).
    samples = {c: [float(f"{v:.6g}") for v in raw[c]] for c in CHANNELS}
    features = extract({**samples, "sampleRateHz": FS}, FilterSettings(window_size=N, sample_rate_hz=FS))
    return {"name": name, "sampleRateHz": FS, "samples": samples, "features": features["fft_data"]}


def main() -> None:
    cases = [case("synthetic", synthetic())]
    for i, fault in enumerate((None, "bearing_wear", "stall")):
        cases.append(case(f"motor-{fault or 'healthy'}", motor(fault, seed=11 + i)))
    doc = {
        "generatedBy": "firmware/test-vectors/generate.py from modules/fft-filter (fft_filter.features.extract)",
        "windowSize": N,
        "window": "hann",
        "tolerance": TOLERANCE,
        "cases": cases,
    }
    out = HERE / "features.json"
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
