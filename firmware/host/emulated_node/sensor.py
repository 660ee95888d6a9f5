"""The node's sensors on the host: the reference app's motor simulator, or a recorded file.

The synthetic motor is ``modules/motor-sensor``'s deterministic simulator (the gateway's own sensor
module), so the node sees the same physics and faults the gateway's pipeline was trained on. A
recording is a JSON-lines file of motor-sensor ``raw`` messages (one window per line), replayed in
a loop.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from emulated_node.core import CHANNELS, WINDOW

_MOTOR_SENSOR = Path(__file__).resolve().parents[3] / "modules" / "motor-sensor"
if str(_MOTOR_SENSOR) not in sys.path:
    sys.path.insert(0, str(_MOTOR_SENSOR))

from motor_sensor.simulator import Fault, MotorSimulator, SensorSettings  # noqa: E402

Window = dict[str, npt.NDArray[np.float64]]


class SensorError(ValueError):
    """A recording the node cannot replay; the text names the line and field."""


class Sensor(Protocol):
    def next_window(self) -> Window: ...


class SyntheticMotor:
    """The motor simulator at the node's rate and window; faults can be injected while it runs."""

    def __init__(self, *, seed: int = 7, rate_hz: int = 8000, windows_per_second: float = 2.0) -> None:
        self.settings = SensorSettings(
            sample_rate_hz=rate_hz, window_size=WINDOW, windows_per_second=windows_per_second, seed=seed
        )
        self.simulator = MotorSimulator(self.settings)

    def inject(self, fault: str | None, *, severity: float = 1.0) -> None:
        """Start ``fault`` now (``None``: healthy again)."""
        faults: Sequence[Fault] = () if fault is None else (Fault(type=fault, start_secs=0.0, severity=severity),)
        self.simulator.set_faults(faults)

    def next_window(self) -> Window:
        window = self.simulator.next_window()
        return {c: np.asarray(window.channels[c], dtype=np.float64) for c in CHANNELS}


class Recording:
    """Windows from a JSON-lines file of raw messages, replayed in a loop."""

    def __init__(self, path: Path) -> None:
        self.windows: list[Window] = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SensorError(f"{path}:{number}: not JSON ({exc.msg})") from None
            self.windows.append(self._window(raw, f"{path}:{number}"))
        if not self.windows:
            raise SensorError(f"{path}: no windows")
        self._next = 0

    @staticmethod
    def _window(raw: Any, where: str) -> Window:
        if not isinstance(raw, dict):
            raise SensorError(f"{where}: expected a JSON object")
        out: Window = {}
        for channel in CHANNELS:
            values = raw.get(channel)
            if not isinstance(values, list) or len(values) < WINDOW:
                raise SensorError(f"{where}: {channel}: expected a list of at least {WINDOW} numbers")
            data = np.asarray(values[:WINDOW], dtype=np.float64)
            if not np.all(np.isfinite(data)):
                raise SensorError(f"{where}: {channel}: contains a non-finite value")
            out[channel] = data
        return out

    def next_window(self) -> Window:
        window = self.windows[self._next]
        self._next = (self._next + 1) % len(self.windows)
        return window
